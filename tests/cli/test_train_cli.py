"""``fedecg train`` through typer's CliRunner: outputs, exit codes and messages."""

from __future__ import annotations

import importlib.util
import json

import pytest
from builders.site_store import make_store
from builders.tiny import tiny_overrides
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.models.io import load_inference_model
from fedecg.report.provenance import read_provenance
from fedecg.run_folder import RunFolder

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("stores") / "site-a", 80, ecgs_per_patient=1,
                       separable=True)


def _args(store, out, *extra: str) -> list[str]:
    sets = [item for override in tiny_overrides() for item in ("--set", override)]
    return ["train", "--store", str(store), "--out", str(out), *sets, *extra]


def test_train_writes_the_run_folder_and_a_one_line_summary(store, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("eval:\n  bootstrap: 10\n")
    result = runner.invoke(app, _args(store, tmp_path / "run", "--config", str(config),
                                      "--models", "signal-only,transfer", "--seed", "3"))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    summary = json.loads(RunFolder(run).summary.read_text())
    assert summary["models"] == ["signal-only", "transfer"] and summary["seed"] == 3
    for name in ("signal-only", "transfer", "naive"):
        assert {"diagnosis_macro_auroc", "diagnosis_macro_auroc_ci", "lab_macro_auroc",
                "lab_macro_auroc_ci", "diagnosis_auroc", "lab_auroc"} <= set(summary[name])
    assert "multimodal" not in summary
    assert "seed: 3" in RunFolder(run).config.read_text()
    stages = [json.loads(x)["stage"] for x in RunFolder(run).metrics.read_text().splitlines()]
    assert stages == ["lab", "diagnosis", "pretrain", "lab", "diagnosis"]
    model, card = load_inference_model(RunFolder(run).model)
    assert model.dx_head.out_features == 2
    assert card.model_name == "transfer" and card.seed == 3
    assert card.diagnosis_labels == ["atrial_fibrillation", "heart_failure"]
    assert "transfer: dx" in result.output and "naive: dx 0.500" in result.output
    assert ("warning: site-a: 3 label(s) have fewer than 5 positive ECGs in the test split (16 "
            "ECGs), so their test metrics (AUROC, CI) are noise" in result.output)
    if importlib.util.find_spec("fedecg.report.run_report") is not None:
        assert RunFolder(run).report.is_file()
        assert RunFolder(run).report.stat().st_mode & 0o777 == 0o640
    assert RunFolder(run).summary.stat().st_mode & 0o777 == 0o640  # no patient data: group
    assert (RunFolder(run).model / "model.pt").stat().st_mode & 0o777 == 0o600


def test_a_finished_run_is_not_overwritten_without_the_flag(store, tmp_path):
    args = _args(store, tmp_path / "run", "--models", "signal-only")
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert "finished run" in again.output and "--overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_an_unknown_config_key_is_named(store, tmp_path):
    result = runner.invoke(app, _args(store, tmp_path / "run", "--set", "encoder.widthz=[8]"))
    assert result.exit_code == 1
    assert "encoder.widthz" in result.output and "unknown key" in result.output
    assert not (tmp_path / "run").exists()


def test_an_ill_typed_value_and_an_unknown_model_are_named(store, tmp_path):
    result = runner.invoke(app, _args(store, tmp_path / "run", "--set", "batch_size=many"))
    assert result.exit_code == 1 and "batch_size" in result.output and "many" in result.output
    result = runner.invoke(app, _args(store, tmp_path / "run", "--models", "transfer,magic"))
    assert result.exit_code == 1 and "models" in result.output and "magic" in result.output


def test_a_missing_store_and_incompatible_stores_fail_clearly(store, tmp_path):
    result = runner.invoke(app, _args(tmp_path / "nope", tmp_path / "run"))
    assert result.exit_code == 1 and "nope" in result.output
    other = make_store(tmp_path / "site-b", 20, ecgs_per_patient=1,
                       separable=True, site_name="site-b", labs=("potassium",))
    result = runner.invoke(app, [*_args(store, tmp_path / "run"), "--store", str(other)])
    assert result.exit_code == 1
    assert "site-b" in result.output and "lab_labels" in result.output


def test_an_unfinished_run_resumes_only_with_the_same_settings(store, tmp_path):
    run = tmp_path / "run"
    args = _args(store, run, "--models", "signal-only")
    assert runner.invoke(app, args).exit_code == 0
    assert read_provenance(run)["resumed"] is False
    RunFolder(run).summary.unlink()  # as if killed before the end
    result = runner.invoke(app, [*args, "--seed", "9"])
    assert result.exit_code == 1 and "seed" in result.output and "--overwrite" in result.output
    assert runner.invoke(app, args).exit_code == 0  # same settings: resumes and finishes
    assert RunFolder(run).summary.is_file() and read_provenance(run)["resumed"] is True


def test_a_folder_that_is_not_a_run_is_left_alone(store, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "stray.txt").write_text("x")
    for extra in ((), ("--overwrite",)):
        result = runner.invoke(app, _args(store, run, *extra))
        assert result.exit_code == 1 and "not written by fedecg" in result.output
        assert "delete it by hand" in result.output and "pass --overwrite" not in result.output
        assert [p.name for p in run.iterdir()] == ["stray.txt"]


def test_overwrite_never_deletes_the_input_store(tmp_path):
    """`train --store S --out S --overwrite` is refused in one line, and S stays whole."""
    store = make_store(tmp_path / "site-a", 20, ecgs_per_patient=1,
                       separable=True)
    before = sorted(p.name for p in store.iterdir())
    result = runner.invoke(app, _args(store, store, "--overwrite"))
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "is the input" in result.output and "pass --overwrite" not in result.output
    assert sorted(p.name for p in store.iterdir()) == before
    inside = runner.invoke(app, _args(store, store.parent, "--overwrite"))
    assert inside.exit_code == 1 and "holds the input" in inside.output
    assert sorted(p.name for p in store.iterdir()) == before


def test_train_prints_a_line_per_epoch_with_the_validation_metric_when_piped(store, tmp_path):
    """CliRunner's output is not a TTY: every epoch still gets a line with its val metric."""
    result = runner.invoke(app, _args(store, tmp_path / "run", "--models", "transfer",
                                      "--set", "lab.epochs=2"))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("transfer · ")]
    assert [line.split(" · ")[1] for line in lines] == [
        "pretrain 1/1", "lab 1/2", "lab 2/2", "diagnosis 1/1"]
    assert "val loss" in lines[0] and "val lab AUROC" in lines[1]
    assert "val dx AUROC" in lines[-1] and "s/epoch" in lines[-1]
    assert "ETA" in lines[0] and lines[-1].endswith("done")


