"""Which predicted lab abnormalities support a diagnosis, from the geometry of the two heads.

Both heads are linear on one embedding ``h``: diagnosis ``d`` has logit ``w_d · h + b_d`` and lab
abnormality ``l`` has logit ``u_l · h + c_l``. Their cosine ``cos(w_d, u_l)`` says how far the
direction that raises lab ``l``'s abnormality also raises diagnosis ``d`` (1: the same
direction; 0: unrelated; negative: it argues against ``d``). The rule, for one ECG:

    lab l supports diagnosis d  ⇔  p_l ≥ min_probability  and  cos(w_d, u_l) ≥ min_cosine
    score(d, l) = cos(w_d, u_l) × p_l

where ``p_l`` is the predicted probability that lab ``l`` is abnormal for this ECG. Supporting
labs are ranked by score (highest first) and the first ``top_k`` kept. Defaults: ``p_l ≥ 0.5``
(the model predicts the abnormality) and ``cos ≥ 0.1`` (for random directions in a 256-wide
embedding the cosine has a standard deviation of about 0.06).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedecg.models.classifier import EcgClassifier

SUPPORT_RULE = ("lab l supports diagnosis d when its predicted abnormality probability "
                "p_l >= {min_probability} and the cosine between the diagnosis head's weight "
                "vector w_d and the lab head's weight vector u_l is >= {min_cosine}; "
                "score = cos(w_d, u_l) * p_l, highest first, at most {top_k} labs")
"""Human-readable form of the rule, formatted with the thresholds used."""


@dataclass(frozen=True)
class LabSupport:
    """One lab abnormality supporting one diagnosis."""

    label: str
    probability: float
    cosine: float
    score: float


def head_cosines(model: EcgClassifier) -> np.ndarray:
    """``[n_dx, n_lab]`` cosine between each diagnosis and each lab head weight vector."""
    with torch.no_grad():
        dx = torch.nn.functional.normalize(model.dx_head.weight.double(), dim=1)  # [n_dx, E]
        lab = torch.nn.functional.normalize(model.lab_head.weight.double(), dim=1)  # [n_lab, E]
        return (dx @ lab.T).numpy()  # [n_dx, n_lab]


def supporting_labs(cosines: np.ndarray, lab_probabilities: Mapping[str, float],
                    min_probability: float = 0.5, min_cosine: float = 0.1,
                    top_k: int = 5, exclude: Collection[str] = ()) -> list[LabSupport]:
    """Labs supporting one diagnosis, given its row of ``head_cosines`` (see module rule).

    ``lab_probabilities`` maps each lab label, in lab-head order, to its probability; labs in
    ``exclude`` (not learned, ``ModelCard.not_learned``) never support anything.
    """
    supports = [
        LabSupport(label=label, probability=float(p), cosine=float(c), score=float(c * p))
        for (label, p), c in zip(lab_probabilities.items(), cosines, strict=True)
        if p >= min_probability and c >= min_cosine and label not in exclude
    ]
    supports.sort(key=lambda s: s.score, reverse=True)
    return supports[:top_k]
