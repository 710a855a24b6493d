"""Tiny seeded inference models with their cards and labels, for the predict/explain tests."""

from __future__ import annotations

from pathlib import Path

from builders.tiny import tiny_classifier
from fedecg.data.leads import CANONICAL_LEADS
from fedecg.models import EcgClassifier, ModelCard, save_inference_model

DX = ["atrial_fibrillation", "heart_failure", "hyperkalemia"]
LABS = ["potassium_high", "potassium_low", "hemoglobin_low", "ntprobnp_high"]


def tiny_model(seed: int = 0) -> EcgClassifier:
    """The tiny classifier (``builders.tiny``) with ``tiny_card``'s labels."""
    return tiny_classifier(len(LABS), len(DX), seed)


def tiny_card(fs: float = 100.0, crop_samples: int = 250, clip_mv: float = 3.0,
              lead_order: list[str] | None = None, eval_crops: int = 1) -> ModelCard:
    """A card matching ``tiny_model``."""
    return ModelCard(model_name="transfer", diagnosis_labels=DX, lab_labels=LABS,
                     lead_order=list(lead_order or CANONICAL_LEADS), fs=fs,
                     crop_samples=crop_samples, eval_crops=eval_crops,
                     preprocessing={"fs": fs, "clip_mv": clip_mv})


def saved_model(directory: Path, seed: int = 0, **card: object) -> Path:
    """Save ``tiny_model(seed)`` with ``tiny_card(**card)`` into ``directory``; return it."""
    save_inference_model(directory, tiny_model(seed), tiny_card(**card))  # type: ignore[arg-type]
    return directory
