"""MIMIC-IV ``hosp`` tables of the twin: patients, admissions, omr, diagnoses_icd.

Diagnoses are coded noisily: a true condition is coded with a condition- and site-dependent
probability (under-coding), absent conditions are sometimes coded (false codes), and unrelated
filler codes surround them, as in real discharge coding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedecg.data.synth.assemble import CONDITIONS, World
from fedecg.data.synth.icd import CONDITION_CODES, FILLER_CODES

PATIENT_COLUMNS = ["subject_id", "gender", "anchor_age", "anchor_year", "anchor_year_group", "dod"]
ADMISSION_COLUMNS = ["subject_id", "hadm_id", "admittime", "dischtime", "deathtime",
                     "admission_type", "admit_provider_id", "admission_location",
                     "discharge_location", "insurance", "language", "marital_status", "race",
                     "edregtime", "edouttime", "hospital_expire_flag"]
OMR_COLUMNS = ["subject_id", "chartdate", "seq_num", "result_name", "result_value"]
DIAGNOSES_COLUMNS = ["subject_id", "hadm_id", "seq_num", "icd_code", "icd_version"]

CODING_RATE: dict[str, float] = {
    "atrial_fibrillation": 0.85, "heart_failure": 0.8, "acute_mi": 0.9, "chronic_ischemic": 0.75,
    "hypertension": 0.8, "conduction_disease": 0.55, "cardiomyopathy": 0.7, "ckd": 0.8,
    "aki": 0.75, "hyperkalemia": 0.55, "hypokalemia": 0.55, "hyponatremia": 0.55,
    "diabetes": 0.85, "anemia": 0.55, "sepsis": 0.85, "copd": 0.75, "pulmonary_embolism": 0.9,
}
FALSE_CODE_RATE = 0.01
_ADMISSION_TYPE = {"EMERGENCY ROOM": "EW EMER.", "WALK-IN/SELF REFERRAL": "EU OBSERVATION",
                   "PHYSICIAN REFERRAL": "URGENT", "TRANSFER FROM HOSPITAL": "URGENT",
                   "CLINIC REFERRAL": "ELECTIVE", "PROCEDURE SITE": "SURGICAL SAME DAY ADMISSION",
                   "TRANSFER FROM SKILLED NURSING FACILITY": "URGENT"}
_CHOICES = {
    "insurance": (("Medicare", 0.45), ("Other", 0.4), ("Medicaid", 0.15)),
    "language": (("ENGLISH", 0.92), ("?", 0.08)),
    "marital_status": (("MARRIED", 0.4), ("SINGLE", 0.35), ("WIDOWED", 0.15), ("DIVORCED", 0.1)),
    "race": (("WHITE", 0.62), ("BLACK/AFRICAN AMERICAN", 0.18), ("HISPANIC/LATINO - PUERTO RICAN",
             0.06), ("ASIAN", 0.05), ("UNKNOWN", 0.06), ("OTHER", 0.03)),
}
_TIME = "%Y-%m-%d %H:%M:%S"


def _pick(rng: np.random.Generator, options: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    names, weights = zip(*options, strict=True)
    return rng.choice(np.array(names, dtype=object), size=n, p=np.array(weights) / sum(weights))


def _fmt(times: pd.Series) -> pd.Series:
    return times.dt.strftime(_TIME)


def admission_frame(rng: np.random.Generator, world: World) -> pd.DataFrame:
    """One row per admission, with discharge time, death and site-specific provenance."""
    eps = world.episodes[world.episodes["admitted"]].copy()
    n = len(eps)
    eps["dischtime"] = eps["start"] + pd.to_timedelta(np.round(eps["los_days"] * 1440), "min")
    eps["died"] = eps["is_last"] & eps["sepsis"] & (rng.random(n) < 0.15)
    site_of = eps["hospital"].to_numpy()
    eps["admission_location"] = [_pick(rng, world.sites[h].admission_locations, 1)[0]
                                 for h in site_of]
    eps["admit_provider_id"] = [world.sites[h].provider_ids[i % 25]
                                for h, i in zip(site_of, rng.integers(0, 25, n), strict=True)]
    return eps


def patients_table(world: World, admissions: pd.DataFrame) -> pd.DataFrame:
    """``patients``: anchor age and year group, date of death for in-hospital deaths."""
    pats = world.patients
    dead = admissions[admissions["died"]]
    dod = pd.Series(dead["dischtime"].dt.strftime("%Y-%m-%d").to_numpy(),
                    index=pats["subject_id"].to_numpy()[dead["patient"].to_numpy()])
    return pd.DataFrame({
        "subject_id": pats["subject_id"], "gender": pats["gender"],
        "anchor_age": pats["age0"].astype(int), "anchor_year": pats["anchor_year"],
        "anchor_year_group": pats["anchor_year_group"],
        "dod": dod.reindex(pats["subject_id"]).to_numpy(),
    })[PATIENT_COLUMNS]


def admissions_table(rng: np.random.Generator, world: World,
                     admissions: pd.DataFrame) -> pd.DataFrame:
    """``admissions`` with MIMIC's columns; ED registration times for ED admissions."""
    a = admissions
    n = len(a)
    via_ed = (a["admission_location"] == "EMERGENCY ROOM").to_numpy()
    edreg = a["start"] - pd.to_timedelta(rng.integers(90, 600, n), "min")
    edout = a["start"] + pd.to_timedelta(rng.integers(0, 90, n), "min")
    table = pd.DataFrame({
        "subject_id": world.patients["subject_id"].to_numpy()[a["patient"].to_numpy()],
        "hadm_id": a["hadm_id"].to_numpy(),
        "admittime": _fmt(a["start"]), "dischtime": _fmt(a["dischtime"]),
        "deathtime": _fmt(a["dischtime"]).where(a["died"]),
        "admission_type": a["admission_location"].map(_ADMISSION_TYPE),
        "admit_provider_id": a["admit_provider_id"],
        "admission_location": a["admission_location"],
        "discharge_location": np.where(a["died"], "DIED", _pick(rng, (
            ("HOME", 0.45), ("HOME HEALTH CARE", 0.3), ("SKILLED NURSING FACILITY", 0.15),
            ("REHAB", 0.1)), n)),
        **{column: _pick(rng, options, n) for column, options in _CHOICES.items()},
        "edregtime": _fmt(edreg).where(via_ed), "edouttime": _fmt(edout).where(via_ed),
        "hospital_expire_flag": a["died"].astype(int).to_numpy(),
    })
    return table[ADMISSION_COLUMNS].sort_values(["subject_id", "admittime"]).reset_index(drop=True)


