"""ECG morphology from conditions and latent labs.

Plainly visible: AF (irregular RR, no P, fibrillatory baseline), conduction disease (long PR,
wide QRS, axis), acute MI (ST elevation in a territory for 40% (STEMI); the rest (NSTEMI) get
slight ST depression and T inversion there). Subtle and lab-driven: potassium sets
T amplitude and width (and widens QRS, flattens P at extremes), calcium sets QT, hemoglobin and
NT-proBNP raise heart rate, NT-proBNP lowers QRS voltage, sodium nudges rate and T.
Generator version 2 adds the literature's effects of nine more conditions on top
(``literature_effects``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MORPHOLOGY_COLUMNS = (
    "rhythm", "hr_bpm", "rr_cv", "pr_ms", "p_amp_mv", "qrs_ms", "qrs_scale", "axis_deg",
    "qt_ms", "qtc_ms", "t_amp_mv", "t_width", "u_amp_mv", "st_mv", "st_territory",
    "q_territory", "bbb", "f_wave_mv",
)


def flags(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Column ``name`` of ``frame`` as a boolean array."""
    return frame[name].to_numpy(dtype=bool)


def _rate(rng: np.random.Generator, f: pd.DataFrame, af: np.ndarray) -> np.ndarray:
    hb = f["hemoglobin"].to_numpy()
    bnp = f["ntprobnp"].to_numpy()
    na = f["sodium"].to_numpy()
    hr = (f["hr_base"].to_numpy() + 2.2 * np.maximum(0.0, 13.5 - hb)
          + 3.0 * np.maximum(0.0, np.log(bnp / 300.0)) + 22.0 * flags(f, "sepsis")
          + 15.0 * flags(f, "pulmonary_embolism") + 5.0 * flags(f, "copd")
          + 0.4 * np.maximum(0.0, 135.0 - na) - 6.0 * flags(f, "conduction_disease")
          + rng.normal(0.0, 4.0, len(f)))
    hr = np.where(af, 1.1 * hr + 14.0 + rng.normal(0.0, 8.0, len(f)), hr)
    return np.clip(hr, 38.0, 165.0)


def _conduction(f: pd.DataFrame, k: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, ...]:
    n = len(f)
    cd = flags(f, "conduction_disease")
    kind = f["conduction_type"].to_numpy()
    bbb = np.where(cd & np.isin(kind, ["rbbb", "lbbb"]), kind, "none")
    pr = (150.0 + 0.3 * (f["age"].to_numpy() - 50.0) + rng.normal(0.0, 14.0, n)
          + np.where(cd & (kind == "avb1"), rng.uniform(70.0, 130.0, n), 0.0)
          + 20.0 * np.maximum(0.0, k - 5.5))
    qrs = (88.0 + 5.0 * (f["gender"].to_numpy() == "M") + rng.normal(0.0, 7.0, n)
           + np.where(bbb != "none", rng.uniform(38.0, 60.0, n), 0.0)
           + 12.0 * flags(f, "cardiomyopathy") + 28.0 * np.maximum(0.0, k - 6.0) ** 1.2)
    axis = (f["axis_base"].to_numpy() + 30.0 * flags(f, "copd") - 15.0 * flags(f, "lvh")
            + np.where(cd & (kind == "lafb"), -95.0, 0.0) + rng.normal(0.0, 4.0, n))
    return bbb, np.clip(pr, 90.0, 420.0), np.clip(qrs, 60.0, 210.0), np.clip(axis, -90, 150)


def qt_ms(qtc: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """QT (ms) from QTc (Bazett) and heart rate, kept shorter than the RR interval."""
    rr_s = 60.0 / hr
    return np.clip(qtc * np.sqrt(rr_s), 240.0, 0.88 * rr_s * 1000.0)


def compute_morphology(rng: np.random.Generator, f: pd.DataFrame) -> pd.DataFrame:
    """One morphology row per ECG of ``f`` (conditions, latent labs, patient effects, age)."""
    n = len(f)
    k = f["potassium"].to_numpy()
    ca = f["calcium"].to_numpy()
    mg = f["magnesium"].to_numpy()
    bnp = f["ntprobnp"].to_numpy()
    af = flags(f, "af_today")
    hr = _rate(rng, f, af)
    bbb, pr, qrs, axis = _conduction(f, k, rng)
    qrs_scale = (f["qrs_gain"].to_numpy() * np.where(flags(f, "lvh"), 1.45, 1.0)
                 * np.exp(-0.09 * np.maximum(0.0, np.log(bnp / 125.0)))
                 * np.where(flags(f, "copd"), 0.8, 1.0) * np.exp(-0.25 * (f["bmi"] - 27.0) / 5.0))
    qtc = (412.0 + 12.0 * (f["gender"].to_numpy() == "F") - 30.0 * (ca - 9.3)
           + 20.0 * np.maximum(0.0, 3.9 - k) + 25.0 * np.maximum(0.0, 1.7 - mg)
           + 12.0 * flags(f, "heart_failure") + 0.35 * np.maximum(0.0, qrs - 100.0)
           + rng.normal(0.0, 12.0, n))
    qtc = np.clip(qtc, 320.0, 620.0)
    qt = qt_ms(qtc, hr)
    t_amp = (0.32 * f["t_gain"].to_numpy() * np.exp(0.35 * (k - 4.2))
             * np.where(flags(f, "heart_failure"), 0.8, 1.0)
             * (1.0 - 0.02 * np.maximum(0.0, 135.0 - f["sodium"].to_numpy())))
    t_width = np.clip(np.exp(-0.22 * (k - 4.2)), 0.55, 1.35)
    mi = flags(f, "acute_mi")
    f_wave = np.where(af, rng.uniform(0.03, 0.09, n), 0.0)
    return pd.DataFrame({
        "rhythm": np.where(af, "af", "sinus"),
        "hr_bpm": hr,
        "rr_cv": np.where(af, rng.uniform(0.16, 0.28, n), rng.uniform(0.01, 0.05, n)),
        "pr_ms": pr,
        "p_amp_mv": np.where(af, 0.0, 0.11 * np.exp(rng.normal(0, 0.15, n))
                             * np.where(flags(f, "copd"), 1.5, 1.0)
                             * np.exp(-0.7 * np.maximum(0.0, k - 5.2))),
        "qrs_ms": qrs,
        "qrs_scale": qrs_scale,
        "axis_deg": axis,
        "qt_ms": qt,
        "qtc_ms": qtc,
        "t_amp_mv": np.clip(t_amp, 0.02, 1.6),
        "t_width": t_width,
        "u_amp_mv": 0.015 + 0.06 * np.maximum(0.0, 3.7 - k),
        "st_mv": np.where(mi, np.where(rng.random(n) < 0.4, rng.uniform(0.12, 0.35, n),
                                       -rng.uniform(0.04, 0.1, n)), 0.0),
        "st_territory": np.where(mi, f["mi_territory"].to_numpy(), "none"),
        "q_territory": np.where(flags(f, "old_mi"), f["infarct_territory"].to_numpy(), "none"),
        "bbb": bbb,
        "f_wave_mv": f_wave,
    })
