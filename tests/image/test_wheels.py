"""The wheels layer: the real pip, offline from a local wheelhouse, for the image's platform."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from modelcrate.errors import InputError
from modelcrate.image.wheels import (
    SITE_PACKAGES,
    locked_packages,
    pip_platforms,
    wheel_layer,
)
from tests.image.assembly_helpers import lock_for, make_wheel, offline_pip, wheelhouse


def _entries(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {m.name: m for m in tar.getmembers()}


def _read(blob: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


def test_platform_tags_cover_every_manylinux_baseline() -> None:
    tags = pip_platforms("linux/amd64")
    assert tags[0] == "manylinux_2_28_x86_64"
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert all("aarch64" in t for t in pip_platforms("linux/arm64"))
    with pytest.raises(InputError, match="unsupported image platform"):
        pip_platforms("windows/amd64")


def test_locked_packages_reads_pins() -> None:
    lock = (
        b"numpy==2.0.0 \\\n    --hash=sha256:00\n"
        b"uvicorn[standard]==0.30.0 ; python_version >= '3.8'\n"
    )
    assert locked_packages(lock) == ("numpy==2.0.0", "uvicorn==0.30.0")


def test_wheels_layer_offline(tmp_path: Path) -> None:
    house, lock = wheelhouse(tmp_path / "house")
    (tmp_path / "requirements.lock").write_bytes(lock)
    result = wheel_layer(
        tmp_path / "requirements.lock",
        python_version="3.11",
        expected_sha256=hashlib.sha256(lock).hexdigest(),
        pip_args=offline_pip(house),
    )
    assert not result.cached
    assert result.packages == ("binpkg==2.0", "tinypkg==1.0")
    entries = _entries(result.layer.blob)
    root = SITE_PACKAGES.lstrip("/")
    assert f"{root}/tinypkg/__init__.py" in entries
    assert f"{root}/binpkg/_native.so" in entries
    assert f"{root}/tinypkg-1.0.dist-info/METADATA" in entries
    # console scripts name this host's Python in their #! line: left out, with their RECORD lines
    assert not [n for n in entries if n == f"{root}/bin" or n.startswith(f"{root}/bin/")]
    record = _read(result.layer.blob, f"{root}/tinypkg-1.0.dist-info/RECORD").decode()
    assert "../" not in record
    assert "tinypkg/__init__.py" in record
    for info in entries.values():
        assert (info.uid, info.gid, info.uname, info.gname, info.mtime) == (0, 0, "", "", 0)
        assert info.mode in (0o644, 0o755)
    assert not [n for n in entries if "__pycache__" in n or n.endswith(".pyc")]


def test_wheels_layer_is_reproducible_and_cached(tmp_path: Path) -> None:
    house, lock = wheelhouse(tmp_path / "house")
    lock_path = tmp_path / "requirements.lock"
    lock_path.write_bytes(lock)
    cache = tmp_path / "cache"
    first = wheel_layer(lock_path, python_version="3.11", pip_args=offline_pip(house))
    second = wheel_layer(
        lock_path, python_version="3.11", pip_args=offline_pip(house), cache_dir=cache
    )
    assert first.layer == second.layer  # two pip runs, the same bytes
    assert not second.cached
    assert (cache / f"wheels-{second.key}.tar.gz").read_bytes() == second.layer.blob
    warm = wheel_layer(lock_path, python_version="3.11", pip_args=("--no-index",), cache_dir=cache)
    assert warm.cached
    assert warm.layer == first.layer
    other = wheel_layer(
        lock_path, python_version="3.11", epoch=86400, pip_args=offline_pip(house), cache_dir=cache
    )
    assert not other.cached
    assert other.layer.digest != first.layer.digest


def test_a_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    house, lock = wheelhouse(tmp_path / "house")
    lock_path = tmp_path / "requirements.lock"
    lock_path.write_bytes(lock)
    cache = tmp_path / "cache"
    built = wheel_layer(
        lock_path, python_version="3.11", pip_args=offline_pip(house), cache_dir=cache
    )
    (cache / f"wheels-{built.key}.tar.gz").write_bytes(b"truncated")
    again = wheel_layer(
        lock_path, python_version="3.11", pip_args=offline_pip(house), cache_dir=cache
    )
    assert not again.cached
    assert again.layer == built.layer


def test_a_lock_that_does_not_match_the_crate_is_refused(tmp_path: Path) -> None:
    _, lock = wheelhouse(tmp_path / "house")
    (tmp_path / "requirements.lock").write_bytes(lock)
    with pytest.raises(InputError, match="does not match the lock_sha256"):
        wheel_layer(tmp_path / "requirements.lock", python_version="3.11", expected_sha256="0" * 64)


def test_a_wheel_with_another_hash_is_refused(tmp_path: Path) -> None:
    house, lock = wheelhouse(tmp_path / "house")
    make_wheel(house, "tinypkg", "1.0", console_script=True, files={"tinypkg/__init__.py": b"evil"})
    (tmp_path / "requirements.lock").write_bytes(lock)
    with pytest.raises(InputError, match=r"does not match the hash in requirements\.lock"):
        wheel_layer(
            tmp_path / "requirements.lock", python_version="3.11", pip_args=offline_pip(house)
        )


def test_no_wheel_for_the_platform_is_a_clear_error(tmp_path: Path) -> None:
    house = tmp_path / "house"
    house.mkdir()
    win = make_wheel(house, "winonly", "1.0", tag="cp311-cp311-win_amd64")
    (tmp_path / "requirements.lock").write_bytes(lock_for([win]))
    with pytest.raises(InputError, match="no wheel of winonly") as info:
        wheel_layer(
            tmp_path / "requirements.lock", python_version="3.11", pip_args=offline_pip(house)
        )
    assert "never builds from source" in (info.value.hint or "")


def test_source_distributions_are_never_built(tmp_path: Path) -> None:
    """An sdist whose setup.py would leave a mark: refused, and the mark never appears."""
    house = tmp_path / "house"
    house.mkdir()
    marker = tmp_path / "setup-py-ran"
    setup = f"open({str(marker)!r}, 'w').write('ran')\nfrom setuptools import setup\nsetup()\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {
            "evil-1.0/setup.py": setup.encode(),
            "evil-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
        }.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sdist = house / "evil-1.0.tar.gz"
    sdist.write_bytes(buf.getvalue())
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    (tmp_path / "requirements.lock").write_text(f"evil==1.0 --hash=sha256:{sha}\n")
    with pytest.raises(InputError, match="no wheel of evil"):
        wheel_layer(
            tmp_path / "requirements.lock", python_version="3.11", pip_args=offline_pip(house)
        )
    assert not marker.exists()


def test_missing_lock_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the lock"):
        wheel_layer(tmp_path / "nope.lock", python_version="3.11")
