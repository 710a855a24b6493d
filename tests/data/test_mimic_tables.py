"""MIMIC hosp tables read for a cohort: only its patients' rows, only labs near its ECGs, and
the same cohort as reading everything."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders.raw_sites import HOSP, make_mimic_site, write_table

from fedecg.config.data import CohortConfig
from fedecg.data.cohort import build_cohort
from fedecg.data.ecg_windows import EcgWindows
from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.data.mimic import joined_paths, read_mimic_tables, read_record_list
from fedecg.data.tables import Rejects
from fedecg.errors import TableError


def test_ecg_windows_hold_events_within_hours_of_an_ecg_of_the_same_patient() -> None:
    ecgs = pd.DataFrame({"subject_id": [1, 2, 2], "ecg_time": pd.to_datetime(
        ["2150-01-01 10:00", "2150-01-01 12:00", None])})
    windows = EcgWindows(ecgs, hours=2)
    events = {(1, "2150-01-01 11:59"): True, (1, "2150-01-01 12:00"): True,
              (1, "2150-01-01 08:00"): True, (1, "2150-01-01 07:59"): False,
              (1, "2150-01-01 12:01"): False, (2, "2150-01-01 10:00"): True,
              (2, "2150-01-01 14:00"): True, (2, "2150-01-01 09:59"): False,
              (2, "2150-01-01 11:00"): True, (3, "2150-01-01 10:00"): False,
              (0, "2150-01-01 10:00"): False, (1, "2151-01-01 10:00"): False}
    frame = pd.DataFrame([(s, pd.Timestamp(t)) for s, t in events], columns=["s", "t"])
    inside = windows.contains(frame["s"], frame["t"].astype("datetime64[us]"))
    assert dict(zip(events, inside.tolist(), strict=True)) == events
    empty = EcgWindows(ecgs.iloc[2:], hours=2)
    assert not empty.contains(frame["s"], frame["t"]).any()


FAR_LAB = "6,10000002,,6,50971,2161-01-10 13:00:00,4.2,4.2,mEq/L,3.3,5.1,\n"
OTHER_PATIENTS = {  # rows of patients without ECGs, some of them bad: never read
    "patients": "10000099,X,old,2150,2008 - 2010,\n",
    "admissions": "10000099,20000099,2150-02-28 00:00:00,2140-03-05 12:00:00\n",
    "omr": "10000099,2150-02-20,1,Weight (Lbs),heavy\n",
    "diagnoses_icd": "10000099,20000099,1,I4891,10\n",
}


def _tables(tmp_path: Path, near_hours: float | None) -> tuple[pd.DataFrame, object]:
    ecg_root, mimic_root = tmp_path / "ecg", tmp_path / "mimic"
    ecgs = read_record_list(ecg_root, Rejects("raise"))
    near = EcgWindows(ecgs, near_hours) if near_hours is not None else None
    tables = read_mimic_tables(mimic_root, ecgs["subject_id"].unique(), DEFAULT_LAB_PANEL,
                               Rejects("raise"), near=near)
    return ecgs.drop(columns="_line"), tables


def test_labs_far_from_every_ecg_and_other_patients_are_left_out_alike(tmp_path: Path) -> None:
    make_mimic_site(tmp_path)
    hosp = tmp_path / "mimic" / "hosp"
    write_table(hosp, "labevents", HOSP["labevents"] + FAR_LAB)
    for name, rows in OTHER_PATIENTS.items():
        write_table(hosp, name, HOSP[name] + rows)
    ecgs, everything = _tables(tmp_path, None)
    _, near = _tables(tmp_path, 24)
    assert len(everything.labs) == 5 and len(near.labs) == 4
    assert near.lab_rows == everything.lab_rows == 5
    assert set(near.patients["subject_id"]) == {10000001, 10000002, 10000003}
    assert near.stays["stay_id"].tolist() == ["h20000001", "h20000002"]
    assert set(near.diagnoses["stay_id"]) == {"h20000001", "h20000002"}
    config = CohortConfig()
    pd.testing.assert_frame_equal(build_cohort(ecgs, everything, config),
                                  build_cohort(ecgs, near, config))
    near.drop_labs()  # what prepare does once linked: the count stays
    assert near.labs.empty and list(near.labs) == list(everything.labs) and near.lab_rows == 5


@pytest.mark.parametrize(("table", "row", "message"), [
    ("omr", "10000001,2150-02-21,1,Weight (Lbs),heavy\n",
     r"omr\.csv: line 6, column 'result_value': 'heavy' is not a number"),
    ("admissions", "x1,20000003,2150-02-28 00:00:00,2150-03-05 12:00:00\n",
     r"admissions\.csv: line 4, column 'subject_id': 'x1' is not an integer id"),
])
def test_bad_rows_of_the_cohort_or_without_an_id_are_still_named(
        tmp_path: Path, table: str, row: str, message: str) -> None:
    make_mimic_site(tmp_path)
    write_table(tmp_path / "mimic" / "hosp", table, HOSP[table] + row)
    with pytest.raises(TableError, match=message):
        _tables(tmp_path, 24)


def test_a_table_read_in_blocks_equals_it_read_whole(tmp_path: Path) -> None:
    from fedecg.data.tables import read_csv_checked

    rows = pd.DataFrame({"subject_id": np.arange(25).astype(str), "v": [*"ab" * 12, ""]})
    path = tmp_path / "t.csv"
    rows.to_csv(path, index=False)
    whole = read_csv_checked(path, ["subject_id", "v"])
    blocks = read_csv_checked(path, ["subject_id", "v"], keep=lambda b: np.ones(len(b), bool),
                              chunk_rows=4)
    pd.testing.assert_frame_equal(whole, blocks)
    odd = read_csv_checked(path, ["subject_id", "v"], chunk_rows=4,
                           keep=lambda b: (b["subject_id"].astype(int) % 2 == 1).to_numpy())
    pd.testing.assert_frame_equal(odd, whole.iloc[1::2].reset_index(drop=True))


@pytest.mark.parametrize("root", [Path("/data/ecg"), Path("rel"), Path("/"), Path(".")])
def test_record_paths_joined_as_text_equal_pathlib(root: Path) -> None:
    paths = pd.Series(["files/p1/s2/3", "a//b", "./x", "x/./y", "x/.", "/abs/p", "x/", ".", "..",
                       "../up", "a/../b", ".hidden/x", "x..y/z", "a b/c"])
    assert joined_paths(root, paths).tolist() == [str(root / p) for p in paths]
