"""Data-independent standardization of clinical features, for training under DP.

Without DP the clinical encoder's ``mean``/``std`` buffers are fit on a site's training rows.
Under DP that would leak: every example's loss would then depend on every other example's
clinical values through the fitted statistics, which no per-example clipping bounds. So under
DP the statistics come from public knowledge only: lab features are centred on their panel
reference range (half its width as scale), and demographics, biometrics and vitals use the
typical adult values below.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedecg.data.labs import LabDefinition
from fedecg.data.store import LAB_FEATURE_PREFIX
from fedecg.errors import PrivacyError
from fedecg.models.joint import JointModel

PUBLIC_SCALES: dict[str, tuple[float, float]] = {
    "age": (60.0, 18.0), "sex_male": (0.5, 0.5),
    "weight_kg": (80.0, 20.0), "height_cm": (170.0, 10.0), "bmi": (27.0, 6.0),
    "heart_rate": (85.0, 20.0), "sbp": (130.0, 25.0), "dbp": (75.0, 15.0),
    "resp_rate": (18.0, 5.0), "o2sat": (97.0, 3.0), "temperature": (36.8, 0.7),
}
"""Feature → (centre, scale) of an adult emergency population (temperature in °C)."""


def public_statistics(features: Sequence[str], panel: Sequence[LabDefinition]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, std)`` for ``features`` from public values only (see the module docstring)."""
    labs = {LAB_FEATURE_PREFIX + lab.name: lab for lab in panel}
    centres, scales = [], []
    for name in features:
        if name in labs:
            lab = labs[name]
            centre, scale = 0.5 * (lab.ref_low + lab.ref_high), 0.5 * (lab.ref_high - lab.ref_low)
        elif name in PUBLIC_SCALES:
            centre, scale = PUBLIC_SCALES[name]
        else:
            raise PrivacyError(
                f"clinical feature {name!r}: no public standardization is known, and fitting "
                "one on a site's rows would leak under DP; expected a lab of the store's panel "
                f"({LAB_FEATURE_PREFIX}<name>) or one of {sorted(PUBLIC_SCALES)}. Add it to "
                "fedecg.privacy.normalization.PUBLIC_SCALES or drop it from the store")
        centres.append(centre)
        scales.append(scale if scale > 0 else 1.0)
    return torch.tensor(centres), torch.tensor(scales)


def apply_public_normalization(model: JointModel, features: Sequence[str],
                               panel: Sequence[LabDefinition]) -> None:
    """Set ``model.clinical``'s ``mean``/``std`` buffers to ``public_statistics``."""
    mean, std = public_statistics(features, panel)
    if mean.shape != model.clinical.mean.shape:
        raise PrivacyError(f"clinical features: {len(features)} names for a clinical encoder "
                           f"of {model.clinical.mean.numel()} inputs; expected the store's "
                           "manifest.clinical_features the model was built from")
    with torch.no_grad():
        model.clinical.mean.copy_(mean)
        model.clinical.std.copy_(std)
