"""Who the twin's patients are: demographics, chronic conditions, care episodes and ECG times.

Everything is drawn from one ``numpy`` Generator so the population is fixed by the seed.
Condition names are the names of ``DEFAULT_DIAGNOSIS_LABELS``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedecg.data.synth.sites import SiteProfile

CHRONIC = ("hypertension", "diabetes", "copd", "chronic_ischemic", "ckd", "heart_failure",
           "cardiomyopathy", "atrial_fibrillation", "conduction_disease")
ACUTE = ("acute_mi", "sepsis", "pulmonary_embolism", "aki")
CONDUCTION_TYPES = ("avb1", "rbbb", "lbbb", "lafb")
YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
SECONDS_PER_DAY = 86_400


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _draw(rng: np.random.Generator, logit: np.ndarray, shift: np.ndarray) -> np.ndarray:
    return rng.random(len(logit)) < _sigmoid(logit + shift)


def _chronic(rng: np.random.Generator, age: np.ndarray, male: np.ndarray,
             shift: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Chronic conditions drawn in causal order (age and earlier conditions raise later ones)."""
    z = (age - 60.0) / 15.0
    c: dict[str, np.ndarray] = {}
    c["hypertension"] = _draw(rng, -0.1 + 1.0 * z, shift["hypertension"])
    c["diabetes"] = _draw(rng, -1.4 + 0.4 * z + 0.5 * c["hypertension"], shift["diabetes"])
    c["copd"] = _draw(rng, -2.3 + 0.5 * z, shift["copd"])
    c["chronic_ischemic"] = _draw(rng, -2.0 + 0.9 * z + 0.5 * c["hypertension"]
                                  + 0.5 * c["diabetes"] + 0.4 * male, shift["chronic_ischemic"])
    c["ckd"] = _draw(rng, -2.3 + 0.8 * z + 0.7 * c["hypertension"] + 0.8 * c["diabetes"],
                     shift["ckd"])
    c["heart_failure"] = _draw(rng, -2.7 + 0.8 * z + 0.9 * c["chronic_ischemic"]
                               + 0.5 * c["hypertension"] + 0.6 * c["ckd"], shift["heart_failure"])
    c["cardiomyopathy"] = _draw(rng, -3.8 + 2.2 * c["heart_failure"], shift["cardiomyopathy"])
    c["atrial_fibrillation"] = _draw(rng, -2.7 + 1.0 * z + 1.1 * c["heart_failure"]
                                     + 0.3 * c["hypertension"], shift["atrial_fibrillation"])
    c["conduction_disease"] = _draw(rng, -2.9 + 0.8 * z + 0.6 * c["chronic_ischemic"]
                                    + 0.6 * c["cardiomyopathy"], shift["conduction_disease"])
    return c


def _shifts(sites: list[SiteProfile], hospital: np.ndarray, names: tuple[str, ...]
            ) -> dict[str, np.ndarray]:
    table = np.array([[s.condition_shift.get(n, 0.0) for n in names] for s in sites])
    return {n: table[hospital, i] for i, n in enumerate(names)}


def sample_patients(rng: np.random.Generator, n: int, sites: list[SiteProfile]) -> pd.DataFrame:
    """One row per patient: site, demographics, biometrics, chronic conditions, random effects."""
    hospital = np.sort(rng.integers(0, len(sites), size=n))
    age_mean = np.array([s.age_mean for s in sites])[hospital]
    age_sd = np.array([s.age_sd for s in sites])[hospital]
    age = np.clip(rng.normal(age_mean, age_sd), 18, 91)
    male = rng.random(n) < 0.5
    shift = _shifts(sites, hospital, CHRONIC)
    cond = _chronic(rng, age, male, shift)
    height = np.where(male, rng.normal(69.5, 3.0, n), rng.normal(64.0, 2.8, n))
    bmi = np.clip(rng.normal(27.5, 5.5, n) + 2.0 * cond["diabetes"], 16, 55)
    gaps = rng.integers(1, 40, size=n)
    frame = pd.DataFrame({
        "subject_id": 10_000_000 + np.cumsum(gaps) * 37 + rng.integers(0, 37, size=n),
        "hospital": hospital,
        "gender": np.where(male, "M", "F"),
        "age0": age,
        "anchor_year": rng.integers(2110, 2200, size=n),
        "anchor_year_group": rng.choice(YEAR_GROUPS, size=n, p=[0.2, 0.25, 0.25, 0.2, 0.1]),
        "height_in": np.round(height, 1),
        "bmi": bmi,
    })
    frame = pd.concat([frame, patient_effects(rng, cond["hypertension"],
                                              cond["chronic_ischemic"])], axis=1)
    for name in CHRONIC:
        frame[name] = cond[name]
    return frame


