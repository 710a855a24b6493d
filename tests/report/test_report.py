"""The HTML run report: self-contained, shows the three-model table, tolerant of optional parts."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from builders.tiny import tiny_classifier
from matplotlib.container import BarContainer

from fedecg.errors import InputFileError, TableError
from fedecg.report import HtmlPage, write_run_report
from fedecg.report.plots import (
    format_with_ci,
    metric_table,
    plot_curve_grid,
    plot_curves,
    plot_grouped_bars,
)
from fedecg.report.run_report import curve_rows, gap_closed, load_summary, order_models
from fedecg.run_folder import RunFolder

SUMMARY = {
    "multimodal": {"diagnosis_macro_auroc": 0.82, "diagnosis_macro_auroc_ci": [0.79, 0.85],
                   "lab_macro_auroc": 0.77, "lab_macro_auroc_ci": [0.73, 0.81],
                   "diagnosis_auroc": {"atrial_fibrillation": 0.9, "anemia": 0.74},
                   "lab_auroc": {"potassium_high": 0.8, "hemoglobin_low": 0.74}},
    "signal-only": {"diagnosis_macro_auroc": 0.70, "diagnosis_macro_auroc_ci": [0.67, 0.73],
                    "lab_macro_auroc": 0.61, "lab_macro_auroc_ci": [0.58, 0.64],
                    "diagnosis_auroc": {"atrial_fibrillation": 0.88, "anemia": 0.52},
                    "lab_auroc": {"potassium_high": 0.63, "hemoglobin_low": 0.59}},
    "transfer": {"diagnosis_macro_auroc": 0.76, "diagnosis_macro_auroc_ci": [0.731, 0.789],
                 "lab_macro_auroc": 0.72, "lab_macro_auroc_ci": [0.69, 0.75],
                 "diagnosis_auroc": {"atrial_fibrillation": 0.89, "anemia": 0.63},
                 "lab_auroc": {"potassium_high": 0.75, "hemoglobin_low": None}},
    "naive": {"diagnosis_macro_auroc": 0.5, "lab_macro_auroc": 0.5},
    "seed": 3,
}
METRICS = [
    {"model": "transfer", "stage": "pretrain", "epoch": 0, "train_loss": 2.1, "val_loss": 2.0},
    {"model": "transfer", "stage": "pretrain", "epoch": 1, "train_loss": 1.5, "val_loss": 1.6},
    {"model": "transfer", "stage": "diagnosis", "epoch": 0, "train_loss": 0.7,
     "val_dx_macro_auroc": 0.66},
    {"model": "signal-only", "stage": "diagnosis", "epoch": 0, "train_loss": 0.8,
     "val_dx_macro_auroc": 0.6},
    {"model": "signal-only", "stage": "diagnosis", "epoch": 1, "train_loss": 0.6,
     "val_dx_macro_auroc": 0.65},
]


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    RunFolder(run).summary.write_text(json.dumps(SUMMARY))
    lines = [json.dumps(r) for r in METRICS]
    RunFolder(run).metrics.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]) + "\n")
    RunFolder(run).config.write_text("seed: 3\ntrain:\n  epochs: 2\n")
    return run


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_is_self_contained_and_shows_the_three_model_table(run_dir: Path):
    path = write_run_report(run_dir)
    assert path == RunFolder(run_dir).report
    page = path.read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page)
    assert "<script" not in page.lower() and "@import" not in page
    assert len(re.findall(r"<img ", page)) == len(_images(page)) == 4
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in _images(page))
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td></tr>", page)
    assert rows == [
        ("naive", "0.500", "0.500"),
        ("signal-only", "0.700 [0.670, 0.730]", "0.610 [0.580, 0.640]"),
        ("transfer", "0.760 [0.731, 0.789]", "0.720 [0.690, 0.750]"),
        ("multimodal", "0.820 [0.790, 0.850]", "0.770 [0.730, 0.810]"),
    ]
    assert "transfer closes 50% of the diagnosis macro AUROC gap" in page
    assert "train:\n  epochs: 2" in page


def test_report_without_optional_parts_still_renders(run_dir: Path):
    RunFolder(run_dir).metrics.unlink()
    RunFolder(run_dir).config.unlink()
    page = write_run_report(run_dir).read_text()
    assert "No metrics.jsonl with epoch records" in page
    assert "Configuration" not in page
    assert "0.760 [0.731, 0.789]" in page


def test_missing_or_broken_summary_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InputFileError, match=r"summary\.json not found"):
        write_run_report(tmp_path)
    RunFolder(tmp_path).summary.write_text("{oops")
    with pytest.raises(TableError, match="not valid JSON"):
        write_run_report(tmp_path)
    RunFolder(tmp_path).summary.write_text(json.dumps({"transfer": {"auc": 0.7}}))
    with pytest.raises(TableError, match="no model entry"):
        load_summary(RunFolder(tmp_path))
    RunFolder(tmp_path).summary.write_text(json.dumps({"transfer": {"lab_macro_auroc": "high"}}))
    with pytest.raises(TableError, match=r"summary\.json: field transfer\.lab_macro_auroc: .*"
                                         r"\(found \"high\"\)"):
        write_run_report(tmp_path)
    assert not RunFolder(tmp_path).report.exists()


def test_summary_entries_under_models_key_and_ordering(tmp_path: Path):
    entries = {name: entry for name, entry in SUMMARY.items() if name != "seed"}
    RunFolder(tmp_path).summary.write_text(json.dumps({"models": entries, "seed": 1}))
    models = load_summary(RunFolder(tmp_path))
    assert order_models(list(models)) == ["naive", "signal-only", "transfer", "multimodal"]
    assert order_models(["b-site", "transfer", "a-site"]) == ["transfer", "b-site", "a-site"]


def test_gap_closed_is_hand_computed():
    assert gap_closed(SUMMARY) == pytest.approx((0.76 - 0.70) / (0.82 - 0.70))
    assert gap_closed(SUMMARY, "lab_macro_auroc") == pytest.approx((0.72 - 0.61) / 0.16)
    assert gap_closed({"transfer": SUMMARY["transfer"]}) is None
    flat = {m: {"diagnosis_macro_auroc": 0.7} for m in ("signal-only", "transfer", "multimodal")}
    assert gap_closed(flat) is None


def test_format_with_ci_and_metric_table():
    assert format_with_ci(0.7954, [0.77149, 0.8183]) == "0.795 [0.771, 0.818]"
    assert format_with_ci(0.7, None) == "0.700"
    assert format_with_ci(float("nan"), [0.1, 0.2]) == "—"
    assert format_with_ci(None, None) == "—"
    headers, rows = metric_table({"fed": {"a": 0.5, "a_ci": [0.4, 0.6]}}, ["fed", "local"],
                                 [("a", "A")], row_header="training")
    assert headers == ["training", "A"]
    assert rows == [["fed", "0.500 [0.400, 0.600]"], ["local", "—"]]


def test_grouped_bars_draw_the_given_values_and_intervals():
    values = {"site-a": {"x": 0.8, "y": 0.6}, "site-b": {"x": 0.7}}
    errors = {"site-a": {"x": [0.75, 0.9], "y": [0.5, 0.65]}}
    figure = plot_grouped_bars(values, errors)
    ax = figure.axes[0]
    bars_a, bars_b = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [bar.get_width() for bar in bars_a] == pytest.approx([0.8, 0.6])
    assert bars_b[0].get_width() == pytest.approx(0.7)
    assert np.isnan(bars_b[1].get_width())  # missing value: a gap, not a zero
    texts = [text.get_text() for text in ax.texts]
    assert texts == ["0.80", "0.60", "0.70", "n/a"]  # every bar says its value
    segments = bars_a.errorbar.lines[2][0].get_segments()
    assert [tuple(s[:, 0]) for s in segments] == [pytest.approx((0.75, 0.9)),
                                                  pytest.approx((0.5, 0.65))]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x", "y"]


def test_curves_one_line_per_group_skipping_incomplete_records():
    records = [{"round": 1, "auroc": 0.6, "site": "a", "lo": 0.5, "hi": 0.7},
               {"round": 2, "auroc": 0.7, "site": "a", "lo": 0.6, "hi": 0.8},
               {"round": 1, "auroc": 0.5, "site": "b", "lo": 0.4, "hi": 0.6},
               {"round": 2, "site": "b"}]
    figure = plot_curves(records, "round", "auroc", group="site", band=("lo", "hi"))
    ax = figure.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert list(ax.lines[0].get_ydata()) == [0.6, 0.7]
    assert len(ax.collections) == 2  # one shaded CI band per group


def test_curve_grid_hides_empty_cells_and_styles_second_metrics():
    figure = plot_curve_grid(METRICS, "epoch", [["train_loss", "val_loss"],
                                                ["val_dx_macro_auroc"]],
                             panel="stage", group="model", panels=["pretrain", "diagnosis"])
    visible = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == [
        "pretrain\ntrain loss (solid)\nval loss (dashed)", "diagnosis\ntrain loss (solid)",
        "diagnosis\nval dx macro AUROC"]
    pretrain = visible[0]
    assert [(line.get_linestyle(), line.get_label()) for line in pretrain.lines] == [
        ("-", "transfer"), ("--", "_nolegend_")]


def test_curve_rows_prefer_total_losses():
    assert curve_rows(METRICS) == [["train_loss", "val_loss"], ["val_dx_macro_auroc"]]
    parts = [{"epoch": 1, "train_dx_loss": 1.0, "train_lab_loss": 2.0, "lr": 0.1}]
    assert curve_rows(parts) == [["train_dx_loss", "train_lab_loss"]]
    assert curve_rows([{"epoch": 1, "lr": 0.1}]) == []


def test_per_site_section_for_pooled_stores(run_dir: Path):
    summary = json.loads(RunFolder(run_dir).summary.read_text())
    summary["transfer"]["per_store"] = {
        "site-a": {"diagnosis_macro_auroc": 0.71, "diagnosis_macro_auroc_ci": [0.6, 0.8]},
        "site-b": {"diagnosis_macro_auroc": 0.81, "lab_macro_auroc": 0.64}}
    RunFolder(run_dir).summary.write_text(json.dumps(summary))
    page = write_run_report(run_dir).read_text()
    assert "<tr><td>transfer @ site-a</td><td>0.710 [0.600, 0.800]</td><td>—</td>" in page
    assert "<tr><td>transfer @ site-b</td><td>0.810</td><td>0.640</td>" in page
    assert "<h2>Per site</h2>" in page
    assert len(_images(page)) == 6  # per site: diagnosis and lab charts


def test_html_page_escapes_text_from_files(tmp_path: Path):
    page = HtmlPage("<run>")
    page.table(["label"], [["<script>alert(1)</script>"], [0.12345], [None]])
    text = page.write(tmp_path / "p.html").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert '<td class="num">0.123</td>' in text and "<td>—</td>" in text


def test_report_shows_the_model_card(run_dir: Path):
    from fedecg.models import ModelCard, save_inference_model

    model = tiny_classifier(2, 2)
    card = ModelCard(model_name="transfer", diagnosis_labels=["a", "b"],
                     lab_labels=["k_high", "k_low"], lead_order=["I"], fs=100.0,
                     crop_samples=250, data_summary={"train_ecgs": 1234, "sites": {"n": 2}},
                     privacy={"epsilon": 3.5, "delta": 1e-5})
    save_inference_model(RunFolder(run_dir).model, model, card)
    page = write_run_report(run_dir).read_text()
    assert '<th scope="row">exported model</th><td>transfer, trained centrally' in page
    assert '<th scope="row">training data: train ecgs</th><td class="num">1234</td>' in page
    assert '<th scope="row">training data: sites.n</th><td class="num">2</td>' in page
    assert '<th scope="row">privacy: epsilon</th><td class="num">3.500</td>' in page
    assert '<a href="model/model_card.md">' in page and "<pre>{" not in page  # no raw JSON


def test_report_names_its_tables_and_shows_auprc_n_test_and_versions(run_dir: Path):
    summary = json.loads(RunFolder(run_dir).summary.read_text())
    summary["transfer"].update(diagnosis_macro_auprc=0.31, diagnosis_macro_auprc_ci=[0.25, 0.37],
                               n_test=282)
    summary["transfer"]["diagnosis_skipped"] = ["hyperkalemia"]
    RunFolder(run_dir).summary.write_text(json.dumps(summary))
    page = write_run_report(run_dir).read_text()
    assert "<h3>Macro AUROC and AUPRC, diagnosis and lab abnormality</h3>" in page
    assert "<th>diagnosis macro AUPRC [95% CI]</th>" in page
    assert "<td>0.310 [0.250, 0.370]</td>" in page
    assert "Test split of 282 ECGs" in page
    run = page[page.index("<h2>Run</h2>"):page.index("<h2>Results")]
    assert "centralized training (fedecg train)" in run and "fedecg 0.1.0" in run
    assert "<h3>Diagnosis labels</h3>" in page and "<h3>Lab abnormality labels</h3>" in page
    assert "n/a: the label had a single class" in page
