"""The MIMIC layout: MIMIC-IV-ECG (record list, machine measurements) + MIMIC-IV hosp/ and ed/.

Both MIMIC-IV-ECG v1.0 paths (``files/pNNNN/pSUBJECT/sSTUDY/STUDY``) and demo v0.1 paths
(``files/pSUBJECT/sSTUDY/STUDY``) work: the record list's ``path`` column is used as given.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.data.cohort import VITALS, ClinicalTables
from fedecg.data.ecg_windows import EcgWindows
from fedecg.data.labs import LabDefinition, itemid_to_lab
from fedecg.data.tables import (
    LINE,
    Rejects,
    RowFilter,
    drop_bad_rows,
    drop_duplicates,
    drop_reversed_spans,
    find_table,
    has_table,
    parse_numbers,
    parse_times,
    read_csv_checked,
    read_labevents,
)
from fedecg.errors import InputFileError

LBS_TO_KG = 0.45359237
INCH_TO_CM = 2.54
OMR_NUMERIC = {"BMI (kg/m2)": ("bmi", 1.0), "Weight (Lbs)": ("weight_kg", LBS_TO_KG),
               "Height (Inches)": ("height_cm", INCH_TO_CM)}
ED_VITALS = {"heartrate": "heart_rate", "sbp": "sbp", "dbp": "dbp", "resprate": "resp_rate",
             "o2sat": "o2sat", "temperature": "temperature"}
MACHINE_COLUMNS = ("cart_id", "bandwidth", "filtering")


def hosp_dir(mimic_root: Path) -> Path:
    """``MIMIC_ROOT/hosp``, checked to exist."""
    hosp = Path(mimic_root) / "hosp"
    if not hosp.is_dir():
        raise InputFileError(f"{hosp}: folder not found; --mimic-root must hold MIMIC-IV's hosp/ "
                             "(patients, admissions, labevents, omr, diagnoses_icd)")
    return hosp


def _ids(frame: pd.DataFrame, columns: Sequence[str], path: Path, rejects: Rejects,
         study_column: str | None = None) -> pd.DataFrame:
    for column in columns:
        frame = parse_numbers(frame, column, path, rejects, study_column=study_column,
                              what="an integer id")
        frame[column] = frame[column].astype("int64")
    return frame


def read_record_list(ecg_root: Path, rejects: Rejects) -> pd.DataFrame:
    """ECGs of ``record_list.csv``: ``study_id, subject_id, ecg_time, record_path`` (+ cart)
    and the file's ``_line``."""
    path = find_table(ecg_root, "record_list")
    frame = read_csv_checked(path, ["subject_id", "study_id", "ecg_time", "path"])
    frame = _ids(frame, ["study_id", "subject_id"], path, rejects, study_column="study_id")
    frame = parse_times(frame, "ecg_time", path, rejects, study_column="study_id")
    frame = drop_duplicates(frame, "study_id", path, rejects)
    frame["record_path"] = joined_paths(Path(ecg_root), frame["path"])
    ecgs = frame[["study_id", "subject_id", "ecg_time", "record_path", LINE]]
    if has_table(ecg_root, "machine_measurements"):
        ecgs = ecgs.merge(_machine(ecg_root, rejects), on="study_id", how="left")
    return ecgs


def joined_paths(root: Path, paths: pd.Series) -> pd.Series:
    """``str(root / path)`` of each path: plain relative paths joined as text, with no Python
    object per row; others (absolute, ``.`` parts, repeated or trailing ``/``) by ``pathlib``."""
    plain = paths.str.fullmatch(r"[^/]+(/[^/]+)*") & ~paths.str.contains(r"(?:^|/)\.(?:/|$)")
    joined = str(root / "_")[:-1] + paths
    odd = ~plain.fillna(False).to_numpy(dtype=bool)
    if odd.any():
        joined[odd] = [str(root / path) for path in paths[odd]]
    return joined


def _machine(ecg_root: Path, rejects: Rejects) -> pd.DataFrame:
    path = find_table(ecg_root, "machine_measurements")
    frame = read_csv_checked(path, ["study_id"], optional=MACHINE_COLUMNS)
    frame = _ids(frame, ["study_id"], path, rejects).drop_duplicates("study_id")
    return frame[[c for c in ("study_id", *MACHINE_COLUMNS) if c in frame]]


