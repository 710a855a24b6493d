"""CSV tables: .csv/.csv.gz, required columns, times, numbers, duplicates, chunked labevents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders.raw_sites import write_table
from conftest import MIMIC_DEMO

from fedecg.data.labs import DEFAULT_LAB_PANEL, itemid_to_lab
from fedecg.data.tables import (
    IdSet,
    Rejects,
    drop_duplicates,
    find_table,
    parse_numbers,
    parse_times,
    read_csv_checked,
    read_labevents,
)
from fedecg.errors import InputFileError, TableError

LABS = ("subject_id,itemid,charttime,valuenum,ref_range_lower,ref_range_upper,flag\n"
        "1,50971,2100-01-01 10:00:00,4.0,3.3,5.1,\n"
        "2,50971,2100-01-01 10:00:00,4.5,3.3,5.1,\n"
        "1,99999,2100-01-01 10:00:00,1.0,,,\n"
        "1,50983,2100-01-01 11:00:00,140,133,145,\n"
        "1,50912,2100-01-01 12:00:00,,0.5,1.2,\n")


def test_find_table_takes_csv_or_gz_and_names_both_when_missing(tmp_path: Path) -> None:
    gz = write_table(tmp_path, "patients", "a\n1\n", gz=True)
    assert find_table(tmp_path, "patients") == gz
    with pytest.raises(InputFileError) as info:
        find_table(tmp_path, "admissions")
    assert "admissions.csv " in str(info.value) and "admissions.csv.gz" in str(info.value)


def test_missing_column_names_file_column_and_found_columns(tmp_path: Path) -> None:
    path = write_table(tmp_path, "record_list", "subject_id,ecg_time\n1,2100-01-01\n")
    with pytest.raises(TableError) as info:
        read_csv_checked(path, ["subject_id", "study_id", "ecg_time"])
    text = str(info.value)
    assert str(path) in text and "['study_id']" in text
    assert "found ['subject_id', 'ecg_time']" in text


def test_unparseable_time_names_file_line_column_and_value(tmp_path: Path) -> None:
    path = write_table(tmp_path, "t", "id,time\n1,2100-01-01 10:00\n2,yesterday\n3,\n")
    frame = read_csv_checked(path, ["id", "time"])
    with pytest.raises(TableError) as info:
        parse_times(frame, "time", path, Rejects("raise"))
    assert f"{path}: line 3, column 'time': 'yesterday' is not a date-time" in str(info.value)
    assert "1 more such row" in str(info.value)
    rejects = Rejects("skip")
    kept = parse_times(frame, "time", path, rejects)
    assert kept["id"].tolist() == ["1"] and rejects.frame()["line"].tolist() == [3, 4]
    assert kept["time"].iloc[0] == pd.Timestamp("2100-01-01 10:00")


def test_numbers_reject_text_and_required_empties(tmp_path: Path) -> None:
    path = write_table(tmp_path, "t", "id,x\n1,2.5\n2,high\n3,\n")
    frame = read_csv_checked(path, ["id", "x"])
    with pytest.raises(TableError, match=r"line 3, column 'x': 'high' is not a number"):
        parse_numbers(frame, "x", path, Rejects("raise"), required=False)
    rejects = Rejects("skip")
    optional = parse_numbers(frame, "x", path, rejects, required=False)
    assert optional["id"].tolist() == ["1", "3"] and np.isnan(optional["x"].iloc[1])
    required = parse_numbers(frame, "x", path, Rejects("skip"), required=True)
    assert required["x"].tolist() == [2.5]


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    path = write_table(tmp_path, "r", "study_id,v\n7,a\n8,b\n7,c\n")
    frame = read_csv_checked(path, ["study_id", "v"])
    with pytest.raises(TableError) as info:
        drop_duplicates(frame, "study_id", path, Rejects("raise"))
    assert "line 4, column 'study_id': duplicate study_id '7' (first at line 2)" in str(info.value)
    rejects = Rejects("skip")
    assert drop_duplicates(frame, "study_id", path, rejects)["v"].tolist() == ["a", "b"]
    assert rejects.frame().loc[0, "study_id"] == "7"


@pytest.mark.parametrize("chunk_rows", [1, 2, 1000])
def test_labevents_chunks_keep_panel_items_of_wanted_subjects(tmp_path: Path,
                                                              chunk_rows: int) -> None:
    path = write_table(tmp_path, "labevents", LABS, gz=True)
    rejects = Rejects("skip")
    frame = read_labevents(path, {50971, 50983, 50912}, {1}, rejects, chunk_rows=chunk_rows)
    assert frame["itemid"].tolist() == [50971, 50983] and frame["_line"].tolist() == [2, 5]
    assert frame["valuenum"].tolist() == [4.0, 140.0]
    assert rejects.frame()["line"].tolist() == [6]
    with pytest.raises(TableError, match=r"line 6, column 'valuenum': empty is not a numeric"):
        read_labevents(path, {50912}, {1}, Rejects("raise"), chunk_rows=chunk_rows)


def test_labevents_needs_its_columns(tmp_path: Path) -> None:
    path = write_table(tmp_path, "labevents", "subject_id,itemid,charttime\n1,2,2100-01-01\n")
    with pytest.raises(TableError, match=r"missing column\(s\) \['valuenum'\]"):
        read_labevents(path, {2}, {1}, Rejects("raise"))


def test_real_labevents_chunked_read_equals_a_plain_filter(shared_data: Path) -> None:
    path = MIMIC_DEMO / "hosp" / "labevents.csv.gz"
    itemids = itemid_to_lab(DEFAULT_LAB_PANEL)
    raw = pd.read_csv(path, usecols=["subject_id", "itemid", "valuenum"])
    subjects = set(raw["subject_id"].unique()[:40])
    frame = read_labevents(path, itemids, subjects, Rejects("skip"), chunk_rows=10_000)
    expected = raw[raw["itemid"].isin(itemids) & raw["subject_id"].isin(subjects)
                   & raw["valuenum"].notna()]
    assert len(frame) == len(expected) > 1000
    assert frame["valuenum"].sum() == pytest.approx(expected["valuenum"].sum())


def test_labevents_name_the_line_of_an_empty_id_or_an_infinite_value(tmp_path: Path) -> None:
    path = write_table(tmp_path, "labevents", LABS.replace("11:00:00,140,", "11:00:00,inf,"))
    rejects = Rejects("skip")
    frame = read_labevents(path, {50971, 50983}, {1}, rejects)
    assert frame["_line"].tolist() == [2] and frame["valuenum"].tolist() == [4.0]
    assert rejects.frame()[["line", "reason"]].values.tolist() == [
        [5, "column 'valuenum': 'inf' is not a numeric lab value (a lab without a numeric value)"]]
    empty_id = write_table(tmp_path, "empty_id", LABS.replace("\n2,50971", "\n,50971"))
    with pytest.raises(TableError, match=r"empty_id\.csv: line 3, column 'subject_id': empty; "
                                         "expected an integer id in every row"):
        read_labevents(empty_id, {50971}, {1}, Rejects("skip"))


def test_labevents_bad_rows_of_every_block_are_reported_as_for_the_whole_table(
        tmp_path: Path) -> None:
    empty_twice = LABS + "1,50971,2100-01-02 10:00:00,,3.3,5.1,\n"
    path = write_table(tmp_path, "labevents", empty_twice)
    with pytest.raises(TableError, match=r"line 6, column 'valuenum': empty is not a numeric "
                                         r"lab value .*\(1 more such row\(s\)\)"):
        read_labevents(path, {50971, 50912}, {1}, Rejects("raise"), chunk_rows=1)
    path = write_table(tmp_path, "labevents", empty_twice + "1,50971,yesterday,4.1,3.3,5.1,\n")
    with pytest.raises(TableError, match=r"line 8, column 'charttime': 'yesterday' is not a "
                                         r"date-time"):
        read_labevents(path, {50971, 50912}, {1}, Rejects("raise"), chunk_rows=1)
    rejects = Rejects("skip")
    frame = read_labevents(path, {50971, 50912}, {1}, rejects, chunk_rows=1)
    assert frame["_line"].tolist() == [2] and rejects.frame()["line"].tolist() == [8, 6, 7]


def test_labevents_quoted_comments_may_hold_commas_and_line_breaks(tmp_path: Path) -> None:
    text = ("subject_id,itemid,charttime,valuenum,comments\n"
            f'1,50971,2100-01-01 10:00:00,4.0,"hemolyzed, {"x" * 70}\n{"y" * 70}"\n'
            "1,50983,2100-01-01 11:00:00,140,\n")
    frame = read_labevents(write_table(tmp_path, "labevents", text), {50971, 50983}, {1},
                           Rejects("raise"), chunk_rows=1)  # a block of 128 bytes
    assert frame["valuenum"].tolist() == [4.0, 140.0]


def test_labevents_text_read_of_a_bad_value_keeps_other_rows_as_the_parsed_read(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = "".join(f"{s},{i},2100-01-{d:02d} 1{h}:0{h}:00,{v:.3f},{v - 1:.2f},{v + 1:.2f},{f}\n"
                   for s, i, d, h, v, f in zip(
                       rng.integers(1, 4, 300), rng.choice([50971, 50983, 99999], 300),
                       rng.integers(1, 29, 300), rng.integers(0, 10, 300),
                       rng.normal(5, 2, 300), rng.choice(["", "abnormal"], 300), strict=True))
    header = LABS.splitlines(keepends=True)[0]
    parsed = read_labevents(write_table(tmp_path, "labevents", header + rows),
                            {50971, 50983}, {1, 2}, Rejects("raise"), chunk_rows=1000)
    bad_time = header + rows + "1,50971,yesterday,4.1,3.3,5.1,\n"
    rejects = Rejects("skip")
    text = read_labevents(write_table(tmp_path, "labevents", bad_time), {50971, 50983}, {1, 2},
                          rejects, chunk_rows=1000)
    assert rejects.frame()["line"].tolist() == [302] and len(parsed) > 100
    pd.testing.assert_frame_equal(text, parsed)


def test_labevents_truncated_gzip_is_one_line(tmp_path: Path) -> None:
    body = "".join(LABS.splitlines(keepends=True)[1:])
    path = write_table(tmp_path, "labevents", LABS + body * 20_000, gz=True)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(TableError, match=r"labevents\.csv\.gz: cannot be read near line \d+: "
                                         r".*expected a complete, readable \.csv or \.csv\.gz"):
        read_labevents(path, {50971}, {1}, Rejects("skip"))


@pytest.mark.parametrize("ids", [[7, 5, 5, 12], [5, 7, 1 << 40], [-3, 0], []])
def test_id_sets_by_table_or_binary_search_hold_exactly_their_ids(ids: list[int]) -> None:
    values = np.array([-4, -3, 0, 4, 5, 6, 7, 12, 13, 1 << 40, (1 << 40) + 1, -(1 << 62)])
    found = IdSet(ids)
    assert len(found.table) == (0 if not ids or max(ids) > 1 << 30 else max(ids) - min(ids) + 1)
    np.testing.assert_array_equal(found.holds(values), np.isin(values, ids))
