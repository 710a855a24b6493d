"""The report's model-card section: the exported model's card, readable, with every output's
status (learned or not, as ``predict``/``explain`` treat it)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedecg.models.io import CARD_FILE, CARD_MARKDOWN, LEARNED, ModelCard, initialization_words
from fedecg.report.html import HtmlPage
from fedecg.report.plots import format_with_ci

logger = logging.getLogger(__name__)


def card_section(page: HtmlPage, model_dir: Path, exported: str) -> None:
    """The exported model's card, readable: what it takes, predicts, was trained on, scores."""
    card = _read_card(model_dir)
    if card is None:
        return
    page.heading("Model card")
    metrics = card.get("metrics") or {}
    privacy = card.get("privacy")
    rows: list[tuple[str, object]] = [
        ("exported model", f"{card['model_name']}, {exported}; in model/ "
                           f"(created {card.get('created_at')}, seed {card.get('seed')})"),
        ("input", f"12-lead ECG ({', '.join(card['lead_order'])}) at {card['fs']:g} Hz, "
                  f"scored on {card.get('eval_crops', 1)} crop(s) of {card['crop_samples']} "
                  "samples; no clinical data at inference"),
        ("diagnoses", f"{len(card['diagnosis_labels'])}: {', '.join(card['diagnosis_labels'])}"),
        ("lab abnormalities", f"{len(card['lab_labels'])}: {', '.join(card['lab_labels'])}"),
        *((f"training data: {_DATA_NAMES.get(k, k.replace('_', ' '))}", v)
          for k, v in _flatten(card.get("data_summary") or {})),
        ("ECG encoder start", initialization_words(card.get("initialization"))),
        ("test split (ECGs)", metrics.get("n_test", "—")),
        *((label, format_with_ci(metrics.get(key), metrics.get(f"{key}_ci")))
          for key, label in _CARD_METRICS if key in metrics),
    ]
    if isinstance(privacy, dict) and privacy:
        rows += [(f"privacy: {k.replace('_', ' ')}", v) for k, v in _flatten(privacy)]
    else:
        rows.append(("privacy", "none: trained without differential privacy"))
    rows += _learned_counts(card)
    page.facts(rows)
    _outputs_table(page, card)
    page.links("The same card as files beside this report:",
               [("model/model_card.md", f"model/{CARD_MARKDOWN}"),
                (f"model/{CARD_FILE} (machine-readable)", f"model/{CARD_FILE}")])


OUTPUT_TASKS = (("diagnosis", "diagnosis"), ("lab", "lab abnormality"))


def _learned_counts(card: dict[str, Any]) -> list[tuple[str, object]]:
    """One row per task: how many of its outputs the card records as learned."""
    outputs = card.get("outputs") or {}
    rows: list[tuple[str, object]] = []
    for task, title in OUTPUT_TASKS:
        entries = outputs.get(task) or {}
        if entries:
            learned = sum(entry.get("status") == LEARNED for entry in entries.values())
            rows.append((f"{title} outputs learned",
                         f"{learned} of {len(entries)} (validation AUROC ≥ "
                         f"{card.get('min_auroc')}; the others are flagged below)"))
    return rows


def _outputs_table(page: HtmlPage, card: dict[str, Any]) -> None:
    """Every output of the exported model with its status, as predict/explain treat it."""
    outputs = card.get("outputs") or {}
    rows = [[title, label, entry.get("status") if entry.get("status") == LEARNED
             else f"NOT LEARNED ({entry.get('status')})", entry.get("train_positives"),
             entry.get("val_positives"), entry.get("val_auroc")]
            for task, title in OUTPUT_TASKS for label, entry in (outputs.get(task) or {}).items()]
    if not rows:
        return
    page.table(["task", "output", "status", "training positives", "validation positives",
                "validation AUROC"], rows,
               caption="Each output of the exported model as its card records it: learned "
                       "when its validation AUROC reaches the card's threshold. A lab output "
                       "that is not learned is never shown by predict or explain, nor named as "
                       "a supporting lab; an untrained diagnosis is left out, the others are "
                       "shown with their flag.")


_DATA_NAMES = {"records": "ECGs (all splits)", "train_records": "training ECGs",
               "stores": "stores (sites)"}
_CARD_METRICS = (("diagnosis_macro_auroc", "diagnosis macro AUROC [95% CI]"),
                 ("lab_macro_auroc", "lab-abnormality macro AUROC [95% CI]"),
                 ("diagnosis_macro_auprc", "diagnosis macro AUPRC"),
                 ("lab_macro_auprc", "lab-abnormality macro AUPRC"))


def _read_card(model_dir: Path) -> dict[str, Any] | None:
    """The model card as a plain dict, or None when it is absent or unreadable."""
    path = model_dir / CARD_FILE
    if not path.is_file():
        return None
    try:
        return ModelCard.model_validate_json(path.read_text()).model_dump(mode="json")
    except (OSError, ValueError) as exc:  # the card is optional on the report page
        logger.warning("%s: model card not shown in the report (%s)", path, exc)
        return None


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += _flatten(value, prefix=f"{name}.")
        elif isinstance(value, list | tuple):
            rows.append([name, ", ".join(str(item) for item in value)])
        else:
            rows.append([name, value if isinstance(value, int | float | str) else str(value)])
    return rows
