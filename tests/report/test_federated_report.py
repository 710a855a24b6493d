"""The federated sections of report.html: the numbers a user reads, from a hand-built study.

The study's summary is assembled with the functions ``run_study`` uses (``mean_local``,
``combine_seeds``, ``report_models``) from hand-set values, so every expected cell below is
computed by hand from those values.
"""

from __future__ import annotations

import html
import json
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedecg.federated.baselines import mean_local
from fedecg.federated.orchestration import round_summary
from fedecg.federated.study_summary import combine_seeds, report_models
from fedecg.report import write_run_report
from fedecg.report.federated_report import SETTING_COLORS, bar_data, seed_results, settings
from fedecg.report.plots import plot_round_panels
from fedecg.report.provenance import read_provenance, record_run
from fedecg.report.run_report import trained_heads_only
from fedecg.report.study_rounds import stage_boundaries
from fedecg.run_folder import RunFolder

MODELS = {"signal-only": 0.55, "transfer": 0.56, "multimodal": 0.65}
SITES = ("site0", "site1")
LOCAL = {"site0": -0.04, "site1": -0.02}  # a site-alone model on the pooled test split
OWN = {"site0": -0.02, "site1": 0.04}  # ... and on its own site's test split


def _entry(dx: float) -> dict[str, Any]:
    dx, lab = round(dx, 4), round(dx - 0.05, 4)
    return {"diagnosis_macro_auroc": dx, "diagnosis_macro_auroc_ci": [dx - 0.05, dx + 0.05],
            "lab_macro_auroc": lab, "lab_macro_auroc_ci": [lab - 0.04, lab + 0.04],
            "diagnosis_macro_auprc": round(dx - 0.3, 4), "n_test": 80}


def _seed_result(shift: float) -> dict[str, Any]:
    result: dict[str, Any] = {"federated": {}, "sites": {}, "pooled": {}, "local_only": {}}
    for model, base in MODELS.items():
        value = base + shift
        result["federated"][model] = _entry(value)
        result["sites"][model] = {"site0": _entry(value - 0.01), "site1": _entry(value + 0.01)}
        result["pooled"][model] = {**_entry(value + 0.03), "per_store": {
            site: _entry(value + 0.03 + d) for site, d in zip(SITES, (-0.01, 0.01), strict=True)}}
        local = {site: {**_entry(value + LOCAL[site]), "per_store": {
            other: _entry(value + (OWN[site] if other == site else -0.1)) for other in SITES}}
            for site in SITES}
        result["local_only"][model] = {"sites": local, **mean_local(local)}
    result["naive"] = {"diagnosis_macro_auroc": 0.5, "lab_macro_auroc": 0.5}
    return result


def _summary(seeds: list[int]) -> dict[str, Any]:
    per_seed = {seed: _seed_result(0.02 * seed) for seed in seeds}
    summary = combine_seeds(per_seed)
    summary.update(seeds=seeds, model_names=list(MODELS),
                   partition={"sites": {"site0": {"train": 100, "val": 20, "test": 21},
                                        "site1": {"train": 300, "val": 60, "test": 59}}},
                   by_seed={str(k): v for k, v in per_seed.items()} if len(seeds) > 1 else {},
                   models=report_models(summary))
    return summary


def _train(round_: int, stage: str, site: int, **extra: Any) -> dict[str, Any]:
    return {"seed": 0, "model": "transfer", "stage": stage, "round": round_,
            "stage_round": round_, "kind": "train", "site_index": site, "site": f"site{site}",
            "num-examples": [100.0, 300.0][site], "val-loss": [1.0, 2.0][site] / round_,
            **extra}


def _lines(private: bool) -> list[dict[str, Any]]:
    stages = {1: "pretrain", 2: "pretrain", 3: "lab", 4: "diagnosis", 5: "diagnosis"}
    lines = []
    for round_, stage in stages.items():
        for site in (0, 1):
            dp = {"dp-epsilon": (1.0 + 0.5 * site) * round_, "dp-delta": 1e-4,
                  "dp-noise-multiplier": 1.1 + 0.1 * site, "dp-steps": 10.0 * round_,
                  "dp-stopped": float(site == 1 and round_ == 5)} if private else {}
            lines.append(_train(round_, stage, site, **dp))
        lines.append({"seed": 0, "model": "transfer", "stage": stage, "round": round_,
                      "stage_round": round_, "kind": "evaluate", "site_index": -1,
                      "site": "all", "num-examples": 80.0, "loss": 0.5, "diagnosis-auroc": 0.6})
    lines.append({"seed": 0, "model": "transfer", "stage": "diagnosis", "round": 4,
                  "stage_round": 1, "kind": "dropout", "site_index": 1, "site": "site1",
                  "node_id": 77, "reason": "timed out after 600 s"})
    lines.append({"seed": 0, "model": "transfer", "stage": "diagnosis", "round": 5,
                  "stage_round": 2, "kind": "rejected", "site_index": 0, "site": "site0",
                  "node_id": 76, "reason": "update norm 1e9 above the limit"})
    return lines


