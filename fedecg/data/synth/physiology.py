"""Latent physiology: the true lab values behind each ECG, driven by the patient's conditions.

Values are in the units of ``DEFAULT_LAB_PANEL``. An episode (admission or visit) has one latent
state; each ECG of it drifts a little around that state. Electrolyte and anemia conditions are
defined by the latent values themselves, so these diagnoses are mediated by labs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LabSpec:
    """How one latent lab varies: additive (``log=False``) or multiplicative, and its bounds."""

    intra_sd: float
    low: float
    high: float
    decimals: int
    log: bool = False


LAB_SPECS: dict[str, LabSpec] = {
    "potassium": LabSpec(0.18, 2.0, 8.5, 1),
    "sodium": LabSpec(1.5, 108.0, 165.0, 0),
    "calcium": LabSpec(0.2, 5.5, 14.5, 1),
    "magnesium": LabSpec(0.12, 0.8, 4.0, 1),
    "creatinine": LabSpec(0.08, 0.2, 15.0, 1, log=True),
    "urea_nitrogen": LabSpec(0.1, 3.0, 180.0, 0, log=True),
    "glucose": LabSpec(0.15, 35.0, 700.0, 0, log=True),
    "hemoglobin": LabSpec(0.35, 4.0, 20.0, 1),
    "hematocrit": LabSpec(1.0, 12.0, 60.0, 1),
    "wbc": LabSpec(0.12, 0.3, 60.0, 1, log=True),
    "platelets": LabSpec(0.08, 5.0, 1200.0, 0, log=True),
    "troponin_t": LabSpec(0.2, 0.01, 25.0, 2, log=True),
    "ntprobnp": LabSpec(0.15, 5.0, 70000.0, 0, log=True),
    "bicarbonate": LabSpec(1.2, 5.0, 45.0, 0),
    "chloride": LabSpec(1.2, 75.0, 130.0, 0),
    "anion_gap": LabSpec(1.0, 2.0, 40.0, 0),
    "albumin": LabSpec(0.1, 1.2, 5.6, 1),
    "phosphate": LabSpec(0.25, 0.5, 12.0, 1),
    "ck_mb": LabSpec(0.15, 1.0, 500.0, 0, log=True),
    "lactate": LabSpec(0.15, 0.3, 20.0, 1, log=True),
    "inr": LabSpec(0.05, 0.8, 8.0, 1, log=True),
    "tsh": LabSpec(0.1, 0.01, 80.0, 2, log=True),
    "ast": LabSpec(0.15, 5.0, 5000.0, 0, log=True),
    "alt": LabSpec(0.15, 4.0, 5000.0, 0, log=True),
    "bilirubin": LabSpec(0.1, 0.1, 30.0, 1, log=True),
}


def _f(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype=float)


def _electrolytes(rng: np.random.Generator, c: pd.DataFrame, n: int) -> dict[str, np.ndarray]:
    ckd, aki, hf = _f(c, "ckd"), _f(c, "aki"), _f(c, "heart_failure")
    sepsis = _f(c, "sepsis")
    high_k = rng.random(n) < 0.03 + 0.10 * ckd + 0.18 * aki
    low_k = rng.random(n) < 0.04 + 0.07 * hf + 0.04 * sepsis
    k = (4.15 + 0.3 * ckd + 0.45 * aki + 0.1 * _f(c, "diabetes") - 0.15 * hf
         + rng.normal(0, 0.33, n) + high_k * rng.uniform(0.9, 2.3, n)
         - low_k * ~high_k * rng.uniform(0.6, 1.2, n))
    low_na = rng.random(n) < 0.05 + 0.07 * hf + 0.06 * sepsis
    na = 139.5 - 1.5 * hf + rng.normal(0, 2.6, n) - low_na * rng.uniform(6, 16, n)
    albumin = 4.0 + rng.normal(0, 0.32, n) - 0.8 * sepsis - 0.3 * ckd - 0.25 * hf
    high_ca = rng.random(n) < 0.02
    ca = (9.25 + 0.6 * (albumin - 4.0) + rng.normal(0, 0.35, n) - 0.3 * ckd - 0.3 * sepsis
          + high_ca * rng.uniform(1.2, 3.0, n))
    mg = 2.0 + rng.normal(0, 0.2, n) + 0.2 * ckd - 0.1 * low_k
    bicarb = (25.5 + rng.normal(0, 2.3, n) - 2.0 * ckd - 3.5 * aki - 4.5 * sepsis
              + 3.5 * _f(c, "copd"))
    chloride = 102.0 + 0.75 * (na - 139.5) - 0.4 * (bicarb - 25.5) + rng.normal(0, 1.8, n)
    anion_gap = na - chloride - bicarb + 1.0 + rng.normal(0, 1.2, n)
    return {"potassium": k, "sodium": na, "calcium": ca, "magnesium": mg,
            "bicarbonate": bicarb, "chloride": chloride, "anion_gap": anion_gap,
            "albumin": albumin}


def _renal_blood(rng: np.random.Generator, c: pd.DataFrame, n: int,
                 patient_fx: pd.DataFrame) -> dict[str, np.ndarray]:
    ckd, aki, sepsis = _f(c, "ckd"), _f(c, "aki"), _f(c, "sepsis")
    male = (c["gender"] == "M").to_numpy()
    creat = (np.where(male, 0.95, 0.75) * np.exp(rng.normal(0, 0.12, n))
             * np.where(ckd > 0, patient_fx["ckd_factor"].to_numpy(), 1.0)
             * np.where(aki > 0, rng.uniform(1.6, 3.2, n), 1.0))
    bun = 15.0 * (creat / 0.9) ** 0.85 * np.exp(rng.normal(0, 0.2, n)) + 8 * _f(c, "heart_failure")
    bleed = rng.random(n) < 0.05
    hb = (np.where(male, 14.4, 12.9) + patient_fx["hb_offset"].to_numpy() - 1.6 * ckd
          - 1.0 * sepsis - 0.5 * _f(c, "heart_failure") + rng.normal(0, 0.6, n)
          - bleed * rng.uniform(2.0, 5.0, n))
    phosphate = 3.5 + rng.normal(0, 0.45, n) + 0.5 * ckd * np.log(creat / 0.9 + 1) + 0.7 * aki
    glucose = (98 * np.exp(rng.normal(0, 0.12, n))
               * np.where(c["diabetes"], rng.uniform(1.2, 2.3, n), 1.0) + 30 * sepsis)
    wbc = 7.4 * np.exp(rng.normal(0, 0.25, n)) * np.where(
        sepsis > 0, np.where(rng.random(n) < 0.2, 0.4, rng.uniform(1.7, 3.0, n)), 1.0)
    return {"creatinine": creat, "urea_nitrogen": bun, "hemoglobin": hb,
            "hematocrit": 2.95 * hb + 1.0 + rng.normal(0, 1.0, n), "phosphate": phosphate,
            "glucose": glucose, "wbc": wbc,
            "platelets": 245 * np.exp(rng.normal(0, 0.25, n)) * (1 - 0.4 * sepsis)}


def _cardiac_other(rng: np.random.Generator, c: pd.DataFrame, n: int,
                   age: np.ndarray) -> dict[str, np.ndarray]:
    mi, hf, ckd, sepsis = _f(c, "acute_mi"), _f(c, "heart_failure"), _f(c, "ckd"), _f(c, "sepsis")
    af = _f(c, "atrial_fibrillation")
    trop = (0.008 * np.exp(rng.normal(0, 0.6, n)) * (1 + 2 * ckd + 1.5 * hf)
            * np.where(mi > 0, rng.uniform(15, 300, n), 1.0))
    bnp = (70 * np.exp(0.028 * (age - 50)) * np.exp(rng.normal(0, 0.6, n))
           * np.where(hf > 0, rng.uniform(6, 40, n), 1.0) * (1 + 2 * af) * (1 + 2 * ckd)
           * (1 + 3 * _f(c, "pulmonary_embolism")) * (1 + 2 * _f(c, "cardiomyopathy")))
    return {
        "troponin_t": trop,
        "ntprobnp": bnp,
        "ck_mb": 2.5 * np.exp(rng.normal(0, 0.5, n)) * np.where(mi > 0, rng.uniform(4, 30, n), 1),
        "lactate": 1.2 * np.exp(rng.normal(0, 0.3, n)) * np.where(
            sepsis > 0, rng.uniform(1.4, 4.0, n), 1.0),
        "inr": 1.05 * np.exp(rng.normal(0, 0.06, n)) * np.where(
            (af > 0) & (rng.random(n) < 0.6), rng.uniform(1.7, 3.0, n), 1.0) * (1 + 0.2 * sepsis),
        "tsh": 1.8 * np.exp(rng.normal(0, 0.65, n)),
        "ast": 24 * np.exp(rng.normal(0, 0.4, n)) * (1 + sepsis + 0.3 * hf + mi),
        "alt": 22 * np.exp(rng.normal(0, 0.45, n)) * (1 + 0.8 * sepsis + 0.3 * hf),
        "bilirubin": 0.55 * np.exp(rng.normal(0, 0.45, n)) * (1 + 0.8 * sepsis + 0.3 * hf),
    }


def clip_labs(values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Clip every lab to its physiological bounds, in ``LAB_SPECS`` order."""
    return pd.DataFrame({name: np.clip(values[name], spec.low, spec.high)
                         for name, spec in LAB_SPECS.items()})


