"""``fedecg sweep privacy`` through typer's CliRunner, on finished per-ε studies.

The studies themselves are Flower simulations (too slow for a unit test); here each ε folder
already holds what ``run_study`` leaves behind (``summary.json`` with its keys, and
``metrics.jsonl`` lines with the sites' ε), so the sweep only assembles table, plot and summary.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from builders.tiny import tiny_classifier
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.errors import ConfigError
from fedecg.io import OutputKind, mark_output
from fedecg.models.io import ModelCard, load_inference_model, save_inference_model
from fedecg.privacy.sweep import TABLE_FILE, parse_epsilons
from fedecg.report.privacy_plot import plot_records
from fedecg.run_folder import RunFolder

AUROC = {("inf", "signal-only"): (0.70, 0.62), ("inf", "transfer"): (0.80, 0.71),
         ("8", "signal-only"): (0.64, 0.58), ("8", "transfer"): (0.74, 0.66)}


def finished_study(run_dir: Path, label: str, site_epsilons: dict[str, list[float]]) -> None:
    """What ``run_study`` writes: summary.json (federated entries) and metrics.jsonl, in a
    folder marked as a study, inside one the sweep marked before it started the study."""
    run_dir.mkdir(parents=True)
    mark_output(run_dir.parent, OutputKind.SWEEP)
    mark_output(run_dir, OutputKind.STUDY)
    federated = {model: {"diagnosis_macro_auroc": dx, "diagnosis_macro_auroc_ci": [dx - .05,
                                                                                   dx + .05],
                         "lab_macro_auroc": lab, "lab_macro_auroc_ci": [lab - .04, lab + .04]}
                 for (eps, model), (dx, lab) in AUROC.items() if eps == label}
    RunFolder(run_dir).summary.write_text(json.dumps(
        {"federated": federated, "pooled": {}, "local_only": {}, "sites": {}, "naive": {}}))
    lines = []
    for model in federated:
        for site, spent in site_epsilons.items():
            for round_index, epsilon in enumerate(spent, start=1):
                line = {"seed": 0, "model": model, "stage": "lab", "round": round_index,
                        "kind": "train", "site_index": int(site[-1]), "site": site}
                if math.isfinite(epsilon):
                    line.update({"dp-epsilon": epsilon, "dp-delta": 1e-3,
                                 "dp-noise-multiplier": 0.9})
                lines.append(json.dumps(line))
    RunFolder(run_dir).metrics.write_text("\n".join(lines) + "\n")
    mode = "none" if label == "inf" else "sample"
    RunFolder(run_dir).config.write_text(f"privacy:\n  mode: {mode}\n  target_epsilon: {label}\n")


def exported_model(run_dir: Path) -> None:
    """The study's ``model/`` folder, as ``export_model`` writes it (no privacy entry yet)."""
    model = tiny_classifier(2, 2)
    card = ModelCard(model_name="transfer", diagnosis_labels=["a", "b"], lab_labels=["c", "d"],
                     lead_order=["I"] * 12, fs=100.0, crop_samples=32)
    save_inference_model(RunFolder(run_dir).model, model, card)


def test_sweep_assembles_table_plot_and_summary_from_finished_studies(tmp_path):
    out = tmp_path / "sweep"
    finished_study(out / "epsilon-inf", "inf", {"site0": [math.inf], "site1": [math.inf]})
    finished_study(out / "epsilon-8", "8", {"site0": [3.1, 7.9], "site1": [2.0, 6.5]})
    exported_model(out / "epsilon-8")
    result = CliRunner().invoke(app, ["sweep", "privacy", "--epsilons", "8,inf", "--out",
                                      str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / TABLE_FILE).open()))
    assert [(r["epsilon"], r["model"]) for r in rows] == [
        ("8", "signal-only"), ("8", "transfer"), ("inf", "signal-only"), ("inf", "transfer")]
    transfer = rows[1]
    assert float(transfer["diagnosis_macro_auroc"]) == pytest.approx(0.74)
    assert float(transfer["diagnosis_macro_auroc_low"]) == pytest.approx(0.69)
    assert float(transfer["max_site_epsilon"]) == pytest.approx(7.9)
    assert float(transfer["dx_auroc_kept"]) == pytest.approx((0.74 - 0.5) / (0.80 - 0.5))
    assert rows[3]["max_site_epsilon"] == ""  # no DP: no ε reported
    summary = json.loads(RunFolder(out).summary.read_text())
    assert summary["epsilons"] == ["8", "inf"]
    assert summary["runs"]["8"]["sites"]["transfer"]["site1"] == {
        "epsilon": 6.5, "delta": 1e-3, "noise_multiplier": 0.9}
    card = load_inference_model(RunFolder(out / "epsilon-8").model)[1].privacy
    assert card == summary["runs"]["8"]["model_card_privacy"]
    assert card["unit_protected"].startswith("one ECG record")
    assert card["sites"]["site0"] == {"epsilon": 7.9, "delta": 1e-3, "noise_multiplier": 0.9}
    assert card["target_epsilon"] == 8 and card["clipping_norm"] == 1.0
    assert summary["runs"]["inf"]["model_card_privacy"] is None
    assert (out / "privacy_utility.png").stat().st_size > 0
    for path in (out / "privacy_utility.png", out / TABLE_FILE, RunFolder(out).summary):
        assert path.stat().st_mode & 0o777 == 0o640  # results, no patient data
    assert "privacy-utility" in result.output