def read_mimic_tables(mimic_root: Path, subjects: Collection[int],
                      panel: Sequence[LabDefinition], rejects: Rejects,
                      chunk_rows: int = 10_000, near: EcgWindows | None = None
                      ) -> ClinicalTables:
    """hosp/ (and ed/ when present) as ``ClinicalTables``, restricted to ``subjects``.

    The hosp tables are read in blocks of rows, keeping the rows of ``subjects`` (and those
    whose id is not an integer, so that the check names them): memory follows the cohort, not
    the hospital. Rows of other patients are not checked. With ``near``, lab rows outside its
    windows are dropped too (``ClinicalTables.lab_rows`` still counts them).
    """
    tally: Counter = Counter()
    hosp = hosp_dir(mimic_root)
    wanted = np.unique(np.fromiter((int(s) for s in subjects), dtype=np.int64))
    of_subjects = functools.partial(rows_with_ids, column="subject_id", ids=wanted)
    stays = _admissions(hosp, rejects, of_subjects)
    diagnoses = _diagnoses_icd(hosp, rejects, stays)
    measurements = _omr(hosp, rejects, of_subjects)
    sources = {name: str(find_table(hosp, name)) for name in
               ("patients", "admissions", "labevents", "omr", "diagnoses_icd")}
    ed = Path(mimic_root) / "ed"
    if ed.is_dir():
        ed_stays, ed_dx, ed_vitals = read_ed(ed, rejects)
        stays = pd.concat([stays, ed_stays], ignore_index=True)
        diagnoses = pd.concat([diagnoses, ed_dx], ignore_index=True)
        measurements = pd.concat([measurements, ed_vitals], ignore_index=True)
        sources["ed"] = str(ed)
    labs = read_mimic_labs(find_table(hosp, "labevents"), wanted, panel, rejects, chunk_rows,
                           near, tally)
    return ClinicalTables(
        patients=_patients(hosp, rejects, of_subjects), labs=labs, lab_rows_read=tally["rows"],
        stays=stays[stays["subject_id"].isin(wanted)].reset_index(drop=True),
        diagnoses=diagnoses, sources=sources,
        measurements=measurements[measurements["subject_id"].isin(wanted)].reset_index(drop=True))


def rows_with_ids(block: pd.DataFrame, column: str, ids: np.ndarray) -> np.ndarray:
    """Rows of ``block`` whose ``column`` is one of ``ids``, or is no integer (a bad row that
    the id check then names)."""
    number = pd.to_numeric(block[column], errors="coerce").to_numpy(dtype=np.float64)
    return ~np.isfinite(number) | (number != np.round(number)) | np.isin(number, ids)


def _first_of_each(column: str) -> RowFilter:
    """A filter keeping, over all blocks, the first row of each value of ``column``."""
    seen: set[object] = set()

    def keep(block: pd.DataFrame) -> np.ndarray:
        first = ~block[column].duplicated().to_numpy() & ~block[column].isin(seen).to_numpy()
        seen.update(block[column][first])
        return first

    return keep


def _patients(hosp: Path, rejects: Rejects, keep: RowFilter) -> pd.DataFrame:
    path = find_table(hosp, "patients")
    frame = read_csv_checked(path, ["subject_id", "gender", "anchor_age", "anchor_year"],
                             keep=keep)
    frame = _ids(frame, ["subject_id", "anchor_age", "anchor_year"], path, rejects)
    frame = drop_duplicates(frame, "subject_id", path, rejects)
    birth_year = (frame["anchor_year"] - frame["anchor_age"]).astype("int64")
    birth = pd.to_datetime(pd.DataFrame({"year": birth_year, "month": 1, "day": 1}))
    sex = frame["gender"].str.strip().str.upper().where(lambda s: s.isin(["M", "F"]))
    return pd.DataFrame({"subject_id": frame["subject_id"], "sex": sex,
                         "birth_time": birth.astype("datetime64[us]")})


def _admissions(hosp: Path, rejects: Rejects, keep: RowFilter) -> pd.DataFrame:
    path = find_table(hosp, "admissions")
    frame = read_csv_checked(path, ["subject_id", "hadm_id", "admittime", "dischtime"],
                             keep=keep)
    frame = _ids(frame, ["subject_id", "hadm_id"], path, rejects)
    for column in ("admittime", "dischtime"):
        frame = parse_times(frame, column, path, rejects)
    frame = drop_reversed_spans(frame, "admittime", "dischtime", path, rejects)
    return pd.DataFrame({"subject_id": frame["subject_id"], "stay_id": "h" +
                         frame["hadm_id"].astype("str"), "start": frame["admittime"],
                         "end": frame["dischtime"], "kind": "admission"})


