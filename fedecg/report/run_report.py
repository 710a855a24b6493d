"""``RUN/report.html`` from a run folder: the three-model table, AUROC charts, curves.

Reads ``summary.json`` (required), and when present ``metrics.jsonl``, ``config.yaml`` and the
model card in ``model/``. A missing optional part becomes a note on the page, not an error.
A ``fedecg simulate`` study gets the federated sections of ``fedecg.report.federated_report``
(federated vs pooled vs local-only, per site, curves per round, site events, privacy).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedecg.data.progress import format_duration
from fedecg.errors import TableError
from fedecg.report.card_section import card_section
from fedecg.report.html import HtmlPage
from fedecg.report.plots import (
    metric_table,
    plot_curve_grid,
    plot_grouped_bars,
)
from fedecg.report.provenance import read_provenance
from fedecg.run_folder import MODEL_KEYS, RunFolder, Summary

logger = logging.getLogger(__name__)

MODEL_ORDER = ("naive", "signal-only", "transfer", "multimodal")
"""Models shown first, in this order; any other model in the summary follows."""

MODEL_COLORS = {"naive": "#9e9e9e", "signal-only": "#1f77b4", "transfer": "#d62728",
                "multimodal": "#2ca02c"}
"""One colour per model, the same in every figure of the report."""

_MACRO_COLUMNS = (
    ("diagnosis_macro_auroc", "diagnosis macro AUROC [95% CI]"),
    ("lab_macro_auroc", "lab-abnormality macro AUROC [95% CI]"),
    ("diagnosis_macro_auprc", "diagnosis macro AUPRC [95% CI]"),
    ("lab_macro_auprc", "lab-abnormality macro AUPRC [95% CI]"),
)
_X_CANDIDATES = ("epoch", "round", "step")
_MAX_PER_ROW = 3


def load_summary(folder: RunFolder) -> dict[str, dict[str, Any]]:
    """The model entries of a run's ``summary.json`` (``Summary.model_entries``):
    ``{model: {metric: value}}``. Raises ``InputFileError`` if the file is missing and
    ``TableError`` if it is not a summary or holds no model entry (``RunFolder.read_summary``)."""
    return model_entries(folder.read_summary(), folder.summary)


def model_entries(summary: Summary, path: Path) -> dict[str, dict[str, Any]]:
    """The model entries of a read summary, as the report's tables take them."""
    models = {name: entry.model_dump(exclude_unset=True)
              for name, entry in summary.model_entries().items()}
    if not models:
        raise TableError(f"{path}: no model entry found; expected an object like "
                         '{"transfer": {"diagnosis_macro_auroc": 0.8, ...}, ...} with keys '
                         f"{list(MODEL_KEYS)}")
    return models


def order_models(names: list[str]) -> list[str]:
    """Known models first in ``MODEL_ORDER``, then the rest in file order."""
    known = [name for name in MODEL_ORDER if name in names]
    return known + [name for name in names if name not in known]


def load_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl``; a missing file gives ``[]`` and bad lines are skipped."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s:%d: not a JSON object; line skipped in the report", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def gap_closed(models: Mapping[str, Mapping[str, Any]], key: str = "diagnosis_macro_auroc",
               ) -> float | None:
    """Share of the signal-only → multimodal gap in ``key`` that transfer closes, or None."""
    try:
        low, mid, high = (float(models[m][key]) for m in ("signal-only", "transfer", "multimodal"))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (low, mid, high)) or high <= low:
        return None
    return (mid - low) / (high - low)


def write_run_report(run_dir: Path) -> Path:
    """Write ``run_dir/report.html`` and return its path (see the module docstring)."""
    folder = RunFolder(run_dir)
    summary = folder.read_summary()
    models = model_entries(summary, folder.summary)
    page = HtmlPage(f"fedecg run report — {folder.path.resolve().name}")
    records = load_metrics(folder.metrics)
    if summary.is_study:
        from fedecg.report import federated_report as study  # loads Flower and Opacus

        written = summary.as_dict()
        run_section(page, folder.path, study.study_facts(written))
        study.study_results(page, written)
        study.per_label_section(page, written)
        study.study_rounds(page, written, records, folder.path)
        exported = study.EXPORTED
    else:
        names = order_models(list(models))
        run_section(page, folder.path, centralized_facts(summary, names))
        _results_section(page, models, names)
        _per_label_section(page, models, names)
        _per_site_section(page, models, names)
        _curves_section(page, records)
        exported = "trained centrally on the pooled stores"
    card_section(page, folder.model, exported)
    _config_section(page, folder.config)
    return page.write(folder.report)


