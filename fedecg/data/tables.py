"""Reading CSV tables with checks whose errors name the file, line, column and value.

A table may be ``NAME.csv`` or ``NAME.csv.gz``. Every parsed frame carries a ``_line`` column
(the line number in the file, header = line 1) so later checks can still point at the row.
Bad rows either raise a ``TableError`` or, with ``on_error='skip'``, go to ``Rejects``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from isal import igzip

from fedecg.config.data import OnError
from fedecg.data.memory import release_freed_memory
from fedecg.errors import FedecgError, InputFileError, TableError

LINE = "_line"
REJECT_COLUMNS = ("path", "line", "study_id", "reason")
SKIP_HINT = "fix it, or pass --on-error skip to leave such rows out (listed in rejects.csv)"


class Rejects:
    """Inputs left out with ``on_error='skip'``; with ``'raise'`` the first problem is raised."""

    def __init__(self, on_error: OnError) -> None:
        self.on_error = on_error
        self._rows: list[dict[str, object]] = []

    def handle(self, error: FedecgError, path: Path | str, line: int | None = None,
               study_id: object = None, reason: str | None = None) -> None:
        """Raise ``error``, or record a reject of ``path`` (and ``line``/``study_id``) whose
        reason is ``reason`` (default: the error's message)."""
        if self.on_error == "raise":
            raise error
        self._rows.append({"path": str(path), "line": line, "study_id": study_id,
                           "reason": reason or str(error)})

    def __len__(self) -> int:
        return len(self._rows)

    def frame(self) -> pd.DataFrame:
        """All rejects so far, one row each (columns ``path, line, study_id, reason``)."""
        frame = pd.DataFrame(self._rows, columns=list(REJECT_COLUMNS))
        frame["line"] = frame["line"].astype("Int64")
        return frame


def find_table(folder: Path, name: str) -> Path:
    """``folder/name.csv`` or ``folder/name.csv.gz``, whichever exists."""
    candidates = [Path(folder) / f"{name}.csv", Path(folder) / f"{name}.csv.gz"]
    for path in candidates:
        if path.is_file():
            return path
    raise InputFileError(f"table {name!r} not found: expected {candidates[0]} or "
                         f"{candidates[1]}; check the folder given on the command line")


def has_table(folder: Path, name: str) -> bool:
    """True when ``folder`` holds ``name.csv`` or ``name.csv.gz``."""
    return any((Path(folder) / f"{name}{ext}").is_file() for ext in (".csv", ".csv.gz"))


RowFilter = Callable[[pd.DataFrame], np.ndarray]
"""Which rows of a block of text rows to keep (a boolean mask)."""


def read_csv_checked(path: Path, required: Sequence[str], optional: Sequence[str] = (),
                     dtype: dict[str, str] | None = None, keep: RowFilter | None = None,
                     chunk_rows: int = 100_000) -> pd.DataFrame:
    """Read the ``required`` (+ present ``optional``) columns as text, with a ``_line`` column.

    With ``keep`` the file is read in blocks of ``chunk_rows`` rows and only the rows ``keep``
    selects are kept, so memory follows the kept rows, not the file.
    """
    header = _header(path)
    _check_columns(path, header, required)
    usecols = list(required) + [c for c in optional if c in header and c not in required]
    dtypes = {c: "str" for c in usecols} | (dtype or {})
    options = {"usecols": usecols, "dtype": dtypes, "keep_default_na": False, "na_values": [""]}
    try:
        if keep is None:
            frame = pd.read_csv(path, **options)
            frame[LINE] = np.arange(2, len(frame) + 2)
            return frame
        parts, line = [pd.read_csv(path, nrows=0, **options).assign(**{LINE: 0})], 2
        with pd.read_csv(path, chunksize=chunk_rows, **options) as blocks:
            for block in blocks:
                block[LINE] = np.arange(line, line + len(block))
                line += len(block)
                parts.append(block[keep(block)])
    except (ValueError, pd.errors.ParserError) as exc:
        raise TableError(f"{path}: cannot be read as CSV: {exc}") from None
    frame = pd.concat(parts, ignore_index=True)
    del parts
    release_freed_memory()  # the blocks' text
    return frame


def _header(path: Path) -> list[str]:
    try:
        return list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as exc:
        raise TableError(f"{path}: cannot be read as CSV: {exc}") from None


def _check_columns(path: Path, header: Collection[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in header]
    if missing:
        raise TableError(f"{path}: missing column(s) {missing}; found {list(header)}; "
                         f"expected at least {list(required)}")


def parse_times(frame: pd.DataFrame, column: str, path: Path, rejects: Rejects,
                study_column: str | None = None) -> pd.DataFrame:
    """Parse ``column`` as ISO date-times; empty or unparseable values are bad rows."""
    raw = frame[column]
    parsed = pd.to_datetime(raw, format="ISO8601", errors="coerce")
    frame = frame.assign(**{column: parsed.astype("datetime64[us]")})
    bad = parsed.isna().to_numpy()
    return drop_bad_rows(frame, bad, path, column, "a date-time like 2180-07-23 08:44:24",
                         rejects, study_column, original=raw)


def parse_numbers(frame: pd.DataFrame, column: str, path: Path, rejects: Rejects,
                  required: bool = True, study_column: str | None = None,
                  what: str = "a number") -> pd.DataFrame:
    """Parse ``column`` as float; text or infinity is a bad row, and so is an empty cell when
    ``required``."""
    raw = frame[column]
    parsed = pd.to_numeric(raw, errors="coerce")
    bad = (parsed.isna() & (raw.notna() | required)) | np.isinf(parsed)
    frame = frame.assign(**{column: parsed.astype("float64")})
    return drop_bad_rows(frame, bad.to_numpy(), path, column, what, rejects, study_column,
                         original=raw)


def drop_bad_rows(frame: pd.DataFrame, bad: np.ndarray, path: Path, column: str, expected: str,
                  rejects: Rejects, study_column: str | None = None,
                  original: pd.Series | None = None,
                  reasons: pd.Series | None = None) -> pd.DataFrame:
    """Raise for the first bad row, or record every bad row in ``rejects`` and drop them.

    The message says ``VALUE is not EXPECTED``, or the row's own text from ``reasons``.
    """
    if not bad.any():
        return frame
    shown = frame[column] if original is None else original
    for position in np.flatnonzero(bad):
        value = shown.iloc[position]
        value_text = "empty" if pd.isna(value) else repr(value)
        why = reasons.iloc[position] if reasons is not None else f"{value_text} is not {expected}"
        line = int(frame[LINE].iloc[position])
        study = frame[study_column].iloc[position] if study_column else None
        more = int(bad.sum()) - 1
        extra = f" ({more} more such row(s))" if more and rejects.on_error == "raise" else ""
        error = TableError(f"{path}: line {line}, column {column!r}: {why}{extra}; {SKIP_HINT}")
        rejects.handle(error, path, line, study, reason=f"column {column!r}: {why}")
    return frame.loc[~bad].reset_index(drop=True)


def drop_reversed_spans(frame: pd.DataFrame, start: str, end: str, path: Path,
                        rejects: Rejects) -> pd.DataFrame:
    """Rows whose ``end`` time is before their ``start`` time (parsed already) are bad rows."""
    bad = (frame[end] < frame[start]).to_numpy()
    reasons = (frame[end].astype("str") + f" is before {start} "
               + frame[start].astype("str") + "; an encounter must end after it starts")
    return drop_bad_rows(frame, bad, path, end, "", rejects, reasons=reasons)


def drop_duplicates(frame: pd.DataFrame, column: str, path: Path,
                    rejects: Rejects) -> pd.DataFrame:
    """Keep the first row of each ``column`` value; later repeats are bad rows."""
    repeated = frame.duplicated(column, keep="first").to_numpy()
    if not repeated.any():
        return frame
    first_line = frame.drop_duplicates(column).set_index(column)[LINE]
    for position in np.flatnonzero(repeated):
        value = frame[column].iloc[position]
        reason = f"duplicate {column} '{value}' (first at line {int(first_line[value])})"
        line = int(frame[LINE].iloc[position])
        error = TableError(f"{path}: line {line}, column {column!r}: {reason}; each {column} "
                           f"must appear once; {SKIP_HINT}")
        rejects.handle(error, path, line, value, reason=f"column {column!r}: {reason}")
    return frame.loc[~repeated].reset_index(drop=True)


LABEVENT_COLUMNS = ("subject_id", "itemid", "charttime", "valuenum")
LABEVENT_OPTIONAL = ("ref_range_lower", "ref_range_upper", "flag")  # what the labs use
LABEVENT_NUMBERS = ("valuenum", "ref_range_lower", "ref_range_upper")
LABEVENT_TYPES = {"charttime": pa.timestamp("ns")} | {c: pa.float64() for c in LABEVENT_NUMBERS}
"""Types pyarrow parses while reading (ISO 8601 times within the nanosecond range, as pandas)."""
ID_TABLE_BYTES = 1 << 27
"""Ids a set spans at most to be looked up in a table (MIMIC's subject ids span 10M)."""
LABEVENT_ROW_BYTES = 128
"""About the bytes of one MIMIC-IV ``labevents`` row: ``chunk_rows`` rows make one read block."""
LABEVENT_CONVERT_ROWS = 1 << 18
"""Kept rows gathered (parsed by pyarrow, about 60 bytes each) before they are checked and
converted at once, so pandas' cost per call is paid every ~260k rows, not every block."""
LabRows = Callable[[pd.DataFrame, Rejects], pd.DataFrame]
LABEVENT_CHECKS = ("charttime", *LABEVENT_NUMBERS)
"""Columns checked on kept rows, in the order their bad rows are reported."""


def read_labevents(path: Path, itemids: Collection[int], subjects: Collection[int],
                   rejects: Rejects, chunk_rows: int = 10_000,
                   convert: LabRows | None = None) -> pd.DataFrame:
    """MIMIC ``labevents`` rows of panel ``itemids`` and ``subjects``, streamed in blocks.

    pyarrow reads only the needed columns, block by block (a .gz through ISA-L, three times
    zlib's speed), parses times and values as it reads, and keeps the rows of ``subjects``
    and ``itemids``; every ``LABEVENT_CONVERT_ROWS`` kept rows are checked and then
    ``convert`` (when given) makes them the caller's compact frame, so memory follows the kept
    rows in their final form, not the 118M rows of the full table nor their text. A value
    that pyarrow cannot parse (or an infinite one) makes a second read that keeps the text of
    such columns for ``parse_times``/``parse_numbers`` to name the row. Bad rows are reported
    after the last block, column by column as if the table were checked whole.
    """
    header = _header(path)
    _check_columns(path, header, LABEVENT_COLUMNS)
    columns = list(LABEVENT_COLUMNS) + [c for c in LABEVENT_OPTIONAL if c in header]
    wanted = {"itemid": IdSet(itemids), "subject_id": IdSet(subjects)}
    try:
        kept = _read_kept(path, columns, wanted, chunk_rows, _KeptRows(path, convert, True))
    except _TextNeeded:
        kept = _read_kept(path, columns, wanted, chunk_rows, _KeptRows(path, convert, False))
    frame = kept.frame()
    _report_bad_rows(kept.found, path, rejects)
    return frame


class _TextNeeded(Exception):
    """A value of ``labevents`` that pyarrow's parsed read cannot take (read it as text)."""


class _KeptRows:
    """Kept ``labevents`` rows: gathered as pyarrow tables of one schema, then checked and
    converted (``_labevent_rows``) every ``LABEVENT_CONVERT_ROWS`` rows or schema change."""

    def __init__(self, path: Path, convert: LabRows | None, parsed: bool) -> None:
        self.path, self.convert, self.parsed = path, convert, parsed
        self.found = Rejects("skip")
        self.parts: list[dict[str, pd.Series]] = []
        self.pending: list[pa.Table] = []
        self.lines: list[np.ndarray] = []

    def types(self, columns: Sequence[str]) -> dict[str, pa.DataType]:
        """What pyarrow reads each of ``columns`` as (ids are integers in both reads)."""
        parsed = LABEVENT_TYPES if self.parsed else {}
        return {c: parsed.get(c, pa.string()) for c in columns}

    def add(self, rows: pa.Table, lines: np.ndarray) -> None:
        """Gather ``rows`` (from file lines ``lines``); convert what is gathered when full or
        when ``rows``' column types differ (a block of the text read that stays text)."""
        if not self.parsed:
            rows = _typed(rows)
        elif any(pc.all(pc.is_finite(rows[c])).as_py() is False
                 for c in LABEVENT_NUMBERS if c in rows.column_names):
            raise _TextNeeded
        if self.pending and rows.schema != self.pending[0].schema:
            self._convert()
        self.pending.append(rows)
        self.lines.append(lines)
        if sum(len(t) for t in self.pending) >= LABEVENT_CONVERT_ROWS:
            self._convert()

    def finish(self, empty: pa.Table) -> None:
        """Convert what is gathered (``empty``'s columns when no row was kept)."""
        if not self.parts and not self.pending:
            self.add(empty, np.arange(0))
        if self.pending:
            self._convert()

    def _convert(self) -> None:
        rows, lines = pa.concat_tables(self.pending), np.concatenate(self.lines)
        self.pending, self.lines = [], []
        part = _labevent_rows(rows, lines, self.path, self.found, self.convert)
        self.parts.append({name: column.copy() for name, column in part.items()})  # unshared
        del rows, part
        release_freed_memory()

    def frame(self) -> pd.DataFrame:
        """Every kept row, converted, in file order: joined one column at a time, each part's
        column freed once joined, so memory holds the rows about once, not twice."""
        joined = {}
        for name in list(self.parts[0]):
            joined[name] = pd.concat([part.pop(name) for part in self.parts], ignore_index=True)
            release_freed_memory()
        self.parts = []
        return pd.DataFrame(joined, copy=False)


class IdSet:
    """A set of integer ids asked about many at a time: by a table of one byte per id between
    the least and the greatest (when at most ``ID_TABLE_BYTES``), else by ``np.isin``."""

    def __init__(self, ids: Collection[int]) -> None:
        self.ids = np.unique(np.fromiter(ids, dtype=np.int64))
        self.low = int(self.ids[0]) if len(self.ids) else 0
        span = int(self.ids[-1]) - self.low + 1 if len(self.ids) else 0
        self.table = np.zeros(span if span <= ID_TABLE_BYTES else 0, dtype=bool)
        if len(self.table):
            self.table[self.ids - self.low] = True

    def holds(self, values: np.ndarray) -> np.ndarray:
        """Whether each of ``values`` (int64) is in the set."""
        if not len(self.table):
            return np.isin(values, self.ids)
        offset = values - self.low
        inside = (offset >= 0) & (offset < len(self.table))
        return self.table[np.where(inside, offset, 0)] & inside


def _read_kept(path: Path, columns: list[str], wanted: dict[str, IdSet], chunk_rows: int,
               kept: _KeptRows) -> _KeptRows:
    """Stream ``columns`` of ``path`` in blocks of ``chunk_rows`` rows into ``kept``: the rows
    whose ``wanted`` columns hold wanted values. Raises ``_TextNeeded`` (parsed read only)."""
    line = 2
    try:
        with _open_binary(path) as source, pa_csv.open_csv(
                source, read_options=pa_csv.ReadOptions(
                    block_size=max(chunk_rows, 1) * LABEVENT_ROW_BYTES),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True),  # quoted comments
                convert_options=pa_csv.ConvertOptions(
                    include_columns=columns, null_values=[""], strings_can_be_null=True,
                    column_types=kept.types(columns) | {c: pa.int64() for c in wanted})
                ) as reader:
            for batch in reader:
                _check_integers(batch, wanted, path, line)
                keep = np.logical_and.reduce([ids.holds(batch[c].to_numpy())
                                              for c, ids in wanted.items()])
                if keep.any():
                    kept_rows = batch if keep.all() else batch.filter(pa.array(keep))
                    rows = pa.Table.from_batches([kept_rows])
                    kept.add(rows, line + np.flatnonzero(keep))
                line += batch.num_rows
            kept.finish(reader.schema.empty_table())
    except pa.ArrowInvalid as exc:
        if kept.parsed:
            raise _TextNeeded from None
        raise TableError(f"{path}: cannot be read near line {line}: {exc}; expected integer "
                         "subject_id and itemid columns") from None
    except (OSError, EOFError) as exc:  # ISA-L on a damaged .gz, or the disk
        raise TableError(f"{path}: cannot be read near line {line}: {exc}; expected a "
                         "complete, readable .csv or .csv.gz file") from None
    return kept


def _open_binary(path: Path) -> BinaryIO:
    """``path``'s bytes; a .gz decompressed by ISA-L (pyarrow's zlib takes a third of the read)."""
    return igzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _report_bad_rows(found: Rejects, path: Path, rejects: Rejects) -> None:
    """Hand the rows of ``found`` to ``rejects`` ordered by ``LABEVENT_CHECKS`` then line:
    the first raises, naming how many more rows the same check found."""
    bad = found.frame()
    if bad.empty:
        return
    bad["column"] = bad["reason"].str.extract(r"^column '([^']+)'", expand=False)
    bad["check"] = bad["column"].map({c: i for i, c in enumerate(LABEVENT_CHECKS)})
    bad = bad.sort_values(["check", "line"], kind="stable")
    for row in bad.itertuples():
        more = int((bad["column"] == row.column).sum()) - 1
        extra = f" ({more} more such row(s))" if more else ""
        error = TableError(f"{path}: line {row.line}, {row.reason}{extra}; {SKIP_HINT}")
        rejects.handle(error, path, int(row.line), None, reason=row.reason)


def _check_integers(batch: pa.RecordBatch, columns: Collection[str], path: Path,
                    line: int) -> None:
    for column in columns:
        if batch[column].null_count:
            row = int(np.flatnonzero(batch[column].is_null().to_numpy(zero_copy_only=False))[0])
            raise TableError(f"{path}: line {line + row}, column {column!r}: empty; expected an "
                             "integer id in every row")


def _labevent_rows(rows: pa.Table, lines: np.ndarray, path: Path, rejects: Rejects,
                   convert: LabRows | None) -> pd.DataFrame:
    frame = rows.to_pandas().assign(**{LINE: lines})
    frame = parse_times(frame, "charttime", path, rejects)
    frame = parse_numbers(frame, "valuenum", path, rejects, required=True,
                          what="a numeric lab value (a lab without a numeric value)")
    return convert(frame, rejects) if convert else frame


def _typed(table: pa.Table) -> pa.Table:
    """``table`` with ``charttime`` and the numbers cast by pyarrow (ten times pandas' speed)
    where every value of a column parses strictly; a column with an unusual or bad value stays
    text for ``parse_times``/``parse_numbers`` to parse and name its rows as before."""
    table = _cast_strictly(table, "charttime", pa.timestamp("ns"))
    for column in LABEVENT_NUMBERS:
        if column in table.column_names:
            table = _cast_strictly(table, column, pa.float64())
    return table


def _cast_strictly(table: pa.Table, column: str, to: pa.DataType) -> pa.Table:
    """``column`` cast to ``to`` when every value is empty or parses (a time by ISO 8601 within
    the nanosecond range, as pandas reads it; a finite number); else left as text."""
    try:
        values = pc.cast(table[column], to)
    except pa.ArrowInvalid:
        return table
    if pa.types.is_floating(to) and pc.all(pc.is_finite(values)).as_py() is False:
        return table
    return table.set_column(table.column_names.index(column), column, values)