def patient_effects(rng: np.random.Generator, hypertension: np.ndarray,
                    chronic_ischemic: np.ndarray) -> pd.DataFrame:
    """Per-patient ECG traits: conduction type, LVH, old infarct, AF pattern, gains, axis."""
    n = len(hypertension)
    return pd.DataFrame({
        "conduction_type": rng.choice(CONDUCTION_TYPES, size=n, p=[0.35, 0.3, 0.2, 0.15]),
        "lvh": np.asarray(hypertension, bool) & (rng.random(n) < 0.3),
        "old_mi": np.asarray(chronic_ischemic, bool) & (rng.random(n) < 0.5),
        "infarct_territory": rng.choice(["anterior", "inferior"], size=n),
        "af_persistent": rng.random(n) < 0.75,
        "hr_base": rng.normal(72.0, 8.0, n),
        "axis_base": rng.normal(48.0, 18.0, n),
        "qrs_gain": np.exp(rng.normal(0.0, 0.2, n)),
        "t_gain": np.exp(rng.normal(0.0, 0.35, n)),
        "precordial_gain": np.exp(rng.normal(0.0, 0.15, n)),
    })


def sample_episodes(rng: np.random.Generator, patients: pd.DataFrame,
                    sites: list[SiteProfile]) -> pd.DataFrame:
    """Care episodes (admissions or ED/outpatient visits) with their acute conditions."""
    counts = np.clip(1 + rng.poisson(0.9, size=len(patients)), 1, 4)
    owner = np.repeat(np.arange(len(patients)), counts)
    n = len(owner)
    pat = patients.iloc[owner].reset_index(drop=True)
    first = np.r_[True, owner[1:] != owner[:-1]]
    gaps = np.where(first, rng.uniform(0, 365, n), 12 + rng.exponential(220, n))
    day = pd.Series(gaps).groupby(owner).cumsum().to_numpy()
    hospital = pat["hospital"].to_numpy()
    admission_rate = np.array([s.admission_rate for s in sites])[hospital]
    admitted = rng.random(n) < admission_rate
    shift = _shifts(sites, hospital, ACUTE)
    z = (pat["age0"].to_numpy() + day / 365.25 - 60.0) / 15.0
    acute: dict[str, np.ndarray] = {}
    acute["acute_mi"] = _draw(rng, -4.2 + 1.4 * pat["chronic_ischemic"] + 0.3 * z
                              + 1.0 * admitted, shift["acute_mi"])
    acute["sepsis"] = _draw(rng, -4.3 + 0.4 * z + 0.4 * pat["diabetes"] + 1.5 * admitted,
                            shift["sepsis"])
    acute["pulmonary_embolism"] = _draw(rng, -5.2 + 1.0 * admitted, shift["pulmonary_embolism"])
    acute["aki"] = _draw(rng, -3.8 + 1.1 * pat["ckd"] + 1.6 * acute["sepsis"]
                         + 0.6 * pat["heart_failure"] + 0.8 * admitted, shift["aki"])
    los = np.where(admitted, 0.5 + rng.gamma(2.0, 1.6, n) + 3.0 * acute["sepsis"], 0.25)
    start = (pd.to_datetime(pat["anchor_year"].astype(str) + "-01-01").to_numpy()
             + (day * SECONDS_PER_DAY).astype("timedelta64[s]")
             + (rng.integers(0, 24 * 60, n) * 60).astype("timedelta64[s]"))
    episodes = pd.DataFrame({
        "patient": owner, "hospital": hospital, "admitted": admitted,
        "start": start, "los_days": los, "is_last": np.r_[owner[1:] != owner[:-1], True],
        "mi_territory": rng.choice(["anterior", "inferior"], size=n),
        "af_today": pat["atrial_fibrillation"].to_numpy()
        & (pat["af_persistent"].to_numpy() | (rng.random(n) < 0.5)),
    })
    for name in ACUTE:
        episodes[name] = acute[name]
    return episodes


def sample_ecg_times(rng: np.random.Generator, episodes: pd.DataFrame) -> pd.DataFrame:
    """ECGs of each episode: 1-4 spread over an admission, 1-2 within hours of a visit."""
    admitted = episodes["admitted"].to_numpy()
    per = np.where(admitted, np.clip(1 + rng.poisson(0.8, len(episodes)), 1, 4),
                   1 + (rng.random(len(episodes)) < 0.25))
    owner = np.repeat(np.arange(len(episodes)), per)
    ep = episodes.iloc[owner].reset_index(drop=True)
    first = np.r_[True, owner[1:] != owner[:-1]]
    span_h = ep["los_days"].to_numpy() * 24.0
    hours = np.where(first, rng.uniform(0.1, np.minimum(3.0, span_h * 0.9)),
                     rng.uniform(0.0, span_h * 0.97))
    seconds = np.round(hours * 3600).astype("int64")
    frame = pd.DataFrame({"episode": owner, "patient": ep["patient"].to_numpy(),
                          "ecg_time": ep["start"].to_numpy() + seconds.astype("timedelta64[s]")})
    frame = frame.sort_values(["patient", "ecg_time"], kind="stable").reset_index(drop=True)
    # at most 6 ECGs per patient, as in the brief; keep each patient's first ones
    rank = frame.groupby("patient").cumcount()
    return frame[rank < 6].reset_index(drop=True)
