"""Some rows of a site store without the rest: a view of the memory-mapped waveforms and the
cohort rows read batch by batch from the row groups holding them (what
``SiteStore.open(rows=...)`` and ``SiteStore.view`` build a virtual site from, so that its
memory follows its own ECGs, not the store's); and the cohort written in such row groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedecg.errors import StoreError

COHORT_GROUP_ROWS = 16_384
"""Rows per row group of ``cohort.parquet`` (a few MiB decoded)."""


class RowView:
    """Rows of a memory-mapped waveform array, addressed 0..len(rows)-1, without copying."""

    def __init__(self, waveforms: np.ndarray, rows: np.ndarray) -> None:
        self.base = waveforms
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows), *waveforms.shape[1:])
        self.dtype = waveforms.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: Any) -> np.ndarray:
        if isinstance(item, tuple):
            return self.base[(self.rows[item[0]], *item[1:])]
        return self.base[self.rows[item]]


def checked_rows(rows: np.ndarray, n_records: int, path: Path) -> np.ndarray:
    """``rows`` sorted as int64, checked to lie within the store's ``n_records``."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if len(rows) and (rows[0] < 0 or rows[-1] >= n_records):
        raise StoreError(f"{path}: rows {int(rows[0])}..{int(rows[-1])} asked for, the store "
                         f"has rows 0..{n_records - 1}; partition this store again")
    return rows


def read_cohort_rows(path: Path, rows: np.ndarray, batch_rows: int = 4096) -> pd.DataFrame:
    """Rows ``rows`` (sorted) of a Parquet file, read one batch at a time from the row groups
    holding them (others are not decoded), so memory holds one batch and the rows kept rather
    than the whole file.

    Arrow's default pool (mimalloc) keeps what a read freed (50 MiB after a 56k-row cohort),
    so the read allocates from the system pool, which returns most of it, and decodes in this
    thread (decoding threads leave freed memory in malloc arenas of their own).
    """
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        parquet = pq.ParquetFile(path)
        sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
        starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        held = np.diff(np.searchsorted(rows, starts)) > 0
        kept = []
        for group in np.flatnonzero(held):
            start = int(starts[group])
            for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=[int(group)],
                                              use_threads=False):
                low, high = np.searchsorted(rows, [start, start + batch.num_rows])
                if high > low:
                    kept.append(batch.take(pa.array(rows[low:high] - start)))
                start += batch.num_rows
        return pa.Table.from_batches(kept, schema=parquet.schema_arrow).to_pandas()
    finally:
        pa.set_memory_pool(previous)


def write_cohort(cohort: pd.DataFrame, path: Path, group_rows: int = COHORT_GROUP_ROWS) -> None:
    """Write ``cohort`` (index dropped) as Parquet in row groups of ``group_rows`` rows.

    A reader of some rows (``read_cohort_rows``) then decodes only the groups holding them,
    and writing converts one group at a time to Arrow, so memory holds the frame and one
    group's copy, not the whole frame twice. The values and dtypes read back are those of
    ``cohort.to_parquet(path, index=False)``.
    """
    cohort = cohort.reset_index(drop=True)
    schema = pa.Schema.from_pandas(cohort, preserve_index=False)
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for start in range(0, max(len(cohort), 1), group_rows):
            group = cohort.iloc[start:start + group_rows]
            writer.write_table(pa.Table.from_pandas(group, schema=schema, preserve_index=False),
                               row_group_size=group_rows)
