"""Deterministic layers: golden digests, sorted entries, parents, normalised metadata, gzip."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcrate._epoch import source_date_epoch
from modelcrate.errors import InputError
from modelcrate.image.tarlayer import (
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_TAR,
    LayerFile,
    build_layer,
    files_from_dir,
    layer_from_blob,
    sha256_digest,
)

FILES = [
    LayerFile("/opt/modelcrate/crate/crate.yaml", b"name: iris\n", 0o600),
    LayerFile("/opt/modelcrate/crate/model/model.onnx", b"\x08\x07onnx-bytes", 0o664),
    LayerFile("/opt/modelcrate/bin/serve", b"#!/bin/sh\nexec true\n", 0o700),
    LayerFile("/opt/modelcrate/current", None, 0o777, link="crate"),
    LayerFile("/etc/modelcrate", None, 0o700),
]
# Golden identities of FILES (epoch 0): any change to the tar or gzip writer shows here.
GOLDEN_DIFF_ID = "sha256:62093edb5d16e11b490bded246333d85ba7836dec17a83e1700daab2b469b716"
GOLDEN_DIGEST = "sha256:c05d9af3c18fa90857dd481ea43be19fcc44846cfdded076e2c4a5eec4f44884"


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return tar.getmembers()


def test_golden_digests() -> None:
    layer = build_layer(FILES)
    assert layer.diff_id == GOLDEN_DIFF_ID
    assert layer.digest == GOLDEN_DIGEST
    assert layer.digest == sha256_digest(layer.blob)
    assert layer.size == len(layer.blob)
    assert layer.media_type == MEDIA_TYPE_LAYER_GZIP
    assert sha256_digest(gzip.decompress(layer.blob)) == layer.diff_id


def test_same_input_any_order_same_bytes() -> None:
    one = build_layer(FILES)
    two = build_layer(list(reversed(FILES)))
    assert one == two


def test_entries_sorted_with_parents_and_normalised_metadata() -> None:
    members = _members(build_layer(FILES, epoch=1_700_000_000).blob)
    names = [m.name for m in members]
    assert names == [
        "etc",
        "etc/modelcrate",
        "opt",
        "opt/modelcrate",
        "opt/modelcrate/bin",
        "opt/modelcrate/bin/serve",
        "opt/modelcrate/crate",
        "opt/modelcrate/crate/crate.yaml",
        "opt/modelcrate/crate/model",
        "opt/modelcrate/crate/model/model.onnx",
        "opt/modelcrate/current",
    ]
    by_name = {m.name: m for m in members}
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
        assert m.mtime == 1_700_000_000
        assert not m.pax_headers
    assert by_name["etc/modelcrate"].isdir()
    assert by_name["etc/modelcrate"].mode == 0o755
    assert by_name["opt"].mode == 0o755
    assert by_name["opt/modelcrate/bin/serve"].mode == 0o755
    assert by_name["opt/modelcrate/crate/crate.yaml"].mode == 0o644
    assert by_name["opt/modelcrate/crate/model/model.onnx"].mode == 0o644
    link = by_name["opt/modelcrate/current"]
    assert link.issym()
    assert link.linkname == "crate"
    assert link.mode == 0o777


def test_gzip_header_has_no_name_and_mtime_zero() -> None:
    blob = build_layer(FILES, epoch=1_700_000_000).blob
    assert blob[:3] == b"\x1f\x8b\x08"
    assert blob[3] == 0  # FLG: no FNAME, no FEXTRA, no comment
    assert blob[4:8] == b"\x00\x00\x00\x00"  # MTIME


def test_raw_tar_headers_are_plain_ustar() -> None:
    raw = gzip.decompress(build_layer(FILES).blob)
    assert raw[257:265] == b"ustar\x0000"  # POSIX ustar magic + version, no GNU or pax header
    assert b"atime" not in raw
    assert b"ctime" not in raw


def test_long_names_get_only_a_pax_path_record() -> None:
    long = "/opt/" + "d" * 120 + "/" + "f" * 120
    members = _members(build_layer([LayerFile(long, b"x")]).blob)
    assert members[-1].name == long[1:]
    assert set(members[-1].pax_headers) == {"path"}


def test_epoch_changes_diff_id_only_through_mtime() -> None:
    assert build_layer(FILES, epoch=0).diff_id != build_layer(FILES, epoch=1).diff_id


def test_explicit_parent_dir_is_merged() -> None:
    a = build_layer([LayerFile("/opt", None, 0o700), LayerFile("/opt/a", b"1")])
    b = build_layer([LayerFile("/opt/a", b"1")])
    assert a == b


@pytest.mark.parametrize(
    "files",
    [
        [LayerFile("relative/path", b"x")],
        [LayerFile("/a/../b", b"x")],
        [LayerFile("/a//b", b"x")],
        [LayerFile("/", None)],
        [LayerFile("/a", b"x"), LayerFile("/a", b"y")],
        [LayerFile("/a", b"x"), LayerFile("/a/b", b"y")],
        [LayerFile("/a", b"x", link="b")],
    ],
)
def test_bad_entries_are_refused(files: list[LayerFile]) -> None:
    with pytest.raises(InputError):
        build_layer(files)


def test_layer_from_blob_round_trip() -> None:
    layer = build_layer(FILES)
    assert layer_from_blob(layer.blob) == layer
    raw = gzip.decompress(layer.blob)
    plain = layer_from_blob(raw, MEDIA_TYPE_LAYER_TAR)
    assert plain.digest == plain.diff_id == layer.diff_id
    with pytest.raises(InputError, match="not valid gzip"):
        layer_from_blob(b"not gzip")
    with pytest.raises(InputError, match="unsupported layer media type"):
        layer_from_blob(layer.blob, "application/zip")


def test_files_from_dir(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub" / "__pycache__").mkdir(parents=True)
    (root / "sub" / "__pycache__" / "x.pyc").write_bytes(b"pyc")
    (root / "sub" / "mod.py").write_text("x = 1\n")
    (root / "tool").write_text("#!/bin/sh\n")
    (root / "tool").chmod(0o755)
    os.symlink("sub/mod.py", root / "alias.py")
    files = files_from_dir(root, "/opt/app", exclude=lambda rel: rel.endswith("__pycache__"))
    got = {(f.path, f.data is None, f.link) for f in files}
    assert got == {
        ("/opt/app/alias.py", True, "sub/mod.py"),
        ("/opt/app/sub", True, None),
        ("/opt/app/sub/mod.py", False, None),
        ("/opt/app/tool", False, None),
    }
    layer = build_layer(files)
    modes = {m.name: m.mode for m in _members(layer.blob)}
    assert modes["opt/app/tool"] == 0o755
    assert modes["opt/app/sub/mod.py"] == 0o644


def test_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert source_date_epoch() == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert source_date_epoch() == 1_700_000_000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InputError, match="SOURCE_DATE_EPOCH"):
        source_date_epoch()


_names = st.text(alphabet="abcXYZ09._-", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.lists(_names, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p)),
        st.tuples(st.binary(max_size=64), st.sampled_from([0o600, 0o644, 0o755, 0o4711])),
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_any_file_set_is_order_independent(
    entries: dict[str, tuple[bytes, int]], rnd: object
) -> None:
    paths = sorted(entries)
    # drop paths that are parents of others (a file cannot be a folder too)
    files = [
        LayerFile(p, *entries[p]) for p in paths if not any(q.startswith(p + "/") for q in paths)
    ]
    shuffled = list(files)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    one, two = build_layer(files), build_layer(shuffled)
    assert one == two
    names = [m.name for m in _members(one.blob)]
    assert names == sorted(names)