def _study(folder: Path, seeds: list[int], private: bool) -> Path:
    folder.mkdir()
    RunFolder(folder).summary.write_text(json.dumps(_summary(seeds)))
    text = "".join(json.dumps(line) + "\n" for line in _lines(private))
    RunFolder(folder).metrics.write_text(text)
    privacy = {"mode": "sample", "target_epsilon": 8.0, "delta": 1e-4} if private else {}
    RunFolder(folder).config.write_text(yaml.safe_dump({"privacy": privacy}))
    return folder


def _rows(page: str) -> list[list[str]]:
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>",
                                                                          row)]
            for row in re.findall(r"<tr>(.*?)</tr>", page)]


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory) -> str:
    run = _study(tmp_path_factory.mktemp("study") / "run", [0], private=True)
    return write_run_report(run).read_text()


def test_results_table_sets_federated_pooled_and_local_only_side_by_side(one_seed: str):
    rows = _rows(one_seed)
    assert ["transfer", "0.560 [0.510, 0.610]", "0.590 [0.540, 0.640]",
            "0.530 (sites 0.520–0.540)", "0.570", "-0.030"] in rows
    assert ["signal-only", "0.550 [0.500, 0.600]", "0.580 [0.530, 0.630]",
            "0.520 (sites 0.510–0.530)", "0.560", "-0.030"] in rows
    assert ["multimodal", "0.600 [0.560, 0.640]", "0.630 [0.590, 0.670]",
            "0.570 (sites 0.560–0.580)", "0.610", "-0.030"] in rows  # lab table
    assert ["naive (training prevalence)", "0.500", "0.500", "—", "—", "—"] in rows
    assert "seeds 0; bootstrap 95% CI" in one_seed
    assert "transfer · federated" not in one_seed  # no flat model·setting rows any more


def test_per_site_table_shows_each_model_at_each_site(one_seed: str):
    assert ["transfer @ site1 (59)", "0.570 [0.520, 0.620]", "0.600 [0.550, 0.650]",
            "0.600 [0.550, 0.650]", "0.520 [0.480, 0.560]", "0.550 [0.510, 0.590]",
            "0.550 [0.510, 0.590]"] in _rows(one_seed)


def test_site_events_are_listed_with_their_reason(one_seed: str):
    rows = _rows(one_seed)
    assert ["0", "transfer", "diagnosis", "4 (1)", "site1", "77", "dropout",
            "timed out after 600 s"] in rows
    assert ["0", "transfer", "diagnosis", "5 (2)", "site0", "76", "rejected",
            "update norm 1e9 above the limit"] in rows
    assert "No site dropped out" not in one_seed


def test_privacy_section_names_mechanism_unit_and_each_sites_final_budget(one_seed: str):
    rows = _rows(one_seed)
    assert ["transfer", "site0", "5.000", "0.0001", "1.100", "50", "no"] in rows
    assert ["transfer", "site1", "7.500", "0.0001", "1.200", "50", "yes"] in rows
    assert ["clipping norm", "1"] in rows and ["target ε", "8"] in rows
    mechanism = dict(r for r in rows if len(r) == 2)
    assert mechanism["mechanism"].startswith("DP-SGD at each site")
    assert mechanism["unit protected"].startswith("one ECG record")


def test_report_embeds_every_figure(one_seed: str):
    # results bars, 3 per-site bars, 1 curve figure (only transfer has rounds), ε per round
    assert len(re.findall(r'<img src="data:image/png;base64,', one_seed)) == 6


def test_several_seeds_give_mean_and_sd_and_a_per_seed_table_with_cis(tmp_path: Path):
    page = write_run_report(_study(tmp_path / "run", [0, 1], private=False)).read_text()
    rows = _rows(page)
    assert ["transfer", "0.570 ± 0.014", "0.600 ± 0.014", "0.540 ± 0.014", "0.580 ± 0.014",
            "-0.030 ± 0.000"] in rows
    assert ["transfer · seed 1", "0.580 [0.530, 0.630]", "0.610 [0.560, 0.660]",
            "0.550 (sites 0.540–0.560)", "0.530 [0.490, 0.570]", "0.560 [0.520, 0.600]",
            "0.500 (sites 0.490–0.510)"] in rows
    assert "mean ± sd over 2 seeds, per-seed CIs below" in page
    assert "No differential privacy in this study" in page


def test_a_study_without_events_says_so(tmp_path: Path):
    run = _study(tmp_path / "run", [0], private=False)
    kept = [x for x in _lines(False) if x["kind"] in ("train", "evaluate")]
    RunFolder(run).metrics.write_text("".join(json.dumps(x) + "\n" for x in kept))
    assert "No site dropped out or was rejected." in write_run_report(run).read_text()


def _evaluate(line: dict[str, Any]) -> dict[str, Any]:
    """A site's train line as the evaluate line of the aggregated model (val = 1/5 of test)."""
    return {**line, "kind": "evaluate", "val-num-examples": line["num-examples"] / 5}