def test_train_quiet_prints_no_epoch_lines_and_log_json_prints_json(store, tmp_path):
    quiet = runner.invoke(app, _args(store, tmp_path / "q", "--models", "signal-only",
                                     "--quiet"))
    assert quiet.exit_code == 0, quiet.output
    assert "signal-only · lab" not in quiet.output and "signal-only: dx" in quiet.output
    machine = runner.invoke(app, _args(store, tmp_path / "j", "--models", "signal-only",
                                       "--log-json"))
    assert machine.exit_code == 0, machine.output
    records = [json.loads(line) for line in machine.stdout.splitlines() if line.startswith("{")]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [(r["stage"], r["done"], r["total"]) for r in epochs] == [("lab", 1, 2),
                                                                       ("diagnosis", 2, 2)]
    assert 0.0 <= epochs[-1]["val_diagnosis_macro_auroc"] <= 1.0
    assert epochs[-1]["eta_seconds"] == 0.0
    assert records[-1]["event"] == "result"
    assert records[-1]["signal-only"]["n_test"] > 0


def test_a_crop_longer_than_the_records_is_refused_with_the_fix(store, tmp_path):
    result = runner.invoke(app, _args(store, tmp_path / "run", "--set", "crop_samples=400"))
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert ("crop_samples 400 is longer than the records of" in result.output
            and "(200 samples, 2 s at 100 Hz)" in result.output
            and "Set crop_samples to at most 200 (e.g. 50)" in result.output)
    assert not (tmp_path / "run").exists()


def test_a_non_utf8_config_and_an_unwritable_out_are_one_line(store, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes("seed: 1  # Hôpital\n".encode("latin-1"))
    result = runner.invoke(app, _args(store, tmp_path / "run", "--config", str(config)))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert f"{config}: byte b'\\xf4' at offset 12 is not UTF-8" in result.output
    unwritable = runner.invoke(app, _args(store, "/proc/x"))
    assert unwritable.exit_code == 1 and unwritable.output.count("error:") == 1
    last = unwritable.output.splitlines()[-1]
    assert last.startswith("error: /proc/") and "check that its folder exists" in last


def test_ctrl_c_is_one_line_and_a_rerun_continues(store, tmp_path, monkeypatch):
    from fedecg.training import trainer as training_loop

    real = training_loop.train_epoch
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training_loop, "train_epoch", interrupted)
    args = _args(store, tmp_path / "run", "--models", "signal-only")
    result = runner.invoke(app, args)
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert ("interrupted: finished work is kept; rerun train with the same --out"
            in result.output)
    monkeypatch.setattr(training_loop, "train_epoch", real)
    assert runner.invoke(app, args).exit_code == 0
