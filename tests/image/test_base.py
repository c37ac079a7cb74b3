"""Base images: names, the interpreter found by reading layers, and the errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcrate.errors import InputError
from modelcrate.image.base import (
    DOCKER_HUB,
    check_python_version,
    parse_image_ref,
    parse_registry_ref,
    resolve_base,
)
from modelcrate.image.rootfs import Member, RootFS, layer_members
from modelcrate.image.tarlayer import LayerFile, build_layer
from tests.image.assembly_helpers import debian_like_base, python_files, write_base
from tests.image.e2e_env import BaseLayout

# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "repo", "tag", "digest"),
    [
        ("python:3.11-slim", DOCKER_HUB, "library/python", "3.11-slim", None),
        ("docker.io/library/python", DOCKER_HUB, "library/python", "latest", None),
        ("bitnami/python:3.11", DOCKER_HUB, "bitnami/python", "3.11", None),
        ("127.0.0.1:5000/pybase:bookworm", "127.0.0.1:5000", "pybase", "bookworm", None),
        ("localhost/models/iris", "localhost", "models/iris", "latest", None),
        ("ghcr.io/org/img@sha256:" + "a" * 64, "ghcr.io", "org/img", None, "sha256:" + "a" * 64),
    ],
)
def test_registry_names(
    text: str, host: str, repo: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_registry_ref(text)
    assert (ref.location, ref.repository, ref.tag, ref.digest) == (host, repo, tag, digest)
    assert ref.reference == (digest or tag)


def test_docker_hub_names_print_as_people_write_them() -> None:
    assert str(parse_registry_ref("python:3.11-slim")) == "docker.io/library/python:3.11-slim"


@pytest.mark.parametrize("bad", ["Python:3.11", "127.0.0.1:5000/a b", "x@sha256:1234", "a:b:c/d!"])
def test_bad_registry_names_are_input_errors(bad: str) -> None:
    with pytest.raises(InputError, match="image name"):
        parse_registry_ref(bad)


def test_layout_names(tmp_path: Path) -> None:
    assert parse_image_ref(f"oci:{tmp_path}/lay").location == f"{tmp_path}/lay"
    ref = parse_image_ref(f"oci:{tmp_path}/lay:v1")
    assert (ref.transport, ref.location, ref.tag) == ("oci", f"{tmp_path}/lay", "v1")
    ref = parse_image_ref(f"oci-archive:{tmp_path}/img.tar:models/iris:v1")
    assert (ref.transport, ref.location, ref.tag) == (
        "oci-archive",
        f"{tmp_path}/img.tar",
        "models/iris:v1",
    )
    odd = tmp_path / "with:colon"
    odd.mkdir()
    assert parse_image_ref(f"oci:{odd}").location == str(odd)  # an existing path wins


# -- the file tree -----------------------------------------------------------------------------


def _fs(*layers: list[LayerFile]) -> RootFS:
    fs = RootFS()
    for files in layers:
        layer = build_layer(files)
        fs.apply(layer_members(layer.blob, diff_id=layer.diff_id))
    return fs


def test_debian_layout_python_through_symlinks() -> None:
    fs = _fs(
        [LayerFile("/bin", None, link="usr/bin"), LayerFile("/lib", None, link="usr/lib")],
        python_files("/usr", "3.11"),
    )
    found = fs.find_python()
    assert found is not None
    assert (found.path, found.version, found.found_as) == (
        "/usr/bin/python3.11",
        "3.11",
        "/usr/bin/python3",
    )
    assert found.stdlib == "/usr/lib/python3.11"
    assert fs.resolve("/bin/python3") == "/usr/bin/python3.11"
    assert fs.resolve("/usr/bin/../../bin/./python3") == "/usr/bin/python3.11"
    assert fs.missing_stdlib(found) == []


def test_official_image_layout_and_absolute_links() -> None:
    fs = _fs(
        [
            *python_files("/usr/local", "3.12"),
            LayerFile("/usr/local/bin/python", None, link="/usr/local/bin/python3"),
        ]
    )
    found = fs.find_python()
    assert found is not None
    assert (found.path, found.version) == (
        "/usr/local/bin/python3.12",
        "3.12",
    )
    assert fs.resolve("/usr/local/bin/python") == "/usr/local/bin/python3.12"


def test_unversioned_real_file_takes_the_version_of_its_sibling() -> None:
    fs = _fs(
        [
            LayerFile("/usr/bin/python3", b"elf", 0o755),
            LayerFile("/usr/bin/python3.10", None, link="python3"),
            *python_files("/opt/none", "3.10")[2:],  # a stdlib elsewhere does not matter
        ]
    )
    found = fs.find_python()
    assert found is not None
    assert (found.path, found.version) == ("/usr/bin/python3", "3.10")


def test_whiteouts_remove_python_from_lower_layers() -> None:
    fs = _fs(
        python_files("/usr", "3.11"),
        [LayerFile("/usr/bin/.wh.python3", b""), LayerFile("/usr/bin/.wh.python3.11", b"")],
    )
    assert fs.find_python() is None
    assert fs.resolve("/usr/lib/python3.11/os.py") == "/usr/lib/python3.11/os.py"


def test_opaque_folder_hides_lower_entries_but_keeps_its_own_layer() -> None:
    fs = _fs(
        python_files("/usr/local", "3.11"),
        [
            LayerFile("/usr/local/bin/.wh..wh..opq", b""),
            *python_files("/usr/local", "3.13")[:2],
        ],
    )
    found = fs.find_python()
    assert found is not None
    assert found.version == "3.13"
    assert fs.kind("/usr/local/bin/python3.11") is None


def test_a_whiteout_never_removes_an_entry_of_its_own_layer() -> None:
    fs = RootFS()
    fs.apply([Member("etc/x", "file", 0o644), Member("etc/.wh.x", "file", 0o644)])
    assert fs.kind("etc/x") == "file"


def test_symlink_loops_and_dangling_links_resolve_to_none() -> None:
    fs = _fs(
        [
            LayerFile("/usr/bin/python3", None, link="python3.11"),
            LayerFile("/usr/bin/python3.11", None, link="python3"),
            LayerFile("/usr/local/bin/python3", None, link="/nowhere/python3.11"),
        ]
    )
    assert fs.resolve("/usr/bin/python3") is None
    assert fs.resolve("/usr/local/bin/python3") is None
    assert fs.find_python() is None


def test_dotdot_never_escapes_the_root() -> None:
    fs = _fs(
        [LayerFile("/a/b", None, link="../../../../etc/passwd"), LayerFile("/etc/passwd", b"x")]
    )
    assert fs.resolve("/a/b") == "/etc/passwd"


def test_non_executable_python_is_not_an_interpreter() -> None:
    fs = _fs([LayerFile("/usr/bin/python3.11", b"text", 0o644)])
    assert fs.find_python() is None


def test_layer_content_must_match_its_diff_id() -> None:
    layer = build_layer([LayerFile("/a", b"x")])
    with pytest.raises(InputError, match="does not match its diff_id"):
        list(layer_members(layer.blob, diff_id="sha256:" + "0" * 64))


def test_garbage_layer_is_an_input_error() -> None:
    with pytest.raises(InputError, match="not a readable tar"):
        list(layer_members(b"\x1f\x8b not gzip at all"))


# -- resolve_base ------------------------------------------------------------------------------


def test_resolve_base_from_a_layout(tmp_path: Path) -> None:
    ref = debian_like_base(tmp_path / "base")
    base = resolve_base(ref, cache_dir=tmp_path / "cache")
    assert base.python.path == "/usr/bin/python3.11"
    assert base.python.version == "3.11"
    assert str(base.platform) == "linux/amd64"
    assert base.name == ref
    assert base.digest.startswith("sha256:")
    cached = tmp_path / "cache" / f"base-{base.digest.removeprefix('sha256:')}.json"
    assert json.loads(cached.read_text())["python"]["path"] == "/usr/bin/python3.11"
    again = resolve_base(ref, cache_dir=tmp_path / "cache")  # served from the cache
    assert again.python == base.python


def test_resolve_base_from_an_archive(tmp_path: Path) -> None:
    from modelcrate.image.layout import read_oci_layout, write_oci_archive

    debian_like_base(tmp_path / "base")
    image = read_oci_layout(tmp_path / "base", "base")
    write_oci_archive(image, tmp_path / "base.tar", "pybase:1")
    base = resolve_base(f"oci-archive:{tmp_path / 'base.tar'}:pybase:1")
    assert base.digest == image.digest
    assert base.python.version == "3.11"


def test_base_without_python_is_a_clear_error(tmp_path: Path) -> None:
    ref = write_base(tmp_path / "nopy", [[LayerFile("/bin/sh", b"#!", 0o755)]])
    with pytest.raises(InputError, match="has no Python interpreter") as info:
        resolve_base(ref)
    assert "python:3.11-slim" in (info.value.hint or "")


def test_python_without_the_stdlib_serve_needs(tmp_path: Path) -> None:
    ref = write_base(tmp_path / "minimal", [python_files("/usr", "3.11", stdlib=("encodings",))])
    with pytest.raises(InputError, match=r"lacks standard library modules .*asyncio") as info:
        resolve_base(ref)
    assert "libpython3.11-stdlib" in (info.value.hint or "")


def test_a_musl_base_is_refused(tmp_path: Path) -> None:
    musl = [LayerFile("/lib/ld-musl-x86_64.so.1", b"elf", 0o755), *python_files("/usr/local")]
    with pytest.raises(InputError, match="musl") as info:
        resolve_base(write_base(tmp_path / "alpine", [musl]))
    assert "slim" in (info.value.hint or "")


def test_wrong_platform_is_a_clear_error(tmp_path: Path) -> None:
    ref = write_base(tmp_path / "arm", [python_files()], arch="arm64")
    with pytest.raises(InputError, match="arm64") as info:
        resolve_base(ref, platform="linux/amd64")
    assert "linux/amd64" in info.value.message


def test_python_version_mismatch_with_the_crate(tmp_path: Path) -> None:
    base = resolve_base(debian_like_base(tmp_path / "base", "3.12"))
    check_python_version(base, "3.12", crate="iris:abc")
    with pytest.raises(
        InputError, match=r"needs Python 3\.11, but the base image .* has Python 3\.12"
    ) as info:
        check_python_version(base, "3.11", crate="iris:abc")
    assert "python:3.11-slim" in (info.value.hint or "")


def test_missing_layout_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        resolve_base(f"oci:{tmp_path / 'nothing'}")


def test_the_real_debian_base(base_layout: BaseLayout, tmp_path: Path) -> None:
    """mmdebstrap's bookworm: /usr/bin/python3 -> python3.11, merged /usr, the stdlib split
    across packages; found by reading its layer, then served from the cache."""
    base = resolve_base(base_layout.ref, cache_dir=tmp_path)
    assert (base.python.path, base.python.version) == ("/usr/bin/python3.11", "3.11")
    assert base.python.found_as == "/usr/bin/python3"
    assert base.python.stdlib == "/usr/lib/python3.11"
    assert resolve_base(base_layout.ref, cache_dir=tmp_path).python == base.python
