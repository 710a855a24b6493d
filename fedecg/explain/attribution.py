"""Lead and time attributions of one diagnosis logit, computed with captum.

The attributed function is the same one ``predict`` uses: the diagnosis logit averaged over
test-time crops. ``integrated_gradients`` (default) integrates gradients along the straight path
from a flat 0 mV baseline (an isoelectric ECG) to the record; ``saliency`` takes the gradient at
the record. Either way the magnitude ``|attribution|`` is what is reported:

* ``lead_shares[l]`` = sum over time of ``|a[l, t]|`` divided by the sum over all leads, so the
  twelve shares sum to 1 (uniform 1/12 when every attribution is exactly 0);
* ``map`` is ``|a|`` smoothed with a moving average (``smooth_s`` seconds) and divided by its
  maximum, a ``[12, T]`` array in [0, 1] for shading a 12-lead plot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from scipy.ndimage import uniform_filter1d

from fedecg.explain.inference import aggregated_logits
from fedecg.models.classifier import EcgClassifier
from fedecg.models.io import ModelCard

logger = logging.getLogger(__name__)

Method = Literal["integrated_gradients", "saliency"]


@dataclass(frozen=True)
class LeadAttribution:
    """Attribution of one diagnosis logit over the leads and time of one record."""

    target: str
    method: str
    lead_shares: dict[str, float]  # lead name -> share, sums to 1
    map: np.ndarray  # [12, T] in [0, 1]


def attribute_diagnosis(model: EcgClassifier, card: ModelCard, signal: np.ndarray, target: int,
                        method: Method = "integrated_gradients", steps: int = 32,
                        smooth_s: float = 0.08) -> LeadAttribution:
    """Attribute diagnosis ``target`` (index into ``card.diagnosis_labels``) on ``signal``.

    ``signal`` is a prepared ``[12, T]`` record (``inference.prepare_record``).
    """
    model.eval()
    ecg = torch.tensor(np.asarray(signal, dtype=np.float32)[None], requires_grad=True)  # [1,12,T]

    def dx_logits(batch: torch.Tensor) -> torch.Tensor:
        return aggregated_logits(model, card, batch)["dx"]  # [B, n_dx]

    if method == "integrated_gradients":
        raw = IntegratedGradients(dx_logits).attribute(
            ecg, baselines=torch.zeros_like(ecg), target=target, n_steps=steps,
            internal_batch_size=8)
    else:
        raw = Saliency(dx_logits).attribute(ecg, target=target, abs=True)
    magnitude = raw[0].detach().abs().double().numpy()  # [12, T]
    return LeadAttribution(target=card.diagnosis_labels[target], method=method,
                           lead_shares=_shares(magnitude, card.lead_order),
                           map=_normalized_map(magnitude, card.fs, smooth_s))


def _shares(magnitude: np.ndarray, leads: list[str]) -> dict[str, float]:
    per_lead = magnitude.sum(axis=-1)  # [12]
    total = per_lead.sum()
    if total <= 0:
        logger.warning("every attribution is 0 (the logit does not depend on the input); "
                       "lead shares set to uniform")
        per_lead, total = np.ones_like(per_lead), float(len(per_lead))
    return {lead: float(v / total) for lead, v in zip(leads, per_lead, strict=True)}


def _normalized_map(magnitude: np.ndarray, fs: float, smooth_s: float) -> np.ndarray:
    width = max(1, round(smooth_s * fs))
    smooth = uniform_filter1d(magnitude, size=width, axis=-1, mode="nearest")
    peak = smooth.max()
    return (smooth / peak if peak > 0 else smooth).astype(np.float32)
