"""A site without labs trains (the lab stage skipped, said once) and its lab outputs, which
never trained, are never shown as results: model card, predict, explain."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from builders.site_store import make_store
from builders.tiny import tiny_overrides
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.train import StageConfig
from fedecg.data.store import SiteStore
from fedecg.models.io import CARD_MARKDOWN, load_inference_model
from fedecg.run_folder import RunFolder
from fedecg.training.data import CropDataset, epoch_loader
from fedecg.training.runner import planned_passes

runner = CliRunner()
CHAPMAN = "wfdb-samples/chapman-shaoxing/JS00001"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A trained run on a store whose lab values and labels are all unknown (no labs)."""
    root = tmp_path_factory.mktemp("nolabs")
    store = make_store(root / "store", 80, ecgs_per_patient=1,
                       separable=True)
    cohort = pd.read_parquet(store / "cohort.parquet")
    unknown = [c for c in cohort if c.startswith(("abn_", "lab_"))]
    cohort[unknown] = np.nan
    cohort.to_parquet(store / "cohort.parquet", index=False)
    sets = [item for override in tiny_overrides() for item in ("--set", override)]
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("fedecg").addHandler(handler)
    try:
        result = runner.invoke(app, ["train", "--store", str(store), "--out", str(root / "run"),
                                     "--models", "signal-only,transfer", *sets])
    finally:
        logging.getLogger("fedecg").removeHandler(handler)
    assert result.exit_code == 0, result.output
    return root / "run", "\n".join(r.getMessage() for r in records)


def test_lab_stage_is_skipped_and_said_once(run: tuple[Path, str]) -> None:
    folder, output = run
    stages = [json.loads(x)["stage"] for x in RunFolder(folder).metrics.read_text().splitlines()]
    assert stages == ["diagnosis", "pretrain", "diagnosis"]
    assert yaml.safe_load(RunFolder(folder).config.read_text())["lab"]["epochs"] == 0
    assert output.count("the lab stage is skipped") == 1  # once for the run, not per model


def test_card_records_untrained_labs_and_hides_them(run: tuple[Path, str]) -> None:
    _, card = load_inference_model(RunFolder(run[0]).model)
    assert {e["status"] for e in card.outputs["lab"].values()} == {"untrained"}
    assert set(card.not_learned("lab")) == set(card.lab_labels)
    assert card.outputs["diagnosis"]["atrial_fibrillation"]["train_positives"] > 0
    assert card.min_auroc == 0.6
    text = (RunFolder(run[0]).model / CARD_MARKDOWN).read_text()
    assert f"not learned, never shown as results ({len(card.lab_labels)})" in text


def test_the_report_flags_every_output_the_model_did_not_learn(run: tuple[Path, str]) -> None:
    _, card = load_inference_model(RunFolder(run[0]).model)
    report = RunFolder(run[0]).report.read_text()
    assert re.search(rf"lab abnormality outputs learned</th><td[^>]*>0 of {len(card.lab_labels)} ",
                     report)
    flagged = report.count("NOT LEARNED (untrained)")
    untrained = sum(e["status"] == "untrained" for task in card.outputs.values()
                    for e in task.values())
    assert flagged == untrained >= len(card.lab_labels)


