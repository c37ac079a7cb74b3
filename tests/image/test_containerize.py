"""containerize end to end on a synthetic base: outputs, reproducibility, layer reuse, errors,
a real registry (push, skip, pull back, refusal) and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from modelcrate.image.assemble import default_app_source
from modelcrate.image.containerize import ImageResult, containerize
from modelcrate.image.layout import read_oci_archive, read_oci_layout
from modelcrate.image.wheels import wheel_layer
from tests.image.assembly_helpers import (
    crate_with_lock,
    debian_like_base,
    offline_pip,
    python_files,
    wheelhouse,
    write_base,
)
from tests.image.registry_fixture import RunningRegistry, running_registry

Build = Callable[..., ImageResult]


@pytest.fixture(scope="module")
def house(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, Path]:
    """The wheelhouse and its lock, and an image cache whose wheels layer pip built once."""
    root = tmp_path_factory.mktemp("house")
    folder, lock = wheelhouse(root / "wheels")
    (root / "requirements.lock").write_bytes(lock)
    cache = root / "image-cache"
    wheel_layer(
        root / "requirements.lock",
        python_version="3.11",
        cache_dir=cache,
        pip_args=offline_pip(folder),
    )
    return folder, lock, cache


@pytest.fixture(scope="module")
def app_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A snapshot of the modelcrate source: the image is built from the same code each time."""
    source = tmp_path_factory.mktemp("app") / "modelcrate"
    shutil.copytree(default_app_source(), source, ignore=shutil.ignore_patterns("__pycache__"))
    return source


@pytest.fixture
def env(tmp_path: Path, house: tuple[Path, bytes, Path], app_source: Path) -> dict[str, object]:
    """A store with crate ``iris`` (locked to the wheelhouse, its wheels layer already cached,
    as after a first build) and a Debian-like base layout."""
    folder, lock, cache = house
    store = Store(tmp_path / "store")
    crate_with_lock(store, "iris", lock)
    shutil.copytree(cache, store.root / "image-cache")
    return {
        "house": folder,
        "lock": lock,
        "store": store,
        "base": debian_like_base(tmp_path / "base"),
        "app_source": app_source,
    }


@pytest.fixture
def build(env: dict[str, object]) -> Build:
    def run(crate: str = "iris", **kwargs: object) -> ImageResult:
        options: dict[str, object] = {
            "base": env["base"],
            "store": env["store"],
            "pip_args": offline_pip(env["house"]),  # type: ignore[arg-type]
            "app_source": env["app_source"],
        }
        options.update(kwargs)
        return containerize(crate, **options)  # type: ignore[arg-type]

    return run


def _changed_source(tmp_path: Path, original: object) -> Path:
    source = tmp_path / "src-edit" / "modelcrate"
    shutil.copytree(str(original), source)
    app = source / "serve" / "app.py"
    app.write_text(app.read_text() + "\n# a code-only change\n")
    return source


def test_layout_output(tmp_path: Path, build: Build) -> None:
    steps: list[str] = []
    result = build(output=f"oci:{tmp_path / 'out'}", progress=steps.append)
    assert steps == ["crate", "base", "wheels", "libraries", "model", "app", "config", "write"]
    assert [s for s, _ in result.steps] == steps
    assert [layer.role for layer in result.layers] == ["base", "base", "wheels", "model", "app"]
    assert result.crate.startswith("iris:")
    assert (result.python, result.python_version) == ("/usr/bin/python3.11", "3.11")
    assert result.added_size == sum(layer.size for layer in result.layers[2:])
    short = result.crate.split(":")[1]
    assert result.written == (f"oci:{tmp_path / 'out'}:{short}",)
    back = read_oci_layout(tmp_path / "out", short)
    assert back.digest == result.digest
    assert back.config["config"]["User"] == "10001:10001"
    assert result.wheels_cached


def test_archive_output_loads_back_with_its_name(tmp_path: Path, build: Build) -> None:
    result = build(output=f"oci-archive:{tmp_path / 'img.tar'}")
    short = result.crate.split(":")[1]
    assert result.written == (f"oci-archive:{tmp_path / 'img.tar'}:modelcrate/iris:{short}",)
    assert (
        read_oci_archive(tmp_path / "img.tar", f"modelcrate/iris:{short}").digest == result.digest
    )
    with tarfile.open(tmp_path / "img.tar") as tar:
        docker = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert docker[0]["RepoTags"] == [f"modelcrate/iris:{short}"]


def test_building_twice_gives_the_same_digest(tmp_path: Path, env: dict[str, object]) -> None:
    """Two stores (so pip runs twice), the base layout at two paths: the same bytes."""
    results = []
    for i in range(2):
        store = Store(tmp_path / f"store{i}")
        crate_with_lock(store, "iris", env["lock"])  # type: ignore[arg-type]
        base = tmp_path / f"base-copy{i}"
        shutil.copytree(str(env["base"]).split(":")[1], base)
        results.append(
            containerize(
                "iris",
                base=f"oci:{base}:base",
                store=store,
                output=f"oci-archive:{tmp_path / f'img{i}.tar'}",
                pip_args=offline_pip(env["house"]),  # type: ignore[arg-type]
                app_source=env["app_source"],  # type: ignore[arg-type]
            )
        )
    assert not results[0].wheels_cached
    assert not results[1].wheels_cached
    assert results[0].digest == results[1].digest
    assert (tmp_path / "img0.tar").read_bytes() == (tmp_path / "img1.tar").read_bytes()