def test_round_summary_weights_test_by_test_rows_and_validation_by_validation_rows():
    lines = [_evaluate(x) for x in _lines(False) if x["kind"] == "train" and x["round"] == 1]
    lines[0].update({"loss": 0.2, "val-num-examples": 60.0})  # site0: 100 test, 60 val rows
    lines[1].update({"loss": 0.6, "val-num-examples": 20.0})  # site1: 300 test, 20 val rows
    (merged,) = round_summary(lines, 1)
    assert merged["site"] == "all" and merged["num-examples"] == 400
    assert merged["val-num-examples"] == 80
    assert merged["loss"] == pytest.approx((100 * 0.2 + 300 * 0.6) / 400)
    assert merged["val-loss"] == pytest.approx((60 * 1.0 + 20 * 2.0) / 80)
    assert merged["val-diagnosis-auroc"] is None


def test_round_panels_draw_sites_all_stage_starts_and_events():
    lines = [_evaluate(x) for x in _lines(False) if x["kind"] == "train"]
    curves = lines + [merged for n in range(1, 6) for merged in round_summary(lines, n)]
    boundaries = stage_boundaries(_lines(False))
    assert boundaries == [(0.5, "pretrain"), (2.5, "lab"), (3.5, "diagnosis")]
    figure = plot_round_panels(curves, [("validation loss", "val-loss")],
                               boundaries=boundaries, marks=[4.0], emphasis="all", columns=1)
    ax = figure.axes[0]
    data = [line for line in ax.lines if len(line.get_xdata()) > 2]
    assert [line.get_label() for line in data] == ["site0", "site1", "all"]
    assert data[2].get_linewidth() > data[0].get_linewidth() and data[2].get_color() == "black"
    verticals = [(line.get_xdata()[0], line.get_color()) for line in ax.lines
                 if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]
    assert verticals == [(0.5, "grey"), (2.5, "grey"), (3.5, "grey"), (4.0, "red")]


def test_results_tables_are_named_and_show_auprc_and_the_test_size(one_seed: str):
    for task in ("Diagnosis macro AUROC", "Diagnosis macro AUPRC", "Lab-abnormality macro AUROC",
                 "Lab-abnormality macro AUPRC"):
        assert f"<h3>{task}</h3>" in one_seed
    assert "<th>federated macro AUPRC</th>" in one_seed
    # AUPRC = AUROC - 0.3 here; local-only: the site-alone models' mean, computed by the report
    assert ["transfer", "0.260", "0.290", "0.230 (sites 0.220–0.240)", "0.270",
            "-0.030"] in _rows(one_seed)
    assert "pooled test split of 80 ECGs" in one_seed


def test_the_run_section_names_test_size_sites_and_versions(one_seed: str):
    run = one_seed[one_seed.index("<h2>Run</h2>"):one_seed.index("<h2>Results")]
    assert "80 ECGs (pooled over the sites)" in run
    assert '<th scope="row">site site1</th><td>train 300, val 60, test 59</td>' in run
    assert "fedecg 0.1.0" in run and f"flwr {version('flwr')}" in run and "torch 2." in run
    assert "not recorded (no provenance.json" in run


def test_provenance_recorded_by_a_command_is_shown(tmp_path: Path):
    run = _study(tmp_path / "run", [0], private=False)
    record_run(run, ["simulate", "--out", "runs/x"], started=1_000.0, finished=1_185.0)
    assert read_provenance(run)["seconds"] == 185.0
    page = write_run_report(run).read_text()
    assert "fedecg simulate --out runs/x" in page and "3m05s" in page
    assert "resumed" not in page[page.index("<h2>Run</h2>"):page.index("<h2>Results")]
    assert "1970-01-01T00:19:45+00:00" in page


def test_local_only_bars_have_no_whiskers_for_one_seed():
    results = seed_results(_summary([0]))
    values, errors = bar_data(results, {"transfer": settings("transfer")},
                              "diagnosis_macro_auroc")
    assert set(values) == set(SETTING_COLORS) and values["local-only"]["transfer"] == 0.53
    assert errors["federated"]["transfer"] == pytest.approx([0.51, 0.61])
    assert "transfer" not in errors["local-only"]  # a mean over sites has no bootstrap CI


def test_a_heads_auroc_is_dropped_before_its_stage():
    lab = {"stage": "lab", "val-loss": 1.0, "val-diagnosis-auroc": 0.4, "val-lab-auroc": 0.6}
    assert trained_heads_only(lab) == {"stage": "lab", "val-loss": 1.0, "val-lab-auroc": 0.6}
    pretrain = {"stage": "pretrain", "val_loss": 2.0, "val_lab_macro_auroc": 0.5}
    assert trained_heads_only(pretrain) == {"stage": "pretrain", "val_loss": 2.0}
    dx = {"stage": "diagnosis", "val_diagnosis_macro_auroc": 0.7, "val_lab_macro_auprc": 0.3}
    assert trained_heads_only(dx) == dx
