"""Linking: real MIMIC demo counts, hand-computed rows, labels, diagnoses and folds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders.raw_sites import make_generic_site, make_mimic_site
from conftest import ECG_DEMO_RECORD_LIST, MIMIC_DEMO

from fedecg.config.data import CohortConfig
from fedecg.data.cohort import (
    abnormality_labels,
    build_cohort,
    diagnosis_matrix,
    nearest_events,
    patient_folds,
    resolve_diagnosis_set,
    resolve_panel,
)
from fedecg.data.generic import read_site_ecgs, read_site_tables
from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.data.mimic import read_mimic_tables, read_record_list
from fedecg.data.tables import Rejects
from fedecg.errors import ConfigError

POTASSIUM = (50971, 50822)


@pytest.fixture(scope="module")
def demo(shared_data: Path) -> dict:
    """The real demo record list linked to the real clinical demo (no-valuenum rows skipped)."""
    rejects = Rejects("skip")
    ecgs = read_record_list(ECG_DEMO_RECORD_LIST.parent, rejects)
    tables = read_mimic_tables(MIMIC_DEMO, ecgs["subject_id"].unique(), DEFAULT_LAB_PANEL, rejects)
    cohort = build_cohort(ecgs, tables, CohortConfig())
    raw = pd.read_csv(MIMIC_DEMO / "hosp" / "labevents.csv.gz",
                      usecols=["subject_id", "itemid", "charttime", "valuenum"],
                      parse_dates=["charttime"])
    return {"ecgs": ecgs, "cohort": cohort, "raw": raw, "rejects": rejects}


def _cross_join_hours(ecgs: pd.DataFrame, labs: pd.DataFrame) -> pd.DataFrame:
    """Independent check: every (ECG, lab row) pair of a subject with |hours| between them."""
    pairs = ecgs[["study_id", "subject_id", "ecg_time"]].merge(labs, on="subject_id")
    pairs["hours"] = (pairs["charttime"] - pairs["ecg_time"]).abs() / pd.Timedelta(hours=1)
    return pairs


def test_real_demo_any_lab_linkage_matches_published_counts(demo: dict) -> None:
    # "any lab" = any labevents row (any itemid, with or without valuenum) of the subject
    events = demo["raw"].rename(columns={"charttime": "time"})
    near = nearest_events(demo["ecgs"], events, pd.Timedelta(hours=24))
    hours = near["offset_hours"].abs()
    assert len(demo["ecgs"]) == 659
    assert int((hours <= 24).sum()) == 560
    assert int((hours <= 1).sum()) == 287
    pairs = _cross_join_hours(demo["ecgs"], demo["raw"])
    assert pairs.loc[pairs["hours"] <= 24, "study_id"].nunique() == 560
    assert pairs.loc[pairs["hours"] <= 1, "study_id"].nunique() == 287


def test_real_demo_potassium_features_match_a_brute_force_nearest(demo: dict) -> None:
    cohort = demo["cohort"]
    assert int(cohort["lab_potassium"].notna().sum()) == 547
    assert int((cohort["lab_potassium"] > 5.5).sum()) == 41
    raw = demo["raw"]
    potassium = raw[raw["itemid"].isin(POTASSIUM) & raw["valuenum"].notna()]
    pairs = _cross_join_hours(demo["ecgs"], potassium)
    pairs = pairs[pairs["hours"] <= 24].sort_values(["study_id", "hours", "charttime"])
    nearest = pairs.groupby("study_id")["hours"].min()
    assert len(nearest) == 547
    linked = cohort.set_index("study_id")["lab_potassium"].dropna()
    # brute force: the cohort's value is one of the values at the minimal distance
    best = pairs.merge(nearest.rename("best"), on="study_id")
    best = best[np.isclose(best["hours"], best["best"])]
    ok = best.groupby("study_id").apply(
        lambda g: np.isclose(g["valuenum"], linked[g.name], rtol=1e-6).any())  # float32
    assert ok.all() and len(ok) == 547


def test_real_demo_rejects_only_panel_rows_without_a_number(demo: dict) -> None:
    rejects = demo["rejects"].frame()
    assert len(rejects) > 0
    assert rejects["path"].str.endswith("labevents.csv.gz").all()
    assert rejects["reason"].str.contains("valuenum").all()
    raw = demo["raw"]
    subjects = set(demo["ecgs"]["subject_id"])
    panel = {i for lab in DEFAULT_LAB_PANEL for i in lab.itemids}
    missing = raw[raw["itemid"].isin(panel) & raw["valuenum"].isna()
                  & raw["subject_id"].isin(subjects)]
    assert len(rejects) == len(missing)


def test_real_demo_cohort_is_complete_and_patient_grouped(demo: dict) -> None:
    cohort = demo["cohort"]
    assert cohort["age"].notna().all() and cohort["sex_male"].isin([0, 1]).all()
    assert cohort.groupby("subject_id")["split"].nunique().max() == 1
    in_stay = cohort["stay_id"].notna()
    assert cohort.loc[~in_stay, "dx_atrial_fibrillation"].isna().all()
    assert cohort.loc[in_stay, "dx_atrial_fibrillation"].notna().all()
    # every known potassium_high label agrees with a value within the 6 h label window
    known = cohort["abn_potassium_high"].notna()
    assert (cohort.loc[known, "nearest_lab_hours"] <= 6).all()


def test_handmade_mimic_rows_match_hand_computation(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    rejects = Rejects("raise")
    ecgs = read_record_list(ecg_root, rejects)
    tables = read_mimic_tables(mimic_root, ecgs["subject_id"], DEFAULT_LAB_PANEL, rejects)
    c = build_cohort(ecgs, tables, CohortConfig()).set_index("study_id")
    first = c.loc[40000001]
    assert np.floor(first["age"]) == 60 and first["sex_male"] == 1
    assert first["weight_kg"] == pytest.approx(176 * 0.45359237, rel=1e-6)
    assert first["height_cm"] == pytest.approx(177.8, rel=1e-6)
    assert first["bmi"] == pytest.approx(79.832 / 1.778**2, rel=1e-3)
    assert (first["sbp"], first["dbp"]) == (130, 85)
    assert first["lab_potassium"] == 6.0 and first["abn_potassium_high"] == 1
    assert first["abn_potassium_low"] == 0
    assert first["lab_sodium"] == 130 and np.isnan(first["abn_sodium_low"])
    assert first["nearest_lab_hours"] == 1.0
    assert (first["dx_atrial_fibrillation"], first["dx_heart_failure"]) == (1, 1)
    assert first["dx_hyperkalemia"] == 0 and first["cart_id"] == "1"
    assert c.loc[40000002, ["lab_potassium", "dx_heart_failure", "sbp"]].isna().all()
    third = c.loc[40000003]
    assert third["abn_hemoglobin_low"] == 1 and np.isnan(third["dx_hyperkalemia"])
    fourth = c.loc[40000004, ["lab_potassium", "abn_potassium_high", "nearest_lab_hours"]]
    assert fourth.isna().all()


def test_handmade_generic_rows_match_hand_computation(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    rejects = Rejects("raise")
    tables = read_site_tables(site, DEFAULT_LAB_PANEL, rejects)
    c = build_cohort(read_site_ecgs(site, rejects), tables, CohortConfig()).set_index("study_id")
    assert c.loc["E1", "age"] == pytest.approx(64.0, abs=0.01)
    assert c.loc["E1", "bmi"] == pytest.approx(70 / 1.65**2, rel=1e-5)
    assert c.loc["E1", "heart_rate"] == 88 and c.loc["E2", "heart_rate"] == 88  # 23.9 h
    assert (c.loc["E1", "abn_potassium_high"], c.loc["E1", "abn_potassium_low"]) == (1, 0)
    assert c.loc["E1", "abn_hemoglobin_low"] == 1
    assert c.loc["E1", "lab_creatinine"] == 1.0 and np.isnan(c.loc["E1", "abn_creatinine_high"])
    assert c.loc["E2", "abn_creatinine_high"] == 0  # exactly 6 h: inside the window
    assert c.loc["E3", "abn_sodium_high"] == 1  # no range, no flag: default 133-145
    assert (c.loc["E1", "dx_heart_failure"], c.loc["E1", "dx_ckd"]) == (1, 1)
    assert c.loc["E3", "stay_kind"] == "ed" and c.loc["E3", "dx_atrial_fibrillation"] == 1
    assert np.isnan(c.loc["E2", "dx_heart_failure"])


def test_abnormality_uses_row_range_then_flag_then_panel_default() -> None:
    potassium = DEFAULT_LAB_PANEL[0]  # default range 3.3-5.1
    nearest = pd.DataFrame({
        "value": [5.3, 5.3, 5.0, 3.0, 5.3, np.nan],
        "ref_low": [3.5, np.nan, np.nan, np.nan, np.nan, np.nan],
        "ref_high": [5.5, np.nan, np.nan, np.nan, np.nan, np.nan],
        "flag": [1.0, np.nan, 1.0, 1.0, 0.0, np.nan]})
    labels = abnormality_labels(nearest, potassium)
    # row range wins over the flag; default range; flag without range: side of the midpoint
    assert labels["abn_potassium_high"].tolist()[:5] == [0, 1, 1, 0, 1]
    assert labels["abn_potassium_low"].tolist()[:5] == [0, 0, 0, 1, 0]
    assert labels.iloc[5].isna().all()


def test_nearest_events_respects_window_and_ties() -> None:
    ecgs = pd.DataFrame({"subject_id": [1, 1, 2], "ecg_time": pd.to_datetime(
        ["2100-01-01 12:00", "2100-01-02 12:00", "2100-01-01 12:00"])})
    events = pd.DataFrame({"subject_id": [1, 1, 2], "time": pd.to_datetime(
        ["2100-01-01 10:00", "2100-01-01 14:00", "2100-01-02 13:00"]), "value": [1.0, 2.0, 3.0]})
    near = nearest_events(ecgs, events, pd.Timedelta(hours=24), ["value"])
    assert near["value"].tolist()[:2] == [1.0, 2.0]  # the tie at 2 h goes to the earlier event
    assert near["offset_hours"].tolist()[:2] == [-2.0, -22.0]
    assert np.isnan(near["value"].iloc[2]) and np.isnan(near["offset_hours"].iloc[2])  # 25 h


def test_diagnosis_prefixes_match_by_version() -> None:
    dx = pd.DataFrame({"stay_id": ["a", "a", "b"], "code": ["I48.0", "42731", "4280"],
                       "system": ["icd10", "icd10", "icd9"]})
    matrix = diagnosis_matrix(dx, resolve_diagnosis_set(CohortConfig()))
    assert matrix.loc["a", "dx_atrial_fibrillation"] == 1  # 42731 as ICD-10 does not count
    assert matrix.loc["b", "dx_heart_failure"] == 1
    assert matrix.loc["b", "dx_atrial_fibrillation"] == 0


def test_folds_are_deterministic_patient_grouped_and_seeded() -> None:
    subjects = pd.Series(np.repeat(np.arange(2000), 3))
    folds = patient_folds(subjects, 10, seed=0)
    assert np.array_equal(folds, patient_folds(subjects, 10, seed=0))
    assert pd.Series(folds).groupby(subjects).nunique().max() == 1
    counts = np.bincount(folds[::3], minlength=10)
    assert counts.min() > 150 and counts.max() < 250
    assert not np.array_equal(folds, patient_folds(subjects, 10, seed=1))
    assert np.array_equal(patient_folds(pd.Series([5, 7]), 10, 0),
                          patient_folds(pd.Series(["5", "7"]), 10, 0))


def test_custom_panel_and_labels_are_validated() -> None:
    config = CohortConfig(lab_panel=[{"name": "potassium", "itemids": [50971], "unit": "mEq/L",
                                      "ref_low": 3.5, "ref_high": 5.0, "directions": ["high"]}],
                          diagnosis_labels=[{"name": "af", "icd10": ["I48"], "icd9": ["42731"]}])
    assert [lab.name for lab in resolve_panel(config)] == ["potassium"]
    assert [d.name for d in resolve_diagnosis_set(config)] == ["af"]
    bad = CohortConfig(lab_panel=[{"name": "K", "itemids": [1], "unit": "x", "ref_low": 0,
                                   "ref_high": 1, "directions": ["up"]}])
    with pytest.raises(ConfigError, match=r"cohort.lab_panel\[0\]: name"):
        resolve_panel(bad)
    twice = CohortConfig(diagnosis_labels=[{"name": "af"}, {"name": "af"}])
    with pytest.raises(ConfigError, match="'af'"):
        resolve_diagnosis_set(twice)
    with pytest.raises(ValueError, match="both val and test"):
        CohortConfig(val_folds=[1], test_folds=[1])
