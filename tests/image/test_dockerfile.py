"""``modelcrate dockerfile``: the Dockerfile's shape, the build context, the GPU variant, and a
real ``podman build`` + ``podman run`` of what it writes.

Base images cannot be pulled here, so the real build uses ``--base`` with the offline Debian
base (mmdebstrap, cached once per machine by :func:`tests.image.e2e_env.ensure_base_layout`)
plus ``python3-pip``/``python3-venv``; pip inside the build reaches the package index through
the host's CA bundle (mounted read-only, ``PIP_CERT``), as ``../shared/CONTAINERS.md`` says.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

import modelcrate
from modelcrate.crate.errors import IntegrityError
from modelcrate.crate.layout import SBOM_FILE, verify_crate
from modelcrate.crate.locked import parse_lock
from modelcrate.crate.manifest import load_manifest
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from modelcrate.image.dockerfile import (
    MARKER,
    DockerContext,
    default_base,
    render_dockerfile,
    write_dockerfile,
)
from tests.crate.helpers import hand_crate, iris_onnx_bytes, manifest_for
from tests.image.e2e_env import (
    BASE_PACKAGES,
    BASE_TAG,
    IRIS_CLASSES,
    IrisCrate,
    Podman,
    ensure_base_layout,
    free_port,
    run,
    unique,
    wait_ready,
)

PIP_BASE_PACKAGES = (*BASE_PACKAGES, "python3-pip", "python3-venv")
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
INSTRUCTION_RE = re.compile(r"^([A-Z]+)\s+(.*)$")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        m = INSTRUCTION_RE.match(pending + line)
        assert m, f"not an instruction: {pending + line!r}"
        out.append((m[1], " ".join(m[2].split())))
        pending = ""
    return out


@pytest.fixture
def crate(tmp_path: Path) -> Path:
    """A small valid crate (hand-assembled, stand-in lock) in its own store."""
    return hand_crate(Store(tmp_path / "store"), "iris", iris_onnx_bytes()).record.path


# --------------------------------------------------------------------------- the Dockerfile


def test_dockerfile_shape() -> None:
    manifest = manifest_for("iris", b"model")
    text = render_dockerfile(manifest, base="python:3.11-slim")
    assert text == render_dockerfile(manifest, base="python:3.11-slim")  # pure
    steps = instructions(text)
    kinds = [k for k, _ in steps]
    froms = [a for k, a in steps if k == "FROM"]
    assert froms == ["${BASE} AS builder", "${BASE}"]  # multi-stage, one base
    assert ("ARG", "BASE=python:3.11-slim") in steps
    install = next(a for k, a in steps if k == "RUN" and "pip install" in a)
    for flag in ("--no-cache-dir", "--require-hashes", "--only-binary=:all:", "--no-deps"):
        assert flag in install
    assert "-r /tmp/requirements.lock" in install
    assert "--target /opt/modelcrate/site-packages" in install
    final = steps[kinds.index("FROM", kinds.index("FROM") + 1) :]
    copies = [a for k, a in final if k == "COPY"]
    assert copies[0] == "--from=builder /opt/modelcrate/site-packages /opt/modelcrate/site-packages"
    assert copies[1] == "crate/model /opt/modelcrate/crate/model"  # the model in its own layer
    assert copies[2].startswith("crate/crate.yaml crate/requirements.lock crate/sbom.cdx.json")
    assert copies[3] == "app/modelcrate /opt/modelcrate/app/modelcrate"  # code last
    assert not [k for k, _ in final if k == "RUN"]  # the final stage runs nothing
    assert ("USER", "10001:10001") in final
    assert ("EXPOSE", "8080") in final
    entry = json.loads(next(a for k, a in final if k == "ENTRYPOINT"))  # exec form: JSON
    assert entry == ["python3.11", "-m", "modelcrate", "serve", "/opt/modelcrate/crate"]
    assert json.loads(next(a for k, a in final if k == "CMD")) == [
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]
    health = next(a for k, a in final if k == "HEALTHCHECK")
    probe = json.loads(health.split(" CMD ", 1)[1])
    assert probe[:2] == ["python3.11", "-c"]
    assert "/readyz" in probe[2]
    labels = next(a for k, a in final if k == "LABEL")
    assert f'io.modelcrate.crate.version="{manifest.version}"' in labels
    assert f'io.modelcrate.lock.sha256="{manifest.lock_sha256}"' in labels
    assert kinds.index("LABEL") > max(i for i, k in enumerate(kinds) if k == "COPY")


def test_default_bases() -> None:
    assert default_base("3.11") == "python:3.11-slim"
    assert default_base("3.12") == "python:3.12-slim"
    assert default_base("3.11", gpu=True).startswith("nvidia/cuda:12.")
    assert "cudnn-runtime-ubuntu22.04" in default_base("3.11", gpu=True)
    with pytest.raises(InputError, match=r"no default CUDA base for Python 3\.9"):
        default_base("3.9", gpu=True)


def test_context_holds_the_verified_crate_and_the_runtime(
    crate: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ctx"
    steps: list[str] = []
    ctx = write_dockerfile(crate, out, progress=steps.append)
    assert steps[0] == "verify the crate"
    assert isinstance(ctx, DockerContext)
    assert ctx.base == "python:3.11-slim"
    assert not ctx.gpu
    assert ctx.python == "python3.11"
    assert ctx.tag == f"iris:{ctx.version.removeprefix('sha256:')[:12]}"
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert list(ctx.files) == on_disk
    assert {"Dockerfile", ".dockerignore", MARKER, "app/modelcrate/__main__.py"} <= set(on_disk)
    assert not [f for f in on_disk if "__pycache__" in f or f.endswith(".pyc")]
    for name in ("crate.yaml", "requirements.lock", SBOM_FILE, "scan.json", "signature.json"):
        assert (out / "crate" / name).read_bytes() == (crate / name).read_bytes()
    verify_crate(out / "crate")  # what the image serves is a valid crate
    src = Path(modelcrate.__file__).parent
    assert (out / "app/modelcrate/cli/__init__.py").read_bytes() == (
        src / "cli/__init__.py"
    ).read_bytes()
    for path in [out, *out.rglob("*")]:  # normalised for reproducible COPY layers
        st = path.lstat()
        assert stat.S_IMODE(st.st_mode) == (0o755 if path.is_dir() else 0o644), path
        assert st.st_mtime == 0, path
    assert ctx.dockerfile.read_text() == render_dockerfile(
        load_manifest(crate), base="python:3.11-slim"
    )
    # Same inputs, same context, byte for byte (a rerun replaces the folder it wrote).
    before = _tree(out)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    again = write_dockerfile(crate, out)
    assert again.files == ctx.files
    assert _tree(out) == before


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_rerun_replaces_only_a_context_it_wrote(crate: Path, tmp_path: Path) -> None:
    out = tmp_path / "ctx"
    write_dockerfile(crate, out)
    (out / "stray.txt").write_text("left from before")
    write_dockerfile(crate, out)
    assert not (out / "stray.txt").exists()  # the old context was swapped out whole
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ctx.")]  # no temp left
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "main.py").write_text("print('mine')")
    with pytest.raises(InputError, match="not empty and was not written by modelcrate"):
        write_dockerfile(crate, foreign)
    assert [p.name for p in foreign.iterdir()] == ["main.py"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_dockerfile(crate, tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_dockerfile(crate, empty).dockerfile.is_file()


def test_a_tampered_crate_writes_nothing(crate: Path, tmp_path: Path) -> None:
    model = crate / "model" / "model.onnx"
    model.chmod(0o644)
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    out = tmp_path / "ctx"
    with pytest.raises(IntegrityError, match="does not match the sha256"):
        write_dockerfile(crate, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ctx.")]


def test_a_crate_without_sbom_gets_one_in_the_context(crate: Path, tmp_path: Path) -> None:
    expected = (crate / SBOM_FILE).read_bytes()
    (crate / SBOM_FILE).unlink()
    out = tmp_path / "ctx"
    write_dockerfile(crate, out)
    assert (out / "crate" / SBOM_FILE).read_bytes() == expected


@pytest.mark.parametrize("base", ["python:3.11-slim\nRUN rm -rf /", "-x", "a b", "x" * 300])
def test_a_bad_base_reference_is_refused(crate: Path, tmp_path: Path, base: str) -> None:
    with pytest.raises(InputError, match="not an image reference"):
        write_dockerfile(crate, tmp_path / "ctx", base=base)
    assert not (tmp_path / "ctx").exists()


# --------------------------------------------------------------------------- the GPU variant


def test_gpu_variant(iris_crate: IrisCrate, tmp_path: Path) -> None:
    """CUDA runtime base, Python from the distribution, onnxruntime-gpu in the lock (resolved
    with hashes, the crate's other pins kept), cached for the next run."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    cache = tmp_path / "locks"
    ctx = write_dockerfile(iris_crate.crate_dir, tmp_path / "gpu", gpu=True, lock_cache=cache)
    assert ctx.gpu
    assert ctx.base == default_base("3.11", gpu=True)
    text = ctx.dockerfile.read_text()
    steps = instructions(text)
    froms = [a for k, a in steps if k == "FROM"]
    assert froms == ["${BASE} AS python", "python AS builder", "python"]
    runs = " ".join(a for k, a in steps if k == "RUN")
    assert "apt-get install -y --no-install-recommends python3.11" in runs
    assert "python3.11 -m venv /opt/pip" in runs
    assert "/opt/pip/bin/python -m pip install" in runs
    assert "--require-hashes" in runs
    assert ("COPY", "gpu/requirements.lock /tmp/requirements.lock") in steps
    assert ("USER", "10001:10001") in steps
    assert ctx.changes[0].startswith("onnxruntime==")
    assert " -> onnxruntime-gpu==" in ctx.changes[0]
    assert f"#   {ctx.changes[0]}" in text  # the Dockerfile says what the lock step changed
    crate_lock = parse_lock((iris_crate.crate_dir / "requirements.lock").read_bytes())
    gpu_bytes = (ctx.path / "gpu" / "requirements.lock").read_bytes()
    gpu_lock = {p.key: p for p in parse_lock(gpu_bytes)}
    assert "onnxruntime" not in gpu_lock
    assert gpu_lock["onnxruntime-gpu"].hashes
    for p in crate_lock:  # every other pin is kept, same version, same hashes
        if p.key != "onnxruntime" and p.key in gpu_lock:
            assert (gpu_lock[p.key].version, gpu_lock[p.key].hashes) == (p.version, p.hashes)
    assert hashlib.sha256(gpu_bytes).hexdigest() == ctx.lock_sha256
    assert f'io.modelcrate.lock.sha256="{ctx.lock_sha256}"' in text
    sbom = (ctx.path / "gpu" / SBOM_FILE).read_bytes()
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(sbom.decode()) is None
    purls = {c.get("purl") for c in json.loads(sbom)["components"]}
    assert f"pkg:pypi/onnxruntime-gpu@{gpu_lock['onnxruntime-gpu'].version}" in purls
    # The crate itself is untouched in the context: it still verifies with its own lock.
    verify_crate(ctx.path / "crate")
    # Second run: the GPU lock comes from the cache, same bytes.
    assert len(list(cache.iterdir())) == 1
    again = write_dockerfile(iris_crate.crate_dir, tmp_path / "gpu2", gpu=True, lock_cache=cache)
    assert (again.path / "gpu" / "requirements.lock").read_bytes() == gpu_bytes


def test_gpu_needs_onnxruntime_in_the_lock(crate: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no onnxruntime"):
        write_dockerfile(crate, tmp_path / "ctx", gpu=True)  # the stand-in lock pins numpy only
    assert not (tmp_path / "ctx").exists()


# --------------------------------------------------------------------------- the CLI


def test_cli(crate: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from modelcrate import cli

    store = str(crate.parent.parent)
    rc = cli.main(["dockerfile", "iris", str(tmp_path / "ctx"), "--store", store])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Wrote" in out
    assert "docker build -t iris:" in out
    assert "python:3.11-slim" in out
    assert (tmp_path / "ctx" / "Dockerfile").is_file()
    rc = cli.main(["dockerfile", str(crate), str(tmp_path / "ctx2"), "--base", "debian:12"])
    assert rc == 0
    assert "ARG BASE=debian:12" in (tmp_path / "ctx2" / "Dockerfile").read_text()
    rc = cli.main(["dockerfile", "nope", str(tmp_path / "ctx3"), "--store", store])
    err = capsys.readouterr().err
    assert rc == 2
    assert "nope" in err


# --------------------------------------------------------------------------- podman build + run


@dataclass(frozen=True)
class Built:
    tag: str
    context: Path
    seconds: float
    layers: list[str]
    base_layers: int


@pytest.fixture(scope="session")
def pip_base(container_tools: None, podman: Podman) -> str:
    """The offline Debian base plus pip, in podman's storage (built once per machine)."""
    layout = ensure_base_layout(PIP_BASE_PACKAGES)
    ref = f"localhost/modelcrate-test-pybase-pip:{layout.key}"
    podman.images.append(ref)
    run(["skopeo", "copy", f"oci:{layout.path}:{BASE_TAG}", f"containers-storage:{ref}"])
    return ref


def podman_build(podman: Podman, context: Path, tag: str) -> tuple[float, list[str]]:
    """``podman build`` of ``context`` (Docker format keeps HEALTHCHECK); layer diff ids."""
    mount = ["-v", f"{HOST_CA}:{HOST_CA}:ro"] if os.path.isfile(HOST_CA) else []
    args = ["--build-arg", f"PIP_CERT={HOST_CA}"] if mount else []
    start = time.monotonic()
    proc = podman(
        "build", "--format", "docker", "--pull=never", "-t", tag, *mount, *args, str(context),
        timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - start
    # The build's intermediate images (cached stages) go when the session ends.
    ids = re.findall(r"^--> (?:Using cache )?([0-9a-f]{11,64})\s*$", proc.stdout, re.M)
    podman.images[:0] = ids
    podman.images.append(tag)
    inspect = podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag).stdout
    return seconds, json.loads(inspect)


@pytest.fixture(scope="module")
def built(
    pip_base: str, podman: Podman, iris_crate: IrisCrate, tmp_path_factory: pytest.TempPathFactory
) -> Built:
    context = tmp_path_factory.mktemp("docker") / "ctx"
    write_dockerfile(iris_crate.crate_dir, context, base=pip_base)
    tag = f"localhost/{unique('mc-dockerfile')}:test"
    seconds, layers = podman_build(podman, context, tag)
    base = podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", pip_base).stdout
    print(f"\npodman build of the Dockerfile (cold pip): {seconds:.1f}s")
    return Built(tag, context, seconds, layers, len(json.loads(base)))


@dataclass(frozen=True)
class Running:
    name: str
    url: str


@pytest.fixture(scope="module")
def running(built: Built, podman: Podman) -> Iterator[Running]:
    name = unique("mc-dockerfile-run")
    port = free_port()
    podman.run_detached(built.tag, name=name, ports={port: 8080})

    def alive() -> str | None:
        return None if podman.state(name).get("Running") else podman.logs(name)[-2000:]

    url = f"http://127.0.0.1:{port}"
    wait_ready(url, timeout=90, alive=alive)
    yield Running(name, url)
    podman("rm", "--force", "--time", "0", name, check=False, timeout=60)


@pytest.mark.slow
def test_podman_build_layers_and_config(
    built: Built, podman: Podman, iris_crate: IrisCrate
) -> None:
    # base, then dependencies, model, crate files, runtime: four layers of ours
    assert len(built.layers) == built.base_layers + 4
    fmt = "{{json .Config}}"
    config = json.loads(podman("image", "inspect", "--format", fmt, built.tag).stdout)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == [
        "python3.11",
        "-m",
        "modelcrate",
        "serve",
        "/opt/modelcrate/crate",
    ]
    assert config["Cmd"] == ["--host", "0.0.0.0", "--port", "8080"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Labels"]["io.modelcrate.crate.name"] == iris_crate.name
    health = json.loads(
        podman("image", "inspect", "--format", "{{json .HealthCheck}}", built.tag).stdout
    )
    assert health["Test"][0] == "CMD"
    assert "/readyz" in health["Test"][-1]


@pytest.mark.slow
def test_podman_run_predicts_like_the_model(
    running: Running, podman: Podman, iris_crate: IrisCrate
) -> None:
    rows = iris_crate.frame.iloc[::10]
    records = [{k: float(v) for k, v in row.items()} for row in rows.to_dict("records")]
    answer = httpx.post(running.url + "/predict", json=records, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [p["label"] for p in body] == list(iris_crate.model.predict(rows))
    probs = np.array([[p["probabilities"][c] for c in IRIS_CLASSES] for p in body])
    np.testing.assert_allclose(probs, iris_crate.model.predict_proba(rows), atol=1e-5)
    # Non-root, the files read-only to it, the SBOM in place, the health check passing.
    assert podman("exec", running.name, "id", "-u").stdout.strip() == "10001"
    listing = podman(
        "exec", running.name, "stat", "-c", "%u %a %n",
        "/opt/modelcrate/crate/sbom.cdx.json", "/opt/modelcrate/crate/model/model.onnx",
        "/opt/modelcrate/app/modelcrate/__main__.py",
    ).stdout.split("\n")  # fmt: skip
    assert [line.split()[:2] for line in listing if line] == [["0", "644"]] * 3
    sbom = podman("exec", running.name, "cat", "/opt/modelcrate/crate/sbom.cdx.json").stdout
    assert sbom.encode() == (iris_crate.crate_dir / SBOM_FILE).read_bytes()
    health = podman("healthcheck", "run", running.name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr


@pytest.mark.slow
def test_sigterm_stops_the_container_cleanly(running: Running, podman: Podman) -> None:
    start = time.monotonic()
    podman("stop", "--time", "20", running.name, timeout=60)
    elapsed = time.monotonic() - start
    state = podman.state(running.name)
    assert state["ExitCode"] == 0, podman.logs(running.name)[-2000:]
    assert elapsed < 15  # stopped on SIGTERM, not killed after the grace period


@pytest.mark.slow
def test_a_code_only_change_rebuilds_only_the_last_layer(
    built: Built, pip_base: str, podman: Podman, iris_crate: IrisCrate, tmp_path: Path
) -> None:
    source = tmp_path / "modelcrate"
    shutil.copytree(
        Path(modelcrate.__file__).parent, source, ignore=shutil.ignore_patterns("__pycache__")
    )
    with open(source / "cli" / "render.py", "a") as fh:
        fh.write("\n# a code-only change\n")
    write_dockerfile(iris_crate.crate_dir, built.context, base=pip_base, app_source=source)
    tag = f"localhost/{unique('mc-dockerfile')}:code"
    seconds, layers = podman_build(podman, built.context, tag)
    print(f"\npodman build after a code-only change: {seconds:.1f}s (cold: {built.seconds:.1f}s)")
    keep = built.base_layers + 3  # base, dependencies, model, crate files
    assert layers[:keep] == built.layers[:keep]
    assert layers[keep] != built.layers[keep]
    assert len(layers) == len(built.layers)
    assert seconds < max(30.0, built.seconds / 2)  # the pip stage came from the cache


def test_gpu_lock_of_an_unreadable_lock_is_an_input_error() -> None:
    from modelcrate.image.gpu_lock import gpu_lock

    with pytest.raises(InputError, match="cannot be read"):
        gpu_lock(b"onnxruntime>=1\n", python="3.11", cache_dir=None)
