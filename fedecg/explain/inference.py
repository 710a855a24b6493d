"""Scoring one WFDB record with an inference model, preprocessed exactly as its card says.

The record is read with ``read_ecg`` (any source, any lead order or case), its leads put in the
card's ``lead_order``, NaN runs interpolated, resampled to the card's rate and clipped to the
card's ``clip_mv``. Records longer than the training crop are scored by test-time aggregation:
the mean of the logits over evenly spaced crops (``EcgClassifier.forward_crops``), at least the
card's ``eval_crops`` and enough for the crops to cover the whole record.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedecg.data.leads import CANONICAL_LEADS, canonical_lead_name
from fedecg.data.waveform import EcgRecord, preprocess, quality_problem, read_ecg
from fedecg.errors import StoreError
from fedecg.models.classifier import EcgClassifier
from fedecg.models.io import CARD_FILE, LEARNED, ModelCard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """Probabilities of every diagnosis and lab abnormality of one record."""

    diagnoses: dict[str, float]
    lab_abnormalities: dict[str, float]
    n_crops: int


def card_sampling(card: ModelCard, source: Path | str = CARD_FILE) -> tuple[float, float]:
    """``(fs, clip_mv)`` the model was trained with, checked against ``card.preprocessing``.

    ``source`` names the card in error messages (its path when known).
    """
    where = f"{source} (model {card.model_name!r})"
    fs = card.preprocessing.get("fs", card.fs)
    if fs != card.fs:
        raise StoreError(f"{where}: preprocessing.fs is {fs!r} but fs is {card.fs!r}; expected "
                         "one sampling rate. Re-export the model with `fedecg train`")
    clip = card.preprocessing.get("clip_mv")
    if not isinstance(clip, int | float) or clip <= 0:
        raise StoreError(f"{where}: preprocessing.clip_mv is {clip!r}; expected the positive "
                         "clipping amplitude (mV) used in training. Re-export the model with "
                         "`fedecg train`")
    return float(card.fs), float(clip)


def lead_rows(card: ModelCard) -> list[int]:
    """Row of each of the card's leads in ``CANONICAL_LEADS`` order (how records are read)."""
    rows = []
    for name in card.lead_order:
        canonical = canonical_lead_name(name)
        if canonical is None:
            raise StoreError(f"{CARD_FILE} of model {card.model_name!r}: lead_order names "
                             f"{name!r}; expected the 12 standard leads {list(CANONICAL_LEADS)}")
        rows.append(CANONICAL_LEADS.index(canonical))
    return rows


def prepare_record(record: EcgRecord, card: ModelCard) -> np.ndarray:
    """``[12, T]`` float32 in mV at the card's rate and lead order, at least one crop long."""
    fs, clip = card_sampling(card)
    n_samples = max(card.crop_samples, round(record.signal.shape[-1] * fs / record.fs))
    signal = preprocess(record, fs_out=fs, clip_mv=clip, n_samples=n_samples)
    return np.ascontiguousarray(signal[lead_rows(card)])


def read_for_model(path: Path, card: ModelCard) -> tuple[EcgRecord, np.ndarray, str | None]:
    """Read WFDB record ``path``: the record as recorded, its signal prepared for the model of
    ``card``, and why the record is no usable ECG (a flat line, or less signal than one
    training crop before trailing zeros) or None; such a problem is logged as a warning, since
    the scores of such a record mean nothing.
    """
    record = read_ecg(Path(path))
    problem = quality_problem(record, card.crop_samples / card.fs)
    if problem is not None:
        log.warning("%s: %s; its scores are not meaningful", record.path, problem)
    return record, prepare_record(record, card), problem


def crop_count(card: ModelCard, n_samples: int) -> int:
    """Crops averaged at test time: ``eval_crops``, raised until they cover ``n_samples``."""
    if n_samples <= card.crop_samples:
        return 1
    return max(card.eval_crops, math.ceil(n_samples / card.crop_samples))


def aggregated_logits(model: EcgClassifier, card: ModelCard,
                      ecg: torch.Tensor) -> dict[str, torch.Tensor]:
    """Logits ``{"lab", "dx"}`` of ``ecg`` ``[B, 12, T]`` averaged over test-time crops."""
    return model.forward_crops(ecg, card.crop_samples, crop_count(card, ecg.shape[-1]))


def predict_signal(model: EcgClassifier, card: ModelCard, signal: np.ndarray) -> Prediction:
    """Probabilities for a prepared ``[12, T]`` signal (see ``prepare_record``)."""
    ecg = torch.from_numpy(np.asarray(signal, dtype=np.float32))[None]  # [1, 12, T]
    with torch.no_grad():
        logits = aggregated_logits(model.eval(), card, ecg)
    dx = torch.sigmoid(logits["dx"][0]).tolist()
    lab = torch.sigmoid(logits["lab"][0]).tolist()
    return Prediction(diagnoses=dict(zip(card.diagnosis_labels, dx, strict=True)),
                      lab_abnormalities=dict(zip(card.lab_labels, lab, strict=True)),
                      n_crops=crop_count(card, ecg.shape[-1]))


@dataclass(frozen=True)
class Results:
    """The outputs of a ``Prediction`` that are results, per the card's ``outputs``.

    ``diagnoses`` and ``lab_abnormalities`` leave out what never learned (``not_learned``:
    task → label → reason); ``flags`` gives the status of shown diagnoses that are not
    ``learned`` (``below threshold``, ``unvalidated``). A card without ``outputs`` (an older
    model) shows everything.
    """

    diagnoses: dict[str, float]
    lab_abnormalities: dict[str, float]
    flags: dict[str, str]
    not_learned: dict[str, dict[str, str]]


def results_of(card: ModelCard, prediction: Prediction) -> Results:
    """The result outputs of ``prediction`` (see ``Results``)."""
    hidden = {task: card.not_learned(task) for task in ("diagnosis", "lab")}
    diagnoses = {k: v for k, v in prediction.diagnoses.items() if k not in hidden["diagnosis"]}
    flags = {k: str(card.status("diagnosis", k)) for k in diagnoses
             if card.status("diagnosis", k) not in (None, LEARNED)}
    return Results(diagnoses=diagnoses, flags=flags, not_learned=hidden,
                   lab_abnormalities={k: v for k, v in prediction.lab_abnormalities.items()
                                      if k not in hidden["lab"]})