def _diagnoses_icd(hosp: Path, rejects: Rejects, stays: pd.DataFrame) -> pd.DataFrame:
    """Codes of ``stays``; of other admissions, one row per ICD version (the versions a site
    codes in say which labels it records)."""
    path = find_table(hosp, "diagnoses_icd")
    hadm_ids = stays["stay_id"].str.slice(1).astype("int64").to_numpy()
    first_version = _first_of_each("icd_version")

    def keep(block: pd.DataFrame) -> np.ndarray:
        return rows_with_ids(block, "hadm_id", hadm_ids) | first_version(block)

    frame = read_csv_checked(path, ["hadm_id", "icd_code", "icd_version"], keep=keep)
    frame = _ids(frame, ["hadm_id", "icd_version"], path, rejects)
    return pd.DataFrame({"stay_id": "h" + frame["hadm_id"].astype("str"),
                         "code": frame["icd_code"].fillna(""),
                         "system": "icd" + frame["icd_version"].astype("str")})


def _omr(hosp: Path, rejects: Rejects, of_subjects: RowFilter) -> pd.DataFrame:
    path = find_table(hosp, "omr")

    def keep(block: pd.DataFrame) -> np.ndarray:
        used = (block["result_name"].isin(OMR_NUMERIC)
                | block["result_name"].str.startswith("Blood Pressure")).to_numpy(dtype=bool)
        return used & of_subjects(block)

    frame = read_csv_checked(path, ["subject_id", "chartdate", "result_name", "result_value"],
                             keep=keep)
    frame = _ids(frame, ["subject_id"], path, rejects)
    frame = parse_times(frame, "chartdate", path, rejects)
    frame["time"] = frame["chartdate"] + pd.Timedelta(hours=12)  # a date: take its midday
    is_bp = frame["result_name"].str.startswith("Blood Pressure").to_numpy()
    parts = frame["result_value"].str.split("/", n=1, expand=True).reindex(columns=[0, 1])
    sbp, dbp = (pd.to_numeric(parts[i], errors="coerce") for i in (0, 1))
    number = pd.to_numeric(frame["result_value"], errors="coerce")
    bad = np.where(is_bp, sbp.isna() | dbp.isna(), number.isna())
    frame = frame.assign(sbp=sbp, dbp=dbp, number=number)
    frame = drop_bad_rows(frame, bad, path, "result_value",
                          "a number (or SYSTOLIC/DIASTOLIC for blood pressure)", rejects)
    bp = frame[frame["result_name"].str.startswith("Blood Pressure")]
    numeric = frame[frame["result_name"].isin(OMR_NUMERIC)]
    names = numeric["result_name"].map(lambda n: OMR_NUMERIC[n][0])
    factors = numeric["result_name"].map(lambda n: OMR_NUMERIC[n][1]).astype("float64")
    return pd.concat([
        pd.DataFrame({"subject_id": numeric["subject_id"], "time": numeric["time"],
                      "name": names, "value": numeric["number"] * factors}),
        *(pd.DataFrame({"subject_id": bp["subject_id"], "time": bp["time"], "name": name,
                        "value": bp[name]}) for name in ("sbp", "dbp"))], ignore_index=True)


def read_mimic_labs(path: Path, subjects: Collection[int], panel: Sequence[LabDefinition],
                    rejects: Rejects, chunk_rows: int = 10_000, near: EcgWindows | None = None,
                    tally: Counter | None = None) -> pd.DataFrame:
    """``labevents`` rows of ``subjects`` and the ``panel``'s itemids as
    ``ClinicalTables.labs``, streamed in blocks of ``chunk_rows``.

    With ``near`` only rows within its windows are kept (after their checks); ``tally["rows"]``
    then counts every checked row."""
    lab_of = itemid_to_lab(panel)
    convert = functools.partial(_lab_rows, path=path, lab_of=lab_of, near=near,
                                tally=Counter() if tally is None else tally)
    labs = read_labevents(path, lab_of, subjects, rejects, chunk_rows, convert=convert)
    return labs.assign(lab=labs["lab"].cat.remove_unused_categories())