def admission_truth(world: World) -> pd.DataFrame:
    """True conditions of each admission: any condition true at one of its ECGs or episode."""
    ecgs = world.ecgs[world.ecgs["admitted"]]
    per_ecg = ecgs.groupby("hadm_id")[list(CONDITIONS)].any()
    eps = world.episodes[world.episodes["admitted"]].set_index("hadm_id")
    pats = world.patients.iloc[eps["patient"].to_numpy()]
    base = pd.DataFrame(False, index=eps.index, columns=list(CONDITIONS))
    for name in CONDITIONS:
        if name in eps.columns:
            base[name] = eps[name].to_numpy(dtype=bool)
        elif name in pats.columns:
            base[name] = pats[name].to_numpy(dtype=bool)
    return base | per_ecg.reindex(base.index, fill_value=False)


def _icd_version(world: World, admissions: pd.DataFrame) -> np.ndarray:
    pats = world.patients.iloc[admissions["patient"].to_numpy()]
    real_year = (pats["anchor_year_group"].str[:4].astype(int).to_numpy()
                 + admissions["start"].dt.year.to_numpy() - pats["anchor_year"].to_numpy())
    return np.where(real_year + 1 >= 2016, 10, 9)


def diagnoses_table(rng: np.random.Generator, world: World, admissions: pd.DataFrame
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``diagnoses_icd`` and the coded flags per admission (hadm_id x condition)."""
    truth = admission_truth(world).reindex(admissions["hadm_id"].to_numpy())
    site_rate = np.array([world.sites[h].coding_rate for h in admissions["hospital"]])
    rates = np.clip(np.outer(site_rate, [CODING_RATE[c] for c in CONDITIONS]), 0.0, 0.97)
    draws = rng.random(truth.shape)
    coded = np.where(truth.to_numpy(), draws < rates, draws < FALSE_CODE_RATE)
    versions = _icd_version(world, admissions)
    subjects = world.patients["subject_id"].to_numpy()[admissions["patient"].to_numpy()]
    rows = []
    for i, hadm in enumerate(admissions["hadm_id"].to_numpy()):
        version = int(versions[i])
        codes = [CONDITION_CODES[c][version][rng.integers(len(CONDITION_CODES[c][version]))][0]
                 for c in np.array(CONDITIONS)[coded[i]]]
        filler = FILLER_CODES[version]
        picks = rng.choice(len(filler), size=int(rng.integers(1, 6)), replace=False)
        codes += [filler[j][0] for j in picks]
        order = rng.permutation(len(codes))
        rows += [(subjects[i], hadm, seq + 1, codes[j], version) for seq, j in enumerate(order)]
    table = pd.DataFrame(rows, columns=DIAGNOSES_COLUMNS)
    return table, pd.DataFrame(coded, index=truth.index, columns=list(CONDITIONS))


def omr_table(rng: np.random.Generator, world: World) -> pd.DataFrame:
    """``omr``: weight, height, BMI and blood pressure on a few visit dates per patient."""
    eps = world.episodes
    pats = world.patients.iloc[eps["patient"].to_numpy()].reset_index(drop=True)
    n = len(eps)
    when = (eps["start"] - pd.to_timedelta(rng.integers(1, 90, n), "D")).dt.strftime("%Y-%m-%d")
    weight = pats["bmi"] * pats["height_in"] ** 2 / 703.0 * np.exp(rng.normal(0, 0.02, n))
    systolic = 124 + 14 * pats["hypertension"].to_numpy() + rng.normal(0, 13, n)
    diastolic = 0.5 * systolic + 14 + rng.normal(0, 7, n)
    items = {
        "Weight (Lbs)": (np.ones(n, bool), np.round(weight, 1).astype(str)),
        "Blood Pressure": (rng.random(n) < 0.9, [f"{s:.0f}/{d:.0f}" for s, d in
                                                  zip(systolic, diastolic, strict=True)]),
        "BMI (kg/m2)": (rng.random(n) < 0.8, np.round(pats["bmi"], 1).astype(str)),
        "Height (Inches)": (rng.random(n) < 0.35, pats["height_in"].astype(str)),
    }
    frames = [pd.DataFrame({"subject_id": pats["subject_id"][mask], "chartdate": when[mask],
                            "seq_num": 1, "result_name": name,
                            "result_value": np.asarray(values)[mask]})
              for name, (mask, values) in items.items()]
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["subject_id", "chartdate"], kind="stable")[OMR_COLUMNS]
