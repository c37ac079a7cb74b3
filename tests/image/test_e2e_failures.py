"""Clear failures of ``modelcrate containerize``, against real registries and bases.

A base without Python, a base with another Python, a wrong platform, and registries that refuse
(read-only, wrong credentials, stopped): each is an ``InputError`` (exit 2 on the command line)
that names the cause and a fix, and the target repository holds nothing afterwards.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from modelcrate.errors import InputError
from tests.image.e2e_env import (
    BaseLayout,
    IrisCrate,
    containerize_crate,
    modelcrate_cli,
    registry_tags,
    skopeo_copy,
    tiny_layout,
    unique,
)
from tests.image.registry_fixture import RunningRegistry, running_registry

pytestmark = pytest.mark.slow

REPO = "iris"


def _nothing_pushed(registry: RunningRegistry, repo: str) -> None:
    assert registry_tags(registry.url, repo) == []


def test_a_base_without_python_is_refused(
    iris_crate: IrisCrate, registry: RunningRegistry, tmp_path: Path
) -> None:
    base = tiny_layout(tmp_path / "busybox", {"/bin/busybox": b"\x7fELF not really busybox"})
    repo = unique("nopython")
    with pytest.raises(InputError) as err:
        containerize_crate(
            iris_crate, base=base, push=f"{registry.host}/{repo}:1", insecure_registry=True
        )
    assert "no Python interpreter" in err.value.message
    assert err.value.hint
    _nothing_pushed(registry, repo)


def test_a_base_with_another_python_is_refused(
    iris_crate: IrisCrate, registry: RunningRegistry, tmp_path: Path
) -> None:
    from modelcrate.image.rootfs import STDLIB_NEEDED

    files = {"/usr/bin/python3.12": b"\x7fELF"}
    for part in STDLIB_NEEDED:
        name = part if part.endswith(".py") else f"{part}/__init__.py"
        files[f"/usr/lib/python3.12/{name}"] = b"# stub\n"
    base = tiny_layout(tmp_path / "py312", files)
    repo = unique("py312")
    with pytest.raises(InputError) as err:
        containerize_crate(
            iris_crate, base=base, push=f"{registry.host}/{repo}:1", insecure_registry=True
        )
    assert "3.11" in err.value.message
    assert "3.12" in err.value.message
    _nothing_pushed(registry, repo)


def test_a_wrong_platform_is_refused(
    iris_crate: IrisCrate, registry: RunningRegistry, base_layout: BaseLayout, tmp_path: Path
) -> None:
    repo = unique("platform")
    push = f"{registry.host}/{repo}:1"
    # The crate's wheels are locked for linux x86_64: no arm64 image from it.
    with pytest.raises(InputError) as crate_err:
        containerize_crate(
            iris_crate,
            base=base_layout.ref,
            platform="linux/arm64",
            push=push,
            insecure_registry=True,
        )
    assert "linux/arm64" in crate_err.value.message
    # A base built for another architecture than the one asked for.
    arm = tiny_layout(tmp_path / "arm64", {"/usr/bin/python3.11": b"\x7fELF"}, arch="arm64")
    with pytest.raises(InputError) as base_err:
        containerize_crate(iris_crate, base=arm, push=push, insecure_registry=True)
    assert "arm64" in base_err.value.message
    assert "amd64" in base_err.value.message
    _nothing_pushed(registry, repo)


def test_a_read_only_registry_refuses_with_its_status_and_nothing_is_reported_pushed(
    iris_crate: IrisCrate, base_layout: BaseLayout, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "ro", readonly=True) as ro:
        with pytest.raises(InputError) as err:
            containerize_crate(
                iris_crate, base=base_layout.ref, push=f"{ro.host}/{REPO}:1", insecure_registry=True
            )
        assert ro.host in str(err.value.render())
        assert registry_tags(ro.url, REPO) == []
    text = err.value.render()
    assert any(code in text for code in ("405", "503")), text  # the registry's status ...
    assert "Method not allowed" in text  # ... and its answer


def test_wrong_credentials_are_refused_and_nothing_is_pushed(
    iris_crate: IrisCrate, base_layout: BaseLayout, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "auth", htpasswd={"ci": "right-password"}) as reg:
        env = {"MODELCRATE_REGISTRY_USER": "ci", "MODELCRATE_REGISTRY_PASSWORD": "wrong-password"}
        proc = modelcrate_cli(
            "containerize",
            iris_crate.ref,
            "--store",
            str(iris_crate.store_root),
            "--base",
            base_layout.ref,
            "--insecure-registry",
            "--push",
            f"{reg.host}/{REPO}:1",
            env=env,
        )
        good = "Basic " + base64.b64encode(b"ci:right-password").decode()
        tags = registry_tags(reg.url, REPO, auth=good)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "401" in proc.stderr, proc.stderr
    assert "error[" in proc.stderr
    assert "hint:" in proc.stderr
    assert "pushed" not in proc.stdout
    assert tags == []


def test_a_stopped_registry_is_a_clear_error(
    iris_crate: IrisCrate, base_layout: BaseLayout, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "gone") as reg:
        host = reg.host
    with pytest.raises(InputError) as err:
        containerize_crate(
            iris_crate, base=base_layout.ref, push=f"{host}/{REPO}:1", insecure_registry=True
        )
    assert host in err.value.render()


def test_a_base_without_libstdcxx_is_refused_before_anything_is_pushed(
    iris_crate: IrisCrate, registry: RunningRegistry, bare_base_layout: BaseLayout
) -> None:
    """Issue 9, section 3: the image used to build, push, then die at start (exit 3) with
    ``libstdc++.so.6: cannot open shared object file``. The real crate's real wheels (ONNX
    Runtime links libstdc++) on the real essential Debian base, given as a registry reference."""
    base = f"{registry.host}/pybase-bare:bookworm"
    skopeo_copy(bare_base_layout.ref, f"docker://{base}")
    repo = unique("bare")
    proc = modelcrate_cli(
        "containerize",
        iris_crate.ref,
        "--store",
        str(iris_crate.store_root),
        "--base",
        base,
        "--insecure-registry",
        "--push",
        f"{registry.host}/{repo}:1",
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "lacks shared libraries" in err, proc.stderr
    assert re.search(r"libstdc\+\+\.so\.6 \(needed by [^)]*onnxruntime \d", err), proc.stderr
    assert "add libstdc++6 to the base" in err, proc.stderr
    assert "pushed" not in proc.stdout
    _nothing_pushed(registry, repo)