def test_a_finite_budget_study_without_reported_epsilon_is_refused(tmp_path):
    out = tmp_path / "sweep"
    finished_study(out / "epsilon-8", "8", {"site0": [math.inf]})  # trained, but no ε lines
    result = CliRunner().invoke(app, ["sweep", "privacy", "--epsilons", "8", "--out", str(out)])
    assert result.exit_code == 1
    assert "was not differentially private" in result.output
    assert not (out / TABLE_FILE).exists()


def test_a_study_summary_that_does_not_validate_is_one_line_naming_file_and_field(tmp_path):
    out = tmp_path / "sweep"
    finished_study(out / "epsilon-8", "8", {"site0": [7.9]})
    summary = RunFolder(out / "epsilon-8").summary
    written = json.loads(summary.read_text())
    written["federated"]["transfer"]["lab_macro_auroc_ci"] = "wide"
    summary.write_text(json.dumps(written))
    result = CliRunner().invoke(app, ["sweep", "privacy", "--epsilons", "8", "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"{summary}: field federated.transfer.lab_macro_auroc_ci:" in " ".join(
        result.output.split())
    assert not (out / TABLE_FILE).exists()


def test_bad_epsilons_fail_with_one_line():
    result = CliRunner().invoke(app, ["sweep", "privacy", "--epsilons", "1,x", "--out", "o"])
    assert result.exit_code == 1
    assert "--epsilons '1,x': 'x' is not a new positive number" in result.output


def test_parse_epsilons():
    assert parse_epsilons("1, 3,8,inf") == [1.0, 3.0, 8.0, math.inf]
    for bad in ("0,1", "1,1", "-2", ""):
        with pytest.raises(ConfigError):
            parse_epsilons(bad)


def test_no_dp_point_is_drawn_at_twice_the_largest_budget():
    rows = [{"target_epsilon": eps, "model": "transfer", "diagnosis_macro_auroc": 0.7,
             "diagnosis_macro_auroc_low": 0.6, "diagnosis_macro_auroc_high": 0.8,
             "lab_macro_auroc": 0.6, "lab_macro_auroc_low": 0.5, "lab_macro_auroc_high": 0.7}
            for eps in (1.0, 8.0, math.inf)]
    records, at_inf = plot_records(rows)
    assert at_inf == 16.0
    assert sorted({r["epsilon"] for r in records}) == [1.0, 8.0, 16.0]
    assert {r["task"] for r in records} == {"diagnosis", "lab"}


def test_client_level_budgets_come_from_the_server_ledger(tmp_path):
    from fedecg.privacy.accounting import Ledger

    out = tmp_path / "sweep"
    run_dir = out / "epsilon-8"
    finished_study(run_dir, "8", {"site0": [math.inf]})  # sites report no ε under client DP
    RunFolder(run_dir).config.write_text("privacy: {mode: client, target_epsilon: 8}\n")
    ledger = Ledger(delta=0.01, history=[(1.5, 1.0, 10)])
    for model in ("signal-only", "transfer"):
        folder = RunFolder(run_dir).federated_run(0, model).path
        folder.mkdir(parents=True)
        (folder / "client-dp-ledger.json").write_text(json.dumps(
            {**ledger.to_record(), "noise-multiplier": 1.5}))
    result = CliRunner().invoke(app, ["sweep", "privacy", "--epsilons", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(RunFolder(out).summary.read_text())
    assert summary["runs"]["8"]["sites"]["transfer"] == {
        "all": {"epsilon": ledger.epsilon(), "delta": 0.01, "noise_multiplier": 1.5}}
    rows = list(csv.DictReader((out / TABLE_FILE).open()))
    assert float(rows[1]["max_site_epsilon"]) == pytest.approx(ledger.epsilon())