def test_predict_and_explain_leave_untrained_labs_out(run: tuple[Path, str], shared_data: Path,
                                                      tmp_path: Path) -> None:
    model = RunFolder(run[0]).model
    result = runner.invoke(app, ["predict", "--model", str(model),
                                 "--wfdb", str(shared_data / CHAPMAN)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["lab_abnormalities"] == {}
    assert payload["not_learned"]["lab"]["potassium_high"] == (
        "not learned: never trained (no training ECG has a known value)")
    explained = runner.invoke(app, ["explain", "--model", str(model), "--wfdb",
                                    str(shared_data / CHAPMAN), "--out", str(tmp_path / "x")])
    assert explained.exit_code == 0, explained.output
    data = json.loads((tmp_path / "x" / "explanation.json").read_text())
    assert data["lab_abnormalities"] == {} and all(not t["supporting_labs"] for t in data["top"])
    assert set(data["not_learned"]["lab"]) == {"potassium_high", "potassium_low",
                                               "hemoglobin_low"}


def test_explain_label_option_and_its_errors(run: tuple[Path, str], shared_data: Path,
                                             tmp_path: Path) -> None:
    model, record = RunFolder(run[0]).model, str(shared_data / CHAPMAN)
    chosen = runner.invoke(app, ["explain", "--model", str(model), "--wfdb", record, "--out",
                                 str(tmp_path / "a"), "--label", "heart_failure", "--top", "1"])
    assert chosen.exit_code == 0, chosen.output
    data = json.loads((tmp_path / "a" / "explanation.json").read_text())
    assert [t["label"] for t in data["top"]] == ["heart_failure"]
    wrong = runner.invoke(app, ["explain", "--model", str(model), "--wfdb", record, "--out",
                                str(tmp_path / "b"), "--label", "afib"])
    assert wrong.exit_code == 1 and "--label 'afib': not a diagnosis" in wrong.output


def test_min_steps_adds_passes_for_small_sites() -> None:
    settings = StageConfig(epochs=15, min_steps=300)
    passes = planned_passes(settings, 150, 64)  # 150 training ECGs: 2 steps a pass
    assert passes == 9 and 15 * (150 * passes // 64) >= 300 > 15 * (150 * (passes - 1) // 64)
    assert planned_passes(settings, 38, 64) == 34  # fewer ECGs than a batch
    assert 15 * (38 * 34 // 64) >= 300
    assert planned_passes(settings, 2560, 64) == 1  # a large site: one pass an epoch
    assert planned_passes(StageConfig(epochs=0, min_steps=300), 150, 64) == 1  # off stays off


def test_passes_draw_every_row_each_pass_with_fresh_crops(tmp_path: Path) -> None:
    store = SiteStore.open(make_store(tmp_path / "store", 20, ecgs_per_patient=1,
                       separable=True))
    data = CropDataset([(store, store.indices("train"))], crop=50, train=True, seed=1)
    loader = epoch_loader(data, batch_size=4, epoch=0, shuffle=True, seed=1, passes=3)
    order = list(loader.sampler)
    assert len(loader) == 3 * len(data) // 4 and sorted(o % len(data) for o in order) == sorted(
        list(range(len(data))) * 3)
    first, again = data[0]["ecg"], data[len(data)]["ecg"]  # the same row, a later pass
    assert not torch.equal(first, again)


def test_budget_warnings_name_the_stage_and_the_fix(tmp_path: Path, caplog) -> None:
    store = make_store(tmp_path / "store", 40, ecgs_per_patient=1,
                       separable=True)
    sets = [item for override in tiny_overrides() for item in ("--set", override)]
    with caplog.at_level(logging.WARNING):
        result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "r"),
                                     "--models", "signal-only", *sets])
    assert result.exit_code == 0, result.output
    text = " ".join(caplog.text.split())
    assert "stage diagnosis: 1 optimizer steps (1 epochs x 1 of batch 16 on 24 training" in text
    assert "stage pretrain" not in text  # signal-only does not pretrain
    assert "raise diagnosis.epochs or set diagnosis.min_steps" in text
    assert "positive ECGs in the test split" in text and "--cv K" in text


def test_cv_scores_every_ecg_once_out_of_fold(tmp_path: Path) -> None:
    store = make_store(tmp_path / "store", 60, ecgs_per_patient=1,
                       separable=True)
    sets = [item for override in tiny_overrides() for item in ("--set", override)]
    result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "cv"),
                                 "--models", "signal-only", "--cv", "3", *sets])
    assert result.exit_code == 0, result.output
    summary = json.loads(RunFolder(tmp_path / "cv").cv_summary.read_text())
    oof = pd.read_parquet(RunFolder(tmp_path / "cv").oof_predictions)
    model = oof[oof["model"] == "signal-only"]
    cohort = pd.read_parquet(store / "cohort.parquet")
    scored = cohort[cohort[["dx_atrial_fibrillation", "dx_heart_failure"]].notna().any(axis=1)
                    | cohort.filter(like="abn_").notna().any(axis=1)]
    assert sorted(model["row"]) == sorted(scored.index)  # each ECG with a label, exactly once
    assert set(model["fold"]) == {0, 1, 2}
    af = summary["signal-only"]["diagnosis"]["labels"]["atrial_fibrillation"]
    assert af["positives"] == int(cohort["dx_atrial_fibrillation"].sum())
    assert af["auroc"] is not None and len(af["auroc_ci"]) == 2
    naive = oof.loc[oof["model"] == "naive", "p_dx_atrial_fibrillation"]
    assert naive.nunique() == 1  # one constant: the prevalence
    assert summary["naive"]["diagnosis"]["macro_auroc"] == 0.5
    assert "signal-only: 3-fold out-of-fold dx macro AUROC" in result.output


