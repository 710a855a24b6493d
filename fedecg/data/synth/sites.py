"""Virtual hospitals: how sites differ in population, coding habits and acquisition hardware."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ECG_SITE_STREAM = 2


@dataclass(frozen=True)
class SiteProfile:
    """One virtual hospital of the twin: its population, its coders and its ECG carts."""

    hospital: int
    name: str
    age_mean: float
    age_sd: float
    condition_shift: dict[str, float]
    """Logit shift of a condition's prevalence at this site (absent: 0)."""
    admission_rate: float
    """Probability that a care episode is an inpatient admission (else ED/outpatient)."""
    coding_rate: float
    """Multiplier of the chance that a true condition is coded at discharge."""
    admission_locations: tuple[tuple[str, float], ...]
    cart_ids: tuple[int, ...]
    provider_ids: tuple[str, ...]
    bandwidth: str
    filtering: str
    highpass_hz: float
    lowpass_hz: float
    notch_hz: float | None
    noise_mv: float
    wander_mv: float
    powerline_mv: float
    nan_rate: float
    """Fraction of this site's records with short runs of missing (NaN) samples."""


_LOCATIONS = {
    "tertiary": (("EMERGENCY ROOM", 0.5), ("TRANSFER FROM HOSPITAL", 0.3),
                 ("PHYSICIAN REFERRAL", 0.15), ("PROCEDURE SITE", 0.05)),
    "community": (("EMERGENCY ROOM", 0.7), ("WALK-IN/SELF REFERRAL", 0.15),
                  ("PHYSICIAN REFERRAL", 0.15)),
    "renal": (("PHYSICIAN REFERRAL", 0.45), ("EMERGENCY ROOM", 0.35),
              ("CLINIC REFERRAL", 0.2)),
    "urban_ed": (("EMERGENCY ROOM", 0.85), ("WALK-IN/SELF REFERRAL", 0.1),
                 ("TRANSFER FROM SKILLED NURSING FACILITY", 0.05)),
}

# name: (age mean, age sd, condition logit shifts, admission rate, coding rate,
#        bandwidth, filtering, highpass, lowpass, notch, noise, wander, powerline, nan rate)
_ARCHETYPES: tuple[tuple, ...] = (
    ("tertiary", 67.0, 15.0,
     {"heart_failure": 0.4, "atrial_fibrillation": 0.3, "chronic_ischemic": 0.4,
      "acute_mi": 0.5, "cardiomyopathy": 0.4, "conduction_disease": 0.3},
     0.6, 1.0, "0.005-150 Hz", "60 Hz notch Baseline filter", 0.005, 150.0, 60.0,
     0.010, 0.06, 0.0, 0.06),
    ("community", 57.0, 18.0,
     {"heart_failure": -0.3, "chronic_ischemic": -0.2, "diabetes": 0.3, "copd": 0.4,
      "acute_mi": -0.3},
     0.45, 0.8, "0.5-40 Hz", "Baseline filter", 0.5, 40.0, None,
     0.025, 0.25, 0.02, 0.12),
    ("renal", 63.0, 14.0,
     {"ckd": 0.9, "diabetes": 0.5, "hypertension": 0.5, "heart_failure": 0.2},
     0.55, 0.9, "0.05-150 Hz", "60 Hz notch", 0.05, 150.0, 60.0,
     0.016, 0.15, 0.03, 0.08),
    ("urban_ed", 49.0, 19.0,
     {"hypertension": -0.3, "chronic_ischemic": -0.5, "ckd": -0.4, "sepsis": 0.5,
      "pulmonary_embolism": 0.4, "copd": 0.2},
     0.35, 0.7, "0.15-100 Hz", "", 0.15, 100.0, None,
     0.020, 0.12, 0.015, 0.10),
)


def _provider_ids(rng: np.random.Generator, count: int, taken: set[str]) -> tuple[str, ...]:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    ids: list[str] = []
    while len(ids) < count:
        candidate = "P" + "".join(rng.choice(alphabet, size=5))
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return tuple(ids)


def make_sites(count: int, seed: int) -> list[SiteProfile]:
    """``count`` site profiles cycling through four archetypes, jittered from ``seed``."""
    rng = np.random.default_rng([seed, ECG_SITE_STREAM])
    carts = 1_000_000 + rng.choice(9_000_000, size=count * 6, replace=False)
    taken: set[str] = set()
    sites = []
    for index in range(count):
        (kind, age_mean, age_sd, shift, adm, coding, bandwidth, filtering, hp, lp, notch,
         noise, wander, powerline, nan_rate) = _ARCHETYPES[index % len(_ARCHETYPES)]
        jitter = rng.normal(0.0, 1.0, size=4)
        n_carts = int(rng.integers(2, 7))
        sites.append(SiteProfile(
            hospital=index,
            name=f"hospital_{index}_{kind}",
            age_mean=age_mean + 2.0 * jitter[0],
            age_sd=age_sd,
            condition_shift=dict(shift),
            admission_rate=float(np.clip(adm + 0.04 * jitter[1], 0.2, 0.8)),
            coding_rate=coding,
            admission_locations=_LOCATIONS[kind],
            cart_ids=tuple(int(c) for c in carts[index * 6: index * 6 + n_carts]),
            provider_ids=_provider_ids(rng, 25, taken),
            bandwidth=bandwidth,
            filtering=filtering,
            highpass_hz=hp,
            lowpass_hz=lp,
            notch_hz=notch,
            noise_mv=float(noise * np.exp(0.15 * jitter[2])),
            wander_mv=float(wander * np.exp(0.15 * jitter[3])),
            powerline_mv=powerline,
            nan_rate=nan_rate,
        ))
    return sites
