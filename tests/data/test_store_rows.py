"""``cohort.parquet`` in row groups: the values pandas writes, and rows read from the row groups
holding them only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fedecg.data.store_rows import read_cohort_rows, write_cohort


def _cohort(n: int) -> pd.DataFrame:
    """A cohort-like frame of ``n`` rows: ids, times with NaT, float32 with NaN, text with NA."""
    rng = np.random.default_rng(0)
    times = pd.Series(pd.date_range("2150-01-01", periods=n, freq="7h").astype("datetime64[us]"))
    label = rng.integers(0, 2, n).astype("float32")
    label[::5] = np.nan
    return pd.DataFrame({
        "study_id": np.arange(40_000_000, 40_000_000 + n, dtype=np.int64),
        "ecg_time": times.where(np.arange(n) % 9 != 4),
        "age": rng.uniform(18, 90, n), "abn_potassium_high": label,
        "stay_id": pd.Series([f"h{i}" if i % 3 else None for i in range(n)], dtype="str"),
        "split": np.array(["train", "val", "test"], dtype=object)[np.arange(n) % 3]},
        index=np.arange(100, 100 + n))


@pytest.mark.parametrize("n", [50, 0])
def test_cohort_in_row_groups_reads_back_as_pandas_writes_it(tmp_path: Path, n: int) -> None:
    cohort = _cohort(n)
    write_cohort(cohort, tmp_path / "grouped.parquet", group_rows=16)
    cohort.to_parquet(tmp_path / "plain.parquet", index=False)
    grouped = pq.ParquetFile(tmp_path / "grouped.parquet")
    sizes = [grouped.metadata.row_group(g).num_rows for g in range(grouped.num_row_groups)]
    assert sizes == ([16, 16, 16, 2] if n else [0])
    assert grouped.schema_arrow.equals(pq.read_schema(tmp_path / "plain.parquet"),
                                       check_metadata=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "grouped.parquet"),
                                  pd.read_parquet(tmp_path / "plain.parquet"), check_exact=True)


def _damage_row_group(path: Path, group: int) -> None:
    """Overwrite every column chunk of row group ``group`` with zeros (decoding it fails)."""
    metadata = pq.ParquetFile(path).metadata.row_group(group)
    data = bytearray(path.read_bytes())
    for column in range(metadata.num_columns):
        chunk = metadata.column(column)
        start = min(o for o in (chunk.dictionary_page_offset, chunk.data_page_offset)
                    if o is not None)
        data[start:start + chunk.total_compressed_size] = bytes(chunk.total_compressed_size)
    path.write_bytes(bytes(data))


def test_rows_are_read_from_the_row_groups_holding_them_only(tmp_path: Path) -> None:
    cohort, path = _cohort(50), tmp_path / "cohort.parquet"
    write_cohort(cohort, path, group_rows=10)
    rows = np.array([0, 9, 31, 40, 49])  # row groups 0, 3 and 4
    expected = cohort.iloc[rows].reset_index(drop=True)
    _damage_row_group(path, 1)
    _damage_row_group(path, 2)
    assert read_cohort_rows(path, rows, batch_rows=4).equals(expected)
    with pytest.raises(OSError):  # pyarrow's ArrowException: a damaged group is decoded
        read_cohort_rows(path, np.array([0, 15]))