def test_explain_draws_a_window_of_a_long_record_at_its_own_rate(tmp_path: Path) -> None:
    """38 s at 1000 Hz with a 2 ms pacing spike at 24 s: --window 20 shows 20-30 s at 1000 Hz,
    the spike at full height (resampled to the model's 100 Hz it would be a fraction)."""
    from builders.inference_models import saved_model
    from builders.raw_sites import fixture_signal, write_record

    from fedecg.data.leads import CANONICAL_LEADS
    from fedecg.data.waveform import preprocess, read_ecg
    from fedecg.explain.explanation import explain_record, explanation_figure, record_window
    from fedecg.explain.inference import prepare_record

    signal = fixture_signal(1000, 38, list(CANONICAL_LEADS))
    signal[24000:24002, :] += 2.5  # [T, 12]: a 2 ms spike on every lead
    write_record(tmp_path / "long", signal, 1000, list(CANONICAL_LEADS))
    model_dir = saved_model(tmp_path / "model", fs=100.0, crop_samples=250)
    result = runner.invoke(app, ["explain", "--model", str(model_dir), "--wfdb",
                                 str(tmp_path / "long"), "--out", str(tmp_path / "x"),
                                 "--window", "20", "--method", "saliency", "--top", "1"])
    assert result.exit_code == 0, result.output
    model, card = load_inference_model(model_dir)
    record = read_ecg(tmp_path / "long")
    explanation = explain_record(model, card, prepare_record(record, card), top_diagnoses=1,
                                 method="saliency")
    trace = record_window(record, card, explanation.attribution_map, start_s=20)
    assert trace.fs == 1000 and trace.signal.shape == (12, 10000) and trace.start_s == 20
    spike = trace.signal[0, 4000:4002].max() - trace.signal[0, 3990]
    resampled = preprocess(record, 100, 10.0, 3800)[0]
    assert spike > 2.0 > resampled[2398:2403].max() - resampled[2390]
    assert trace.attribution.shape == trace.signal.shape
    figure = explanation_figure(explanation, trace)
    labels = [t.get_text() for t in figure.axes[5].get_xticklabels()]
    assert labels[0] == "20" and labels[-1] == "30"
    late = runner.invoke(app, ["explain", "--model", str(model_dir), "--wfdb",
                               str(tmp_path / "long"), "--out", str(tmp_path / "y"),
                               "--window", "40", "--method", "saliency", "--top", "1"])
    assert late.exit_code == 1 and "--window 40: the record" in " ".join(late.output.split())


def test_summary_has_per_label_auroc_cis_and_test_positives(run: tuple[Path, str]) -> None:
    summary = json.loads(RunFolder(run[0]).summary.read_text())
    entry = summary["signal-only"]
    for label, auroc in entry["diagnosis_auroc"].items():
        low, high = entry["diagnosis_auroc_low"][label], entry["diagnosis_auroc_high"][label]
        assert low <= high and low - 0.05 <= auroc <= high + 0.05  # percentile CI around it
        assert entry["diagnosis_positives"][label] > 0
    assert entry["lab_auroc_low"] == {} and entry["lab_positives"]["potassium_high"] == 0


def test_simulation_baselines_ignore_min_steps() -> None:
    """Federated rounds take no extra passes, so the pooled and local-only baselines do not
    either: the comparison stays at equal epochs."""
    from fedecg.config.federated import StudyConfig
    from fedecg.federated.baselines import baseline_config

    study = StudyConfig.model_validate({"train": {"diagnosis": {"min_steps": 300}},
                                             "federation": {"rounds": {"diagnosis": 4},
                                                            "local_epochs": 2}})
    assert baseline_config(study).diagnosis.epochs == 8
    assert baseline_config(study).diagnosis.min_steps == 0


def test_an_output_validated_on_fewer_than_five_positives_is_not_learned() -> None:
    """A validation AUROC of 1.0 on one positive (seen on the main job's tsh_high) says
    nothing: such an output is unvalidated, never shown as a result."""
    from fedecg.training.outputs import _entry

    train = np.array([1.0] * 8 + [0.0] * 100)
    few = np.array([1.0, 1.0] + [0.0] * 60)
    enough = np.array([1.0] * 5 + [0.0] * 60)
    assert _entry(train, few, 1.0, 0.6)["status"] == "unvalidated"
    assert _entry(train, enough, 0.7, 0.6)["status"] == "learned"
    assert _entry(train, enough, 0.5, 0.6)["status"] == "below threshold"
