"""Saving and loading the inference-only ECG model with its model card.

A model folder holds ``model.pt`` (``{"format": 1, "architecture": {...}, "state_dict": {...}}``,
rebuilt with ``EcgClassifier(**architecture)``), ``model_card.json`` (``ModelCard``) and a
human-readable ``model_card.md``. The folder is written atomically.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from fedecg import __version__
from fedecg.config.base import StrictModel
from fedecg.data.store import MIN_POSITIVES
from fedecg.errors import StoreError
from fedecg.io import (
    OutputKind,
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    load_weights,
    save_weights,
)
from fedecg.models.classifier import EcgClassifier

MODEL_FILE = "model.pt"
CARD_FILE = "model_card.json"
CARD_MARKDOWN = "model_card.md"
MODEL_FORMAT = 1
OutputStatus = Literal["learned", "below threshold", "unvalidated", "untrained"]
LEARNED: OutputStatus = "learned"
TASK_LABELS = {"diagnosis": "diagnosis_labels", "lab": "lab_labels"}


class ModelCard(StrictModel):
    """What a model predicts, from what input, trained on what, and how well."""

    model_name: str
    diagnosis_labels: list[str]
    lab_labels: list[str]
    lab_panel: list[dict[str, Any]] = Field(default_factory=list)
    lead_order: list[str]
    fs: float
    crop_samples: int
    eval_crops: int = 1
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    data_summary: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    initialization: dict[str, Any] | None = Field(
        None, description="where the ECG encoder started when not from a random seeded init: "
        "the public model (``train.encoder_from``, its SHA-256 and training data) and the "
        "stages trained after it (``fedecg.training.pipeline.initialization``)")
    outputs: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="per task and label: status, training and validation "
        "positives, validation AUROC (fedecg.training.outputs.output_quality)")
    min_auroc: float | None = Field(None, description="validation AUROC an output needs to count "
                                    "as learned")
    created_at: str = Field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    fedecg_version: str = __version__
    architecture: dict[str, Any] = Field(default_factory=dict)

    def status(self, task: str, label: str) -> OutputStatus | None:
        """The recorded status of output ``label`` of ``task`` (None when not recorded)."""
        return self.outputs.get(task, {}).get(label, {}).get("status")

    def not_learned(self, task: str) -> dict[str, str]:
        """Outputs of ``task`` that are not results, each with the reason (from ``outputs``).

        Lab outputs count only when ``learned``; diagnosis outputs are left out only when
        ``untrained`` (the others are shown, flagged by ``status``).
        """
        shown = {LEARNED} if task == "lab" else {LEARNED, "below threshold", "unvalidated"}
        return {label: _reason(entry, self.min_auroc)
                for label, entry in self.outputs.get(task, {}).items()
                if entry.get("status") not in shown}


def _reason(entry: dict[str, Any], threshold: float | None) -> str:
    status = entry.get("status")
    if status == "untrained" and not entry.get("train_known"):
        return "not learned: never trained (no training ECG has a known value)"
    if status == "untrained":
        return (f"not learned: never trained ({entry.get('train_positives', 0)} training "
                f"positive(s) of {entry.get('train_known', 0)} known)")
    if status == "unvalidated":
        return (f"not learned: not validated ({entry.get('val_positives', 0)} validation "
                f"positive(s) of {entry.get('val_known', 0)}; at least {MIN_POSITIVES} of each "
                "class needed)")
    return f"not learned: validation AUROC {entry.get('val_auroc')} < {threshold}"


def save_inference_model(directory: Path, model: EcgClassifier, card: ModelCard,
                         overwrite: bool = True) -> None:
    """Write ``model`` and ``card`` into ``directory`` atomically."""
    card = card.model_copy(update={"architecture": model.architecture})
    _check_card(card, model, Path(directory))
    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    with atomic_directory(Path(directory), OutputKind.MODEL, overwrite=overwrite) as staging:
        save_weights(staging / MODEL_FILE, {"format": MODEL_FORMAT,
                                            "architecture": model.architecture,
                                            "state_dict": state})
        atomic_write_json(staging / CARD_FILE, card.model_dump(mode="json"))
        atomic_write_text(staging / CARD_MARKDOWN, card_markdown(card))


def _check_card(card: ModelCard, model: EcgClassifier, where: Path) -> None:
    for field, size in (("diagnosis_labels", model.dx_head.out_features),
                        ("lab_labels", model.lab_head.out_features)):
        if len(getattr(card, field)) != size:
            raise StoreError(f"{where}: model card {field} has {len(getattr(card, field))} "
                             f"names but the model's head has {size} outputs")


def load_inference_model(directory: Path) -> tuple[EcgClassifier, ModelCard]:
    """Load a model folder written by ``save_inference_model``; the model is in eval mode."""
    directory = Path(directory)
    for name in (MODEL_FILE, CARD_FILE):
        if not (directory / name).is_file():
            raise StoreError(f"{directory}: missing {name}; expected a model folder written by "
                             "`fedecg train` (RUN/model)")
    try:
        card = ModelCard.model_validate(json.loads((directory / CARD_FILE).read_text()))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise StoreError(f"{directory / CARD_FILE}: not a valid model card: {exc}") from None
    try:
        payload = load_weights(directory / MODEL_FILE)
    except ValueError as exc:
        raise StoreError(f"{directory / MODEL_FILE}: cannot load the model: {exc}; "
                         "train again or restore the file") from None
    try:
        model = EcgClassifier(**payload["architecture"])
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # a wrong key or shape means the file is not this model
        reason = " ".join(str(exc).split())[:200]
        raise StoreError(f"{directory / MODEL_FILE}: not a model fedecg can rebuild "
                         f"({type(exc).__name__}: {reason}); train again or restore the "
                         "file") from None
    _check_card(card, model, directory)
    model.eval()
    return model, card


def card_markdown(card: ModelCard) -> str:
    """A short human-readable rendering of ``card``."""
    metrics = "\n".join(f"- {k}: {_fmt(v)}" for k, v in card.metrics.items()
                        if not isinstance(v, dict))
    labs = _output_names(card, "lab")
    data = "\n".join(f"- {k}: {_fmt(v)}" for k, v in card.data_summary.items())
    privacy = json.dumps(card.privacy) if card.privacy else "none (no differential privacy)"
    return (
        f"# fedecg model card: {card.model_name}\n\n"
        f"Created {card.created_at} with fedecg {card.fedecg_version}, seed {card.seed}.\n\n"
        f"## Input\n12-lead ECG, leads {', '.join(card.lead_order)}, {card.fs:g} Hz, "
        f"scored on {card.eval_crops} crop(s) of {card.crop_samples} samples; "
        f"preprocessing {json.dumps(card.preprocessing)}.\n\n"
        f"## Outputs\nDiagnoses ({len(card.diagnosis_labels)}): "
        f"{_output_names(card, 'diagnosis')}.\n\n"
        f"Lab abnormalities ({len(card.lab_labels)}): {labs}.\n\n"
        f"## Training data\n{data or '- (not recorded)'}\n\n"
        f"## Initialization\n{initialization_words(card.initialization)}\n\n"
        f"## Test metrics\n{metrics or '- (not recorded)'}\n\n"
        f"## Privacy\n{privacy}\n"
    )


def initialization_words(entry: dict[str, Any] | None) -> str:
    """The card's ``initialization`` in one sentence."""
    if not entry:
        return "ECG encoder from a random (seeded) start."
    stages = ", ".join(entry.get("stages_trained_after") or []) or "none"
    return (f"ECG encoder from the public model {entry.get('encoder_from')} (sha256 "
            f"{str(entry.get('sha256'))[:16]}…, {entry.get('public_model')} trained on "
            f"{_data_words(entry.get('public_data'))}); then trained here in stages: {stages}.")


def _data_words(summary: Any) -> str:
    """``{"stores": [...], "records": n, "train_records": m}`` as words; anything else as is."""
    if not isinstance(summary, dict) or "stores" not in summary:
        return _fmt(summary)
    words = ", ".join(str(store) for store in summary["stores"])
    counts = [f"{summary[key]:,} {name}" for key, name in
              (("records", "ECGs"), ("train_records", "in its training split"))
              if isinstance(summary.get(key), int)]
    return f"{words} ({', '.join(counts)})" if counts else words


def _output_names(card: ModelCard, task: str) -> str:
    """Label names with their status and validation AUROC where the card records them."""
    names = getattr(card, TASK_LABELS[task])
    if not card.outputs.get(task):
        return ", ".join(names)
    missing = card.not_learned(task)
    shown = [f"{n} ({card.status(task, n)}, val AUROC "
             f"{card.outputs[task][n].get('val_auroc')})" for n in names if n not in missing]
    text = ", ".join(shown) or "none learned"
    if missing:
        text += f"; not learned, never shown as results ({len(missing)}): {', '.join(missing)}"
    return text


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else json.dumps(value, default=str)
