"""``modelcrate predict`` (in process, same answers as the server) and ``serve``'s input errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from modelcrate.cli import main
from modelcrate.cli.serve_cmd import resolve_crate
from modelcrate.crate.manifest import load_manifest
from modelcrate.crate.store import Store
from modelcrate.errors import InputError
from modelcrate.serve import predict_file
from tests.serve.asgi import AppClient
from tests.serve.crates import IRIS_CLASSES, Built, records


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELCRATE_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def server_answers(iris_client: AppClient, iris: Built) -> dict[str, bytes]:
    recs = records(iris, slice(0, 20))
    return {
        "one": iris_client.post("/predict", json=recs[0]).content,
        "many": iris_client.post("/predict", json=recs).content,
    }


def _stdout(capsys: pytest.CaptureFixture[str]) -> bytes:
    return capsys.readouterr().out.encode()


def test_json_record_answers_like_the_server(
    iris: Built,
    tmp_path: Path,
    server_answers: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    recs = records(iris, slice(0, 20))
    one, many = tmp_path / "one.json", tmp_path / "many.json"
    one.write_bytes(orjson.dumps(recs[0]))
    many.write_bytes(orjson.dumps(recs))
    assert main(["predict", str(iris.crate_dir), "--input", str(one)]) == 0
    assert _stdout(capsys) == server_answers["one"] + b"\n"
    assert main(["predict", str(iris.crate_dir), "-i", str(many)]) == 0
    assert _stdout(capsys) == server_answers["many"] + b"\n"


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_tables_answer_like_the_server(
    iris: Built,
    tmp_path: Path,
    server_answers: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
    suffix: str,
) -> None:
    frame = iris.frame.iloc[:20].copy()
    frame["target"] = "ignored"  # columns the model does not take are ignored
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    assert main(["predict", str(iris.crate_dir), "--input", str(path)]) == 0
    got = json.loads(_stdout(capsys))
    want = json.loads(server_answers["many"])
    assert [p["label"] for p in got] == [p["label"] for p in want]
    for g, w in zip(got, want, strict=True):  # CSV holds decimal text: float32 noise only
        assert g["probabilities"] == pytest.approx(w["probabilities"], abs=1e-6)


def test_strings_in_csv_stay_strings(churn: Built, tmp_path: Path) -> None:
    frame = churn.frame.iloc[:10].copy()
    frame["plan"] = ["1", "2", "basic", "pro", "plus"] * 2  # numeric-looking categories
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    result = predict_file(churn.crate_dir, path)
    assert len(result.predictions) == 10


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_output_file(iris: Built, tmp_path: Path, suffix: str) -> None:
    import pandas as pd

    source = tmp_path / "in.json"
    source.write_bytes(orjson.dumps(records(iris, slice(0, 5))))
    out = tmp_path / f"out{suffix}"
    assert main(["predict", str(iris.crate_dir), "-i", str(source), "-o", str(out)]) == 0
    if suffix == ".json":
        assert len(json.loads(out.read_bytes())) == 5
        return
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns) == ["label"] + [f"probabilities.{c}" for c in IRIS_CLASSES]
    assert list(table["label"]) == list(iris.model.predict(iris.frame.to_numpy()[:5]))


def test_name_and_version_resolve_through_the_store(
    iris: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(tmp_path / "home")
    manifest = load_manifest(iris.crate_dir)
    with store.staging() as stage:
        shutil.copytree(iris.crate_dir, stage, dirs_exist_ok=True)
        store.commit(stage, manifest)
    assert resolve_crate("iris") == store.resolve("iris")
    source = tmp_path / "in.json"
    source.write_bytes(orjson.dumps(records(iris, slice(0, 1))[0]))
    ref = f"iris:{manifest.short_version}"
    assert main(["predict", ref, "-i", str(source), "--store", str(store.root)]) == 0
    assert json.loads(_stdout(capsys))["label"] == "setosa"


# -- errors a person can act on: exit 2, the file, the cause, the fix ---------------------------


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())  # Rich wraps long lines
    for fragment in fragments:
        assert fragment in err, err


def test_bad_values_name_the_record_and_field(
    iris: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recs = records(iris, slice(0, 3))
    recs[1]["petal width (cm)"] = "thin"
    path = tmp_path / "in.json"
    path.write_bytes(orjson.dumps(recs))
    _fails(
        ["predict", str(iris.crate_dir), "-i", str(path)],
        capsys,
        "record 1, field 'petal width (cm)'",
        "'thin'",
        str(path),
        "hint:",
    )


def test_table_errors_name_the_row_and_column(
    churn: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = churn.frame.iloc[:4].copy()
    frame.loc[2, "plan"] = None
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    _fails(["predict", str(churn.crate_dir), "-i", str(path)], capsys, "row 3, field 'plan'")
    frame.drop(columns=["income"]).to_csv(path, index=False)
    _fails(
        ["predict", str(churn.crate_dir), "-i", str(path)],
        capsys,
        "lacks the column(s) 'income'",
        "the model takes the columns 'age', 'income', 'plan'",
    )


def test_input_file_problems(
    iris: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crate = str(iris.crate_dir)
    _fails(["predict", crate, "-i", str(tmp_path / "none.json")], capsys, "cannot read")
    _fails(["predict", crate, "-i", str(tmp_path / "none.csv")], capsys, "does not exist")
    (tmp_path / "x.txt").write_text("1")
    _fails(["predict", crate, "-i", str(tmp_path / "x.txt")], capsys, "cannot read .txt input")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    _fails(["predict", crate, "-i", str(tmp_path / "bad.parquet")], capsys, "cannot read the table")
    (tmp_path / "ok.json").write_bytes(orjson.dumps(records(iris, slice(0, 1))))
    out = str(tmp_path / "out.xlsx")
    _fails(["predict", crate, "-i", str(tmp_path / "ok.json"), "-o", out], capsys, ".xlsx output")


def test_crate_references_that_do_not_resolve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.json"
    source.write_text("{}")
    _fails(
        ["predict", str(tmp_path / "nowhere"), "-i", str(source)], capsys, "no such crate folder"
    )
    (tmp_path / "empty").mkdir()
    _fails(["predict", str(tmp_path / "empty"), "-i", str(source)], capsys, "crate.yaml is missing")
    _fails(["predict", "ghost", "-i", str(source)], capsys, "no crate named 'ghost'")
    _fails(["serve", "ghost:abc"], capsys, "no crate named 'ghost'")


def test_serve_refuses_a_tampered_crate_before_listening(
    iris: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crate = tmp_path / "tampered"
    shutil.copytree(iris.crate_dir, crate)
    model = crate / "model" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    _fails(["serve", str(crate), "--port", "1"], capsys, "error[integrity]", "sha256")
    yaml = crate / "crate.yaml"
    yaml.write_text(yaml.read_text().replace("name: iris", "name: iris2"))
    _fails(["serve", str(crate), "--port", "1"], capsys, "version digest")


def test_bad_input_raises_input_error_from_the_library(iris: Built, tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(b"[]")
    with pytest.raises(InputError, match="the input: List should have at least 1 item"):
        predict_file(iris.crate_dir, path)


def test_importing_the_commands_stays_light() -> None:
    code = (
        "import sys, modelcrate.cli.serve_cmd, modelcrate.cli.serve_click; "
        "heavy = ('numpy', 'fastapi', 'uvicorn', 'onnxruntime', 'pandas', 'pydantic'); "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_worker_factory_reads_the_crate_from_the_environment(
    iris: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcrate.serve import create_app_from_env
    from modelcrate.serve.app import CRATE_ENV

    monkeypatch.delenv(CRATE_ENV, raising=False)
    with pytest.raises(InputError, match=CRATE_ENV):
        create_app_from_env()
    monkeypatch.setenv(CRATE_ENV, str(iris.crate_dir))
    with AppClient(create_app_from_env()) as client:
        assert client.get("/readyz").json()["model"] == "iris"