def test_a_code_only_change_rebuilds_only_the_last_layer(
    tmp_path: Path, build: Build, env: dict[str, object]
) -> None:
    first = build()
    second = build(
        app_source=_changed_source(tmp_path, env["app_source"]), pip_args=("--no-index",)
    )
    assert second.wheels_cached  # the warm build did no pip work (it had no wheels to use)
    assert [x.digest for x in first.layers[:-1]] == [x.digest for x in second.layers[:-1]]
    assert first.layers[-1].digest != second.layers[-1].digest
    assert first.digest != second.digest
    assert (
        first.image.config["config"]["Labels"]["org.opencontainers.image.revision"]
        != (second.image.config["config"]["Labels"]["org.opencontainers.image.revision"])
    )


def test_a_new_model_with_the_same_lock_reuses_the_wheels_layer(
    build: Build, env: dict[str, object]
) -> None:
    first = build()
    crate_with_lock(env["store"], "iris2", env["lock"], model=b"another model\n")  # type: ignore[arg-type]
    second = build("iris2")
    assert second.wheels_cached
    roles = {x.role: x.digest for x in first.layers}
    again = {x.role: x.digest for x in second.layers}
    assert roles["wheels"] == again["wheels"]
    assert roles["model"] != again["model"]


def test_source_date_epoch_sets_the_layer_times(
    build: Build, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = build()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = build()
    assert dated.digest != plain.digest
    assert dated.digest == build().digest
    blob = dated.image.layers[-2].blob  # the model layer
    import gzip
    import io

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


def test_docker_format(build: Build) -> None:
    result = build(image_format="docker")
    assert result.image.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert result.digest != build().digest
    with pytest.raises(InputError, match="unknown image format"):
        build(image_format="zip")


def test_wrong_platform_is_refused(build: Build) -> None:
    with pytest.raises(InputError, match="locked for linux_x86_64") as info:
        build(platform="linux/arm64")
    assert "--platform linux/amd64" in (info.value.hint or "")


def test_python_mismatch_writes_nothing(tmp_path: Path, build: Build) -> None:
    base = debian_like_base(tmp_path / "py312", "3.12")
    with pytest.raises(InputError, match=r"needs Python 3\.11.*has Python 3\.12"):
        build(base=base, output=f"oci:{tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()


def test_base_without_python_writes_nothing(tmp_path: Path, build: Build) -> None:
    from modelcrate.image.tarlayer import LayerFile

    base = write_base(tmp_path / "nopy", [[LayerFile("/bin/sh", b"#!", 0o755)]])
    with pytest.raises(InputError, match="no Python interpreter"):
        build(base=base, output=f"oci-archive:{tmp_path / 'img.tar'}")
    assert not list(tmp_path.glob("*img.tar*"))


def test_bad_output_and_push_names_fail_before_any_work(tmp_path: Path, build: Build) -> None:
    steps: list[str] = []
    with pytest.raises(InputError, match="cannot write the image"):
        build(output=f"dir:{tmp_path}", progress=steps.append)
    with pytest.raises(InputError, match="name the registry"):
        build(push="iris:v1", progress=steps.append)
    with pytest.raises(InputError, match="folder does not exist"):
        build(output=f"oci:{tmp_path / 'no' / 'such' / 'dir'}", progress=steps.append)
    assert steps == []


def test_missing_crate(build: Build) -> None:
    with pytest.raises(InputError, match="nosuch"):
        build("nosuch")


def test_crate_folder_works_too(build: Build, env: dict[str, object]) -> None:
    store: Store = env["store"]  # type: ignore[assignment]
    by_name = build()
    by_dir = build(str(store.resolve("iris")))
    assert by_dir.digest == by_name.digest


def test_skopeo_reads_the_layout(tmp_path: Path, build: Build, container_tools: None) -> None:
    result = build(output=f"oci:{tmp_path / 'out'}:v1")
    proc = subprocess.run(
        ["skopeo", "inspect", f"oci:{tmp_path / 'out'}:v1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    doc = json.loads(proc.stdout)
    assert doc["Digest"] == result.digest
    assert doc["Labels"]["io.modelcrate.crate.name"] == "iris"
    assert len(doc["Layers"]) == 5


# -- registry ----------------------------------------------------------------------------------


def test_push_then_push_again_then_a_code_change(
    tmp_path: Path, build: Build, env: dict[str, object], registry: RunningRegistry
) -> None:
    from modelcrate.image.registry import RegistryClient

    target = f"{registry.host}/models/iris-{uuid.uuid4().hex[:12]}"
    first = build(push=f"{target}:v1", insecure_registry=True)
    assert first.pushed is not None
    assert first.pushed.digest == first.digest
    assert first.pushed.blobs_sent == 6  # config + 5 layers
    client = RegistryClient(registry.host, insecure=True)
    repo = target.split("/", 1)[1]
    assert client.pull_image(repo, "v1").digest == first.digest

    again = build(push=f"{target}:v1", insecure_registry=True)
    assert again.pushed is not None
    assert (again.pushed.blobs_sent, again.pushed.blobs_skipped) == (0, 6)
    assert again.pushed_bytes == len(again.image.manifest_blob)

    code = build(
        push=f"{target}:v2",
        insecure_registry=True,
        app_source=_changed_source(tmp_path, env["app_source"]),
    )
    assert code.pushed is not None
    assert code.pushed.blobs_sent == 2  # the app layer and the config
    app = code.layers[-1]
    assert code.pushed_bytes == app.size + len(code.image.config_blob) + len(
        code.image.manifest_blob
    )


def test_base_from_a_registry(
    tmp_path: Path, build: Build, env: dict[str, object], registry: RunningRegistry
) -> None:
    from modelcrate.image.registry import RegistryClient

    layout = debian_like_base(tmp_path / "b")
    local = read_oci_layout(layout.split(":")[1], "base")
    repo = f"bases/py-{uuid.uuid4().hex[:12]}"
    RegistryClient(registry.host, insecure=True).push_image(local, repo, "3.11")
    result = build(base=f"{registry.host}/{repo}:3.11", insecure_registry=True)
    assert result.base_digest == local.digest
    assert result.base == f"{registry.host}/{repo}:3.11"
    labels = result.image.config["config"]["Labels"]
    assert labels["org.opencontainers.image.base.name"] == f"{registry.host}/{repo}:3.11"
    store: Store = env["store"]  # type: ignore[assignment]
    cached = store.root / "image-cache" / "blobs" / "sha256"
    assert {p.name for p in cached.iterdir()} >= {
        layer.digest.removeprefix("sha256:") for layer in local.layers
    }
    from_layout = build()
    assert [x.digest for x in result.layers] == [x.digest for x in from_layout.layers]
    # pushed to the same registry: the base layers are mounted from the base's repository
    pushed = build(
        base=f"{registry.host}/{repo}:3.11",
        insecure_registry=True,
        push=f"{registry.host}/models/m-{uuid.uuid4().hex[:8]}:v1",
    ).pushed
    assert pushed is not None
    assert (pushed.blobs_mounted, pushed.blobs_sent, pushed.blobs_skipped) == (2, 4, 0)


def test_a_refusing_registry_reports_nothing_pushed(
    tmp_path: Path, build: Build, container_tools: None
) -> None:
    from modelcrate.image.auth import RegistryError

    with running_registry(tmp_path / "ro", readonly=True) as ro:
        with pytest.raises(RegistryError) as info:
            build(push=f"{ro.host}/models/iris:v1", insecure_registry=True)
        assert info.value.exit_code == 2
        assert "HTTP" in info.value.message
        from modelcrate.image.registry import RegistryClient

        with pytest.raises(RegistryError, match="404"):
            RegistryClient(ro.host, insecure=True).get_raw_manifest("models/iris", "v1")


def test_an_unreachable_registry_is_an_input_error(build: Build) -> None:
    from tests.image.registry_fixture import free_port

    with pytest.raises(InputError, match="cannot reach the registry"):
        build(push=f"127.0.0.1:{free_port()}/models/iris:v1", insecure_registry=True)


# -- CLI ---------------------------------------------------------------------------------------


def _cli(args: list[str]) -> int:
    from modelcrate.cli import main

    return main(args)


def test_cli(
    tmp_path: Path, build: Build, env: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    # the wheels layer is cached in the store (as after a first build): the CLI needs no index
    store: Store = env["store"]  # type: ignore[assignment]
    out = tmp_path / "cli.tar"
    rc = _cli(
        [
            "containerize",
            "iris",
            *("--base", str(env["base"])),
            *("--output", f"oci-archive:{out}"),
            *("--store", str(store.root)),
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "image: sha256:" in captured.out
    assert "wheels (cached)" in captured.out
    assert "Wheels layer" in captured.err
    digest = captured.out.split("image: ")[1].split()[0]
    assert hashlib.sha256(read_oci_archive(out).manifest_blob).hexdigest() == digest.split(":")[1]
    layout = tmp_path / "docker-layout"
    rc = _cli(
        [
            "containerize",
            str(store.resolve("iris")),  # a crate folder works too
            *("--base", str(env["base"]), "--format", "docker"),
            *("--output", f"oci:{layout}:v1", "--store", str(store.root)),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert read_oci_layout(layout, "v1").media_type.startswith("application/vnd.docker.")


def test_cli_errors_exit_2(
    tmp_path: Path, env: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    store: Store = env["store"]  # type: ignore[assignment]
    nopy = write_base(tmp_path / "nopy", [python_files("/usr", "3.11", stdlib=())])
    rc = _cli(["containerize", "iris", "--base", nopy, "--store", str(store.root)])
    assert rc == 2
    assert "lacks standard library modules" in capsys.readouterr().err