def run_section(page: HtmlPage, run_dir: Path, facts: list[tuple[str, object]]) -> None:
    """What ran, when, how long, by which command and versions, on what data."""
    page.heading("Run")
    origin = read_provenance(run_dir)
    versions = " · ".join(f"{k} {v}" for k, v in origin["versions"].items())
    if origin["recorded"]:
        resumed = " (this command resumed an interrupted run; the interrupted part is not " \
                  "counted)" if origin.get("resumed") else ""
        timing = [("finished", origin["finished"]),
                  ("duration", format_duration(origin["seconds"]) + resumed),
                  ("command", origin["command"]), ("versions", versions)]
    else:
        timing = [("summary written", origin["finished"] or "—"),
                  ("command", "not recorded (no provenance.json in the run folder)"),
                  ("versions", f"{versions} (installed when this report was written)")]
    page.facts([("folder", str(run_dir.resolve())), *timing, *facts])


def centralized_facts(summary: Summary, names: list[str]) -> list[tuple[str, object]]:
    """The data and models of a ``fedecg train`` run, for the top of its report."""
    first = summary.model_entries().get(names[0]) if names else None
    n_test = first.n_test if first is not None and first.n_test is not None else "—"
    listed = summary.models if isinstance(summary.models, list) else []
    return [("kind", "centralized training (fedecg train)"),
            ("models", ", ".join(listed or names)),
            ("seed", "—" if summary.seed is None else summary.seed),
            ("stores", "; ".join(f"{s.site} ({s.path})" for s in summary.stores) or "—"),
            ("test split", f"{n_test} ECGs (pooled over the stores)")]


def _results_section(page: HtmlPage, models: dict[str, dict[str, Any]], names: list[str]) -> None:
    page.heading("Results on the test split")
    n_test = next((models[n].get("n_test") for n in names if models[n].get("n_test")), None)
    page.heading("Macro AUROC and AUPRC, diagnosis and lab abnormality", level=3)
    columns = [c for c in _MACRO_COLUMNS if any(c[0] in models[n] for n in names)]
    headers, rows = metric_table(models, names, columns)
    page.table(headers, rows, caption=f"Test split of {n_test or '—'} ECGs. Macro AUROC/AUPRC "
               "over labels with bootstrap 95% confidence intervals. naive scores every ECG "
               "with the training prevalence (AUPRC = prevalence). transfer and signal-only "
               "see the ECG alone at inference; multimodal also sees the clinical features.")
    share = gap_closed(models)
    if share is not None:
        page.paragraph(f"transfer closes {100 * share:.0f}% of the diagnosis macro AUROC gap "
                       "between signal-only and multimodal.")
    shown = {"diagnosis_macro_auroc": "diagnosis", "lab_macro_auroc": "lab abnormality"}
    values = {n: {label: models[n][k] for k, label in shown.items() if k in models[n]}
              for n in names}
    errors = {n: {label: models[n].get(f"{k}_ci") for k, label in shown.items()} for n in names}
    page.figure(plot_grouped_bars(values, errors, title="Macro AUROC (95% CI)",
                                  colors=MODEL_COLORS),
                caption="Macro AUROC per model; whiskers are the bootstrap 95% CIs; the dashed "
                        "line is chance. One colour per model, the same in every figure.")


def _per_label_section(page: HtmlPage, models: dict[str, dict[str, Any]], names: list[str],
                       ) -> None:
    page.heading("Per-label AUROC")
    for key, what in LABEL_TASKS:
        skipped = key.replace("_auroc", "_skipped")
        values = {n: {**models[n][key], **dict.fromkeys(models[n].get(skipped) or [])}
                  for n in names if isinstance(models[n].get(key), dict) and n != "naive"}
        if not values:
            continue
        page.heading(f"{what.capitalize()} labels", level=3)
        errors = {n: models[n].get(f"{key}_ci") or {} for n in values}
        figure = plot_grouped_bars(values, errors, title=f"{what} AUROC per label",
                                   colors=MODEL_COLORS, missing=SINGLE_CLASS_NOTE)
        page.figure(figure, caption=f"Test AUROC of each {what} label, per model (naive is "
                    f"0.5 on every label). {NO_LABEL_CI} {SINGLE_CLASS}")


LABEL_TASKS = (("diagnosis_auroc", "diagnosis"), ("lab_auroc", "lab abnormality"))
SINGLE_CLASS = ("n/a: the label had a single class (or no known value) in the test split, so "
                "it has no AUROC and is left out of the macro mean.")
SINGLE_CLASS_NOTE = "n/a: one class in the test split"
NO_LABEL_CI = ("No whiskers: bootstrap CIs are computed for the macro means (tables above), "
               "not per label.")


