"""``fedecg predict`` and ``fedecg explain`` through the CLI, on real WFDB records and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import typer
from builders.inference_models import DX, LABS, saved_model
from typer.testing import CliRunner

from fedecg.cli import app as main_app
from fedecg.cli import inference_commands

PTBXL = "wfdb-samples/ptb-xl/records100/00000/00001_lr"
CHAPMAN = "wfdb-samples/chapman-shaoxing/JS00001"


def _app() -> typer.Typer:
    """The main app when it lists inference_commands, else a fresh app with them registered."""
    if any(c.name == "predict" for c in main_app.registered_commands):
        return main_app
    app = typer.Typer(pretty_exceptions_enable=False)
    inference_commands.register(app)
    return app


runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_model(tmp_path_factory.mktemp("run") / "model", fs=100.0, crop_samples=250)


def _invoke(*args: str):
    return runner.invoke(_app(), [str(a) for a in args])


def _one_line(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(("record", "n_crops"), [(PTBXL, 4), (CHAPMAN, 4)])
def test_predict_on_real_records(shared_data: Path, model_dir: Path, record: str, n_crops: int):
    result = _invoke("predict", "--model", model_dir, "--wfdb", shared_data / record)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert list(payload["diagnoses"]) == DX
    assert list(payload["lab_abnormalities"]) == LABS
    probabilities = [*payload["diagnoses"].values(), *payload["lab_abnormalities"].values()]
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert payload["n_samples"] == 1000 and payload["n_crops"] == n_crops  # 10 s at 100 Hz


def test_predict_is_the_same_for_a_record_given_with_its_extension(shared_data: Path,
                                                                   model_dir: Path):
    plain = _invoke("predict", "--model", model_dir, "--wfdb", shared_data / PTBXL)
    suffixed = _invoke("predict", "--model", model_dir, "--wfdb", f"{shared_data / PTBXL}.hea")
    assert json.loads(plain.stdout)["diagnoses"] == json.loads(suffixed.stdout)["diagnoses"]


def test_explain_writes_json_and_png(shared_data: Path, model_dir: Path, tmp_path: Path):
    out = tmp_path / "explained"
    result = _invoke("explain", "--model", model_dir, "--wfdb", shared_data / CHAPMAN,
                     "--out", out, "--top", "2")
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "explanation.json").read_text())
    assert [d["label"] for d in payload["top"]] == sorted(
        DX, key=lambda label: -payload["diagnoses"][label])[:2]
    for item in payload["top"]:
        assert sum(item["lead_shares"].values()) == pytest.approx(1.0)
        assert all(s["label"] in LABS and s["probability"] >= 0.5 for s in item["supporting_labs"])
    assert (out / "explanation.png").read_bytes().startswith(b"\x89PNG")
    assert "wrote" in _one_line(result.output)


def _copy_ptbxl(shared_data: Path, target: Path) -> Path:
    source = shared_data / PTBXL
    for suffix in (".hea", ".dat"):
        shutil.copy(f"{source}{suffix}", target / f"00001_lr{suffix}")
    return target / "00001_lr"


@pytest.mark.parametrize("command", ["predict", "explain"])
def test_wrong_lead_set_fails_with_one_clear_message(shared_data: Path, model_dir: Path,
                                                     tmp_path: Path, command: str):
    record = _copy_ptbxl(shared_data, tmp_path)
    header = Path(f"{record}.hea")
    header.write_text(header.read_text().replace(" V6\n", " X6\n"))
    extra = ["--out", str(tmp_path / "out")] if command == "explain" else []
    result = _invoke(command, "--model", model_dir, "--wfdb", record, *extra)
    assert result.exit_code == 1
    message = _one_line(result.output)
    assert message.count("error:") == 1 and "Traceback" not in message
    assert str(record) in message and "missing lead(s) ['V6']" in message
    assert "unknown lead names ['X6']" in message
    assert not (tmp_path / "out").exists()


def test_unreadable_records_fail_clearly(shared_data: Path, model_dir: Path, tmp_path: Path):
    record = _copy_ptbxl(shared_data, tmp_path)
    dat = Path(f"{record}.dat")
    dat.write_bytes(dat.read_bytes()[:1000])
    result = _invoke("predict", "--model", model_dir, "--wfdb", record)
    assert result.exit_code == 1
    assert str(dat) in _one_line(result.output) and "truncated" in result.output
    missing = tmp_path / "nope" / "rec"
    result = _invoke("predict", "--model", model_dir, "--wfdb", missing)
    assert result.exit_code == 1
    assert f"{missing}.hea: header file not found" in _one_line(result.output)


def test_model_folder_without_model_or_card_fails_clearly(shared_data: Path, model_dir: Path,
                                                          tmp_path: Path):
    for name in ("model.pt", "model_card.json"):
        broken = tmp_path / name.replace(".", "-")
        shutil.copytree(model_dir, broken)
        (broken / name).unlink()
        result = _invoke("predict", "--model", broken, "--wfdb", shared_data / PTBXL)
        assert result.exit_code == 1
        message = _one_line(result.output)
        assert f"{broken}: missing {name}" in message and "Traceback" not in message


def test_unknown_method_or_out_file_is_refused(shared_data: Path, model_dir: Path,
                                               tmp_path: Path):
    result = _invoke("explain", "--model", model_dir, "--wfdb", shared_data / PTBXL,
                     "--out", tmp_path, "--method", "lime")
    assert result.exit_code == 1
    assert "--method 'lime': unknown attribution method" in _one_line(result.output)
    assert "integrated_gradients, saliency" in _one_line(result.output)
    (tmp_path / "taken").write_text("x")
    result = _invoke("explain", "--model", model_dir, "--wfdb", shared_data / PTBXL,
                     "--out", tmp_path / "taken")
    assert result.exit_code == 1
    assert f"--out {tmp_path / 'taken'}: exists and is a file" in _one_line(result.output)


def test_card_without_clipping_amplitude_fails_before_reading(shared_data: Path, model_dir: Path,
                                                              tmp_path: Path):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    card = json.loads((broken / "model_card.json").read_text())
    del card["preprocessing"]["clip_mv"]
    (broken / "model_card.json").write_text(json.dumps(card))
    result = _invoke("predict", "--model", broken, "--wfdb", shared_data / PTBXL)
    assert result.exit_code == 1
    assert f"{broken / 'model_card.json'} (model 'transfer'): preprocessing.clip_mv is None" in (
        _one_line(result.output))


def test_predict_warns_on_a_flat_line_and_refuses_a_header_rate_nan(shared_data: Path,
                                                                    model_dir: Path,
                                                                    tmp_path: Path):
    record = _copy_ptbxl(shared_data, tmp_path)
    dat = Path(f"{record}.dat")
    dat.write_bytes(bytes(len(dat.read_bytes())))  # every sample 0: a flat line
    flat = _invoke("predict", "--model", model_dir, "--wfdb", record)
    assert flat.exit_code == 0, flat.output
    assert json.loads(flat.stdout)["warnings"][0].startswith("flat line: every lead varies")
    assert "warning:" in flat.stderr and "its scores are not meaningful" in flat.stderr
    header = Path(f"{record}.hea")
    header.write_text(header.read_text().replace("00001_lr 12 100 ", "00001_lr 12 nan "))
    result = _invoke("predict", "--model", model_dir, "--wfdb", record)
    assert result.exit_code == 1 and _one_line(result.output).count("error:") == 1
    assert "sampling rate 'nan' Hz in the record line; expected a number from 50" in _one_line(
        result.output)