def _lab_rows(frame: pd.DataFrame, rejects: Rejects, path: Path, lab_of: dict[int, str],
              near: EcgWindows | None, tally: Counter) -> pd.DataFrame:
    """Checked ``labevents`` rows (those in ``near`` when given) as ``ClinicalTables.labs``
    rows (``lab`` a category of every panel name, one byte a row)."""
    for column in ("ref_range_lower", "ref_range_upper"):
        frame = (parse_numbers(frame, column, path, rejects, required=False)
                 if column in frame else frame.assign(**{column: np.nan}))
    tally["rows"] += len(frame)
    if near is not None:
        frame = frame[near.contains(frame["subject_id"], frame["charttime"])]
    flag = frame["flag"] if "flag" in frame else pd.Series(pd.NA, index=frame.index)
    return pd.DataFrame({
        "subject_id": frame["subject_id"].astype("int64"), "time": frame["charttime"],
        "lab": lab_names(frame["itemid"], lab_of), "value": frame["valuenum"],
        "ref_low": frame["ref_range_lower"], "ref_high": frame["ref_range_upper"],
        "flag": np.where(flag.str.strip().str.lower() == "abnormal", 1.0, np.nan)})


def lab_names(itemids: pd.Series, lab_of: dict[int, str]) -> pd.Categorical:
    """The lab name of each of ``itemids`` (NaN for an itemid not in ``lab_of``), a category of
    every name of ``lab_of``, found by binary search (no Python string per row)."""
    names = pd.CategoricalDtype(sorted(set(lab_of.values())))
    known = np.array(sorted(lab_of), dtype=np.int64)
    code_of = names.categories.get_indexer([lab_of[i] for i in known])
    ids = itemids.to_numpy(dtype=np.int64)
    at = np.minimum(np.searchsorted(known, ids), max(len(known) - 1, 0))
    found = known[at] == ids if len(known) else np.zeros(len(ids), dtype=bool)
    return pd.Categorical.from_codes(np.where(found, code_of[at], -1), dtype=names)


def read_ed(ed: Path, rejects: Rejects) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """MIMIC-IV-ED as (stays, diagnoses, vitals); temperatures converted from °F to °C."""
    path = find_table(ed, "edstays")
    frame = _ids(read_csv_checked(path, ["subject_id", "stay_id", "intime", "outtime"]),
                 ["subject_id", "stay_id"], path, rejects)
    for column in ("intime", "outtime"):
        frame = parse_times(frame, column, path, rejects)
    frame = drop_reversed_spans(frame, "intime", "outtime", path, rejects)
    stays = pd.DataFrame({"subject_id": frame["subject_id"], "stay_id": "e" +
                          frame["stay_id"].astype("str"), "start": frame["intime"],
                          "end": frame["outtime"], "kind": "ed"})
    dx_path = find_table(ed, "diagnosis")
    dx = _ids(read_csv_checked(dx_path, ["stay_id", "icd_code", "icd_version"]),
              ["stay_id", "icd_version"], dx_path, rejects)
    diagnoses = pd.DataFrame({"stay_id": "e" + dx["stay_id"].astype("str"),
                              "code": dx["icd_code"].fillna(""),
                              "system": "icd" + dx["icd_version"].astype("str")})
    intime = frame.set_index("stay_id")["intime"]
    vitals = [_ed_vitals(ed, "triage", rejects, intime)]
    if has_table(ed, "vitalsign"):
        vitals.append(_ed_vitals(ed, "vitalsign", rejects, intime))
    return stays, diagnoses, pd.concat(vitals, ignore_index=True)


def _ed_vitals(ed: Path, name: str, rejects: Rejects, intime: pd.Series) -> pd.DataFrame:
    path = find_table(ed, name)
    timed = name == "vitalsign"
    frame = read_csv_checked(path, ["subject_id", "stay_id", *(["charttime"] if timed else [])],
                             optional=list(ED_VITALS))
    frame = _ids(frame, ["subject_id", "stay_id"], path, rejects)
    frame = (parse_times(frame, "charttime", path, rejects) if timed
             else frame.assign(charttime=frame["stay_id"].map(intime)))
    for column in ED_VITALS:
        frame = (parse_numbers(frame, column, path, rejects, required=False) if column in frame
                 else frame.assign(**{column: np.nan}))
    frame["temperature"] = (frame["temperature"] - 32.0) * 5.0 / 9.0
    long = frame.rename(columns=ED_VITALS).melt(
        id_vars=["subject_id", "charttime"], value_vars=list(VITALS), var_name="name",
        value_name="value").rename(columns={"charttime": "time"})
    return long.dropna(subset=["time", "value"]).reset_index(drop=True)