def _per_site_section(page: HtmlPage, models: dict[str, dict[str, Any]], names: list[str],
                      ) -> None:
    """Each model on each store's test split, when the run pooled two or more stores."""
    per_site = {n: {site: entry for site, entry in models[n]["per_store"].items()
                    if isinstance(entry, dict)}
                for n in names if isinstance(models[n].get("per_store"), dict)}
    sites = list(dict.fromkeys(site for entry in per_site.values() for site in entry))
    if len(sites) < 2:
        return
    page.heading("Per site")
    flat = {f"{n} @ {site}": entry for n, stores in per_site.items()
            for site, entry in stores.items()}
    headers, rows = metric_table(flat, list(flat), _MACRO_COLUMNS, row_header="model @ site")
    page.table(headers, rows, caption="Each model on the test split of each store, with "
               "bootstrap 95% CIs.")
    for key, what in (("diagnosis_macro_auroc", "Diagnosis"),
                      ("lab_macro_auroc", "Lab-abnormality")):
        values = {n: {site: stores[site].get(key) for site in stores}
                  for n, stores in per_site.items()}
        errors = {n: {site: stores[site].get(f"{key}_ci") for site in stores}
                  for n, stores in per_site.items()}
        page.figure(plot_grouped_bars(values, errors, title=f"{what} macro AUROC per site",
                                      colors=MODEL_COLORS),
                    caption=f"{what} macro AUROC of each model on each store's test split; "
                            "whiskers: bootstrap 95% CIs.")


def _curves_section(page: HtmlPage, records: list[dict[str, Any]]) -> None:
    page.heading("Training curves")
    x = next((k for k in _X_CANDIDATES if any(k in r for r in records)), None)
    if not records or x is None:
        page.paragraph("No metrics.jsonl with epoch records in this run.", note=True)
        return
    rows = curve_rows(records)
    if not rows:
        page.paragraph("metrics.jsonl has no loss or AUROC fields.", note=True)
        return
    panel = "stage" if any("stage" in r for r in records) else "model"
    records = [trained_heads_only(r) for r in records]
    figure = plot_curve_grid(records, x, rows, panel=panel, group="model",
                             panels=_panel_order(records, panel), colors=MODEL_COLORS)
    page.figure(figure, caption=f"Per-{x} metrics from metrics.jsonl; one column per {panel}, "
                                "one colour per model. A head's AUROC is drawn from the stage "
                                "that trains it on (lab from the lab stage, diagnosis from the "
                                "diagnosis stage).")


STAGE_HEADS = {"pretrain": (), "lab": ("lab",), "diagnosis": ("lab", "diagnosis")}
"""The heads trained by the end of each stage; a head's AUROC before then means nothing."""


def trained_heads_only(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without the AUROC/AUPRC of heads its stage has not trained yet.

    Centralized keys read ``val_diagnosis_macro_auroc``, federated ones ``val-diagnosis-auroc``.
    """
    heads = STAGE_HEADS.get(str(record.get("stage")))
    if heads is None:
        return dict(record)
    untrained = {"lab", "diagnosis"} - set(heads)
    return {k: v for k, v in record.items()
            if not (("auroc" in k or "auprc" in k)
                    and any(head in k.replace("-", "_").split("_") for head in untrained))}


def curve_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of the curve grid: the total train/val losses, then AUROCs, then AUPRCs.

    Loss components (``train_dx_loss``) are shown only when no total loss is logged.
    """
    numeric = {k for r in records for k, v in r.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    totals = [k for k in ("train_loss", "val_loss") if k in numeric]
    losses = totals or sorted(k for k in numeric if k.endswith("loss"))
    rows = [losses] + [sorted(k for k in numeric if word in k) for word in ("auroc", "auprc")]
    return [row[:_MAX_PER_ROW] for row in rows if row]


def _panel_order(records: list[dict[str, Any]], panel: str) -> list[str]:
    """Panels in the order met by the model that has the most of them (its stage sequence)."""
    by_model: dict[str, list[str]] = {}
    for record in records:
        seen = by_model.setdefault(str(record.get("model", "?")), [])
        name = str(record.get(panel, "?"))
        if name not in seen:
            seen.append(name)
    longest = max(by_model.values(), key=len)
    rest = [n for seen in by_model.values() for n in seen if n not in longest]
    return longest + list(dict.fromkeys(rest))


def _config_section(page: HtmlPage, path: Path) -> None:
    if path.is_file():
        page.heading("Configuration")
        page.preformatted(path.read_text(), summary="resolved config.yaml")