def episode_latent_labs(rng: np.random.Generator, frame: pd.DataFrame,
                        n_patients: int) -> pd.DataFrame:
    """Latent labs per episode row of ``frame`` (conditions, ``gender``, ``age``, ``patient``)."""
    n = len(frame)
    patient_fx = pd.DataFrame({
        "hb_offset": rng.normal(0, 0.9, n_patients),
        "ckd_factor": np.exp(rng.uniform(np.log(1.6), np.log(5.0), n_patients)),
    }).iloc[frame["patient"].to_numpy()].reset_index(drop=True)
    values = _electrolytes(rng, frame, n)
    values |= _renal_blood(rng, frame, n, patient_fx)
    values |= _cardiac_other(rng, frame, n, frame["age"].to_numpy(dtype=float))
    return clip_labs(values)


def drift_labs(rng: np.random.Generator, labs: pd.DataFrame, scale: np.ndarray | float
               ) -> pd.DataFrame:
    """``labs`` moved by each lab's intra-episode variation times ``scale`` (per row)."""
    n = len(labs)
    scale = np.broadcast_to(np.asarray(scale, dtype=float), (n,))
    moved = {}
    for name, spec in LAB_SPECS.items():
        step = rng.normal(0.0, spec.intra_sd, n) * scale
        value = labs[name].to_numpy()
        moved[name] = value * np.exp(step) if spec.log else value + step
    return clip_labs(moved)


LAB_CONDITIONS = ("hyperkalemia", "hypokalemia", "hyponatremia", "anemia")


def lab_conditions(labs: pd.DataFrame, gender: pd.Series) -> dict[str, np.ndarray]:
    """Conditions defined by the latent labs at the ECG: electrolyte disorders and anemia."""
    hb_limit = np.where(gender.to_numpy() == "M", 12.5, 11.5)
    return {
        "hyperkalemia": labs["potassium"].to_numpy() > 5.5,
        "hypokalemia": labs["potassium"].to_numpy() < 3.4,
        "hyponatremia": labs["sodium"].to_numpy() < 133.0,
        "anemia": labs["hemoglobin"].to_numpy() < hb_limit,
    }
