"""The site store: what ``fedecg prepare`` writes once and every training reads.

A store is a folder holding

* ``waveforms.npy``: one array (memory-mapped when read) ``[records, 12, samples]`` in mV, leads in
  ``CANONICAL_LEADS`` order, at the manifest's ``fs``;
* ``cohort.parquet``: one row per record, in the same order (ids, time, features, labels, fold);
* ``manifest.json``: schema version, leads, rate, names of features and labels, lab panel,
  diagnosis set, windows, preprocessing, provenance, counts and prevalence;
* ``rejects.csv`` (optional): inputs skipped on request, with the reason for each.

It is written into a temporary sibling folder and renamed into place only when complete.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from pydantic import Field, ValidationError
from torch.utils.data import Dataset

from fedecg import __version__
from fedecg.config.base import StrictModel
from fedecg.data.diagnoses import DiagnosisLabel
from fedecg.data.labs import LabDefinition
from fedecg.data.leads import CANONICAL_LEADS
from fedecg.data.store_rows import RowView, checked_rows, read_cohort_rows, write_cohort
from fedecg.errors import StoreError
from fedecg.io import OutputKind, atomic_directory, atomic_write_json

SCHEMA_VERSION = 1
WAVEFORMS_FILE = "waveforms.npy"
COHORT_FILE = "cohort.parquet"
MANIFEST_FILE = "manifest.json"
REJECTS_FILE = "rejects.csv"

LAB_FEATURE_PREFIX = "lab_"
LAB_LABEL_PREFIX = "abn_"
DIAGNOSIS_PREFIX = "dx_"
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]


class StoreManifest(StrictModel):
    """What a store holds and how it was made (``manifest.json``)."""

    schema_version: int = SCHEMA_VERSION
    fedecg_version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    site_name: str
    n_records: int
    fs: float
    n_samples: int
    lead_order: list[str] = Field(default_factory=lambda: list(CANONICAL_LEADS))
    dtype: str = "float16"
    clinical_features: list[str]
    lab_labels: list[str]
    diagnosis_labels: list[str]
    lab_panel: list[LabDefinition]
    diagnosis_set: list[DiagnosisLabel]
    feature_window_hours: float
    label_window_hours: float
    preprocessing: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    prevalence: dict[str, dict[str, float]] = Field(default_factory=dict)

    @property
    def lab_label_columns(self) -> list[str]:
        """Cohort columns of the lab-abnormality labels (1, 0 or NaN for unknown)."""
        return [LAB_LABEL_PREFIX + name for name in self.lab_labels]

    @property
    def diagnosis_columns(self) -> list[str]:
        """Cohort columns of the diagnosis labels (1, 0 or NaN for unknown)."""
        return [DIAGNOSIS_PREFIX + name for name in self.diagnosis_labels]

    def incompatibilities(self, other: StoreManifest) -> list[str]:
        """What differs from ``other`` in ways that stop two stores training one model."""
        problems = []
        for field in ("fs", "n_samples", "lead_order", "clinical_features", "lab_labels",
                      "diagnosis_labels"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                problems.append(f"{field}: {_short(mine)} vs {_short(theirs)}")
        return problems


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def label_prevalence(cohort: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per label column: records with a known value, positives, and prevalence among known."""
    result = {}
    for column in columns:
        values = cohort[column]
        known = int(values.notna().sum())
        positive = int((values == 1).sum())
        result[column] = {"known": known, "positive": positive,
                          "prevalence": positive / known if known else float("nan")}
    return result


MIN_POSITIVES = 5
"""Fewer positive ECGs than this in a split make a label's metrics there noise."""
SPLIT_USE = {"train": "trained", "val": "validated", "test": "tested"}
FEW_POSITIVES_EFFECT = {"train": "they can hardly be learned",
                        "val": "their validation metrics are noise",
                        "test": "their test metrics (AUROC, CI) are noise; `fedecg train --cv "
                                "K` scores every ECG out of fold"}


def split_problems(cohort: pd.DataFrame, columns: Sequence[str], where: str) -> list[str]:
    """Warnings about the splits of ``cohort``: a split without ECGs, or labels ``columns``
    with fewer than ``MIN_POSITIVES`` positives in a split (labels without any positive in
    ``cohort`` are left out: that is a problem of their own)."""
    problems = []
    present = [c for c in columns if (cohort[c] == 1).any()]
    for split in SPLITS:
        part = cohort[cohort["split"] == split]
        if part.empty:
            problems.append(f"{where}: no ECG in the {split} split, so nothing is "
                            f"{SPLIT_USE[split]} there; add patients, use fewer sites, or change "
                            "cohort.val_folds/test_folds")
            continue
        few = [c for c in present if int((part[c] == 1).sum()) < MIN_POSITIVES]
        if few:
            shown = ", ".join(few[:8]) + (f" and {len(few) - 8} more" if len(few) > 8 else "")
            problems.append(f"{where}: {len(few)} label(s) have fewer than {MIN_POSITIVES} "
                            f"positive ECGs in the {split} split ({len(part)} ECGs), so "
                            f"{FEW_POSITIVES_EFFECT[split]}: {shown}")
    return problems


class StoreWriter:
    """Write a store atomically; use as a context manager.

    ``write(i, signal)`` fills record ``i``; ``finish(...)`` writes the cohort and manifest and
    drops records not in ``keep``. Leaving the block with an exception leaves no store behind.
    Records go to ``waveforms.npy`` by positioned writes, not through a memory map, so the
    writer's memory does not grow with the number of records.
    """

    def __init__(self, out: Path, n_records: int, n_samples: int, dtype: str = "float16",
                 overwrite: bool = False, inputs: Sequence[Path] = ()) -> None:
        self.out = Path(out)
        self.inputs = list(inputs)
        self.shape = (n_records, len(CANONICAL_LEADS), n_samples)
        self.dtype = np.dtype(dtype)
        self.overwrite = overwrite
        self._stack = ExitStack()
        self._finished = False
        self.staging: Path | None = None
        self._file: BinaryIO | None = None
        self._header = _npy_header(self.shape, self.dtype)
        self._row_bytes = self.shape[1] * n_samples * self.dtype.itemsize

    def __enter__(self) -> StoreWriter:
        self.staging = self._stack.enter_context(atomic_directory(
            self.out, OutputKind.STORE, overwrite=self.overwrite, inputs=self.inputs))
        self._open_waveforms(create=True)
        return self

    @property
    def waveforms_bytes(self) -> int:
        """The size of ``waveforms.npy`` before ``finish`` compacts it."""
        return len(self._header) + self.shape[0] * self._row_bytes

    def _open_waveforms(self, create: bool) -> None:
        """Open the staging ``waveforms.npy``: a new one of zeros, or (not ``create``) the one
        an interrupted writer left there."""
        assert self.staging is not None
        path = self.staging / WAVEFORMS_FILE
        self._file = self._stack.enter_context(path.open("w+b" if create else "r+b"))
        if create:
            self._file.write(self._header)
            self._file.truncate(self.waveforms_bytes)  # zeros

    def write(self, index: int, signal: np.ndarray) -> None:
        """Store one preprocessed ``[12, samples]`` signal at row ``index``."""
        assert self._file is not None, "use StoreWriter as a context manager"
        row = np.ascontiguousarray(signal, dtype=self.dtype)
        if row.shape != self.shape[1:] or not 0 <= index < self.shape[0]:
            raise ValueError(f"record {index} of shape {row.shape}: expected a row below "
                             f"{self.shape[0]} of shape {self.shape[1:]}")
        os.pwrite(self._file.fileno(), row.data, len(self._header) + index * self._row_bytes)

    def finish(self, cohort: pd.DataFrame, manifest: StoreManifest,
               keep: np.ndarray | None = None, rejects: pd.DataFrame | None = None) -> None:
        """Compact to the ``keep`` rows, then write cohort, manifest and rejects."""
        assert self.staging is not None and self._file is not None
        if keep is not None and not bool(np.all(keep)):
            self._compact(np.flatnonzero(keep))
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        write_cohort(cohort, self.staging / COHORT_FILE)
        if rejects is not None and len(rejects):
            rejects.to_csv(self.staging / REJECTS_FILE, index=False)
        atomic_write_json(self.staging / MANIFEST_FILE, manifest.model_dump(mode="json"))
        self._finished = True

    def _compact(self, rows: np.ndarray, chunk: int = 256) -> None:
        """Move the ``rows`` (ascending) to the front in place and rewrite the header.

        Safe in place: row ``j`` moves from ``rows[j] >= j`` and the new header is never
        longer, so nothing is overwritten before it is read.
        """
        assert self._file is not None
        fd, size = self._file.fileno(), self._row_bytes
        header = _npy_header((len(rows), *self.shape[1:]), self.dtype)
        moved = rows != np.arange(len(rows))
        first = int(np.argmax(moved)) if moved.any() else len(rows)  # rows before stay
        if len(header) != len(self._header):
            first = 0
        for start in range(first, len(rows), chunk):
            block = b"".join(os.pread(fd, size, len(self._header) + int(row) * size)
                             for row in rows[start:start + chunk])
            os.pwrite(fd, block, len(header) + start * size)
        os.pwrite(fd, header, 0)
        os.ftruncate(fd, len(header) + len(rows) * size)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and not self._finished:
            exc = StoreError(f"{self.out}: store writer closed before finish(); nothing written")
            self._stack.__exit__(type(exc), exc, None)
            raise exc
        return bool(self._stack.__exit__(exc_type, exc, tb))


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The ``.npy`` header numpy writes for a C-ordered array of ``shape`` and ``dtype``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {
        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def read_manifest(path: Path) -> StoreManifest:
    """The manifest of the store at ``path``, checking that the store's files exist."""
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"{path}: not a site store folder (run `fedecg prepare` to make one)")
    for file in (MANIFEST_FILE, COHORT_FILE, WAVEFORMS_FILE):
        if not (path / file).is_file():
            raise StoreError(f"{path}: missing {file}; the store is incomplete, prepare again")
    try:
        manifest = StoreManifest.model_validate(json.loads((path / MANIFEST_FILE).read_text()))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path / MANIFEST_FILE}: not a valid manifest: {exc}") from None
    if manifest.schema_version != SCHEMA_VERSION:
        raise StoreError(f"{path}: store schema {manifest.schema_version}, this fedecg reads "
                         f"{SCHEMA_VERSION}; prepare the store again")
    return manifest


class SiteStore:
    """A prepared site store (or a view of some of its rows), opened read-only."""

    def __init__(self, path: Path, manifest: StoreManifest, cohort: pd.DataFrame,
                 waveforms: np.ndarray) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.cohort = cohort
        self.waveforms = waveforms
        self._matrices: dict[tuple[str, ...], np.ndarray] = {}  # read-only cohort: cached

    @classmethod
    def open(cls, path: Path, rows: np.ndarray | None = None,
             name: str | None = None) -> SiteStore:
        """Open a store, checking that its files exist and agree with each other.

        With ``rows`` only those rows are opened (a virtual site, see ``view``): the cohort is
        read batch by batch keeping only them, so memory follows the rows, not the store.
        """
        path = Path(path)
        manifest = read_manifest(path)
        cohort_rows = pq.ParquetFile(path / COHORT_FILE).metadata.num_rows
        waveforms = np.load(path / WAVEFORMS_FILE, mmap_mode="r")
        expected = (manifest.n_records, len(manifest.lead_order), manifest.n_samples)
        if waveforms.shape != expected or cohort_rows != manifest.n_records:
            raise StoreError(f"{path}: waveforms {waveforms.shape} and cohort rows {cohort_rows} "
                             f"do not match the manifest {expected}; prepare the store again")
        if rows is None:
            return cls(path, manifest, pd.read_parquet(path / COHORT_FILE), waveforms)
        rows = checked_rows(rows, manifest.n_records, path)
        return cls._of_rows(path, manifest, read_cohort_rows(path / COHORT_FILE, rows),
                            RowView(waveforms, rows), name)

    def view(self, rows: np.ndarray, name: str | None = None) -> SiteStore:
        """A store holding only ``rows`` (sorted), waveforms not copied: its manifest keeps
        this store's labels and rate with the view's ``site_name`` and ``n_records``, so
        training reads it exactly like a prepared store."""
        rows = checked_rows(rows, len(self), self.path)
        cohort = self.cohort.iloc[rows].reset_index(drop=True)
        base, mapped = self.mapped(rows)
        return self._of_rows(self.path, self.manifest, cohort, RowView(base, mapped), name)

    @classmethod
    def _of_rows(cls, path: Path, manifest: StoreManifest, cohort: pd.DataFrame,
                 waveforms: RowView, name: str | None) -> SiteStore:
        manifest = manifest.model_copy(update={
            "site_name": name or manifest.site_name, "n_records": len(waveforms)})
        return cls(path, manifest, cohort, waveforms)

    def mapped(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(array, indices)``: the memory-mapped waveforms these ``rows`` live in and their
        rows there (a view maps into its parent's map; nothing is read or copied)."""
        rows = np.asarray(rows, dtype=np.int64)
        if isinstance(self.waveforms, RowView):
            return np.asarray(self.waveforms.base), self.waveforms.rows[rows]
        return np.asarray(self.waveforms), rows  # a plain view of the map: faster indexing

    def __len__(self) -> int:
        return self.manifest.n_records

    def indices(self, split: Split | None = None) -> np.ndarray:
        """Row indices of one split (``train``, ``val``, ``test``), or of all rows."""
        if split is None:
            return np.arange(len(self))
        if split not in SPLITS:
            raise StoreError(f"split {split!r}: expected one of {list(SPLITS)}")
        return np.flatnonzero(self.cohort["split"].to_numpy() == split)

    def clinical(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Clinical feature matrix ``[rows, features]`` (float32, NaN where missing)."""
        return self._matrix(self.manifest.clinical_features, rows)

    def lab_labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Lab-abnormality labels ``[rows, labels]`` (1, 0, NaN for unknown)."""
        return self._matrix(self.manifest.lab_label_columns, rows)

    def diagnosis_labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Diagnosis labels ``[rows, labels]`` (1, 0, NaN for unknown)."""
        return self._matrix(self.manifest.diagnosis_columns, rows)

    def _matrix(self, columns: list[str], rows: np.ndarray | None) -> np.ndarray:
        """A copy of ``columns`` at ``rows`` (all rows when None) as float32, NaN for missing.

        The whole columns are converted once per store (pandas column selection was a
        tenth of a federated site's round, paid by every dataset of every round).
        """
        key = tuple(columns)
        if key not in self._matrices:
            self._matrices[key] = self.cohort[columns].to_numpy(dtype=np.float32,
                                                                na_value=np.nan)
        full = self._matrices[key]
        return full.copy() if rows is None else full[rows]


class EcgDataset(Dataset):
    """Records of a store as tensors: ``ecg`` ``[12, T]``, ``clinical``, ``lab``, ``dx``.

    ``crop_samples`` takes a window of that length: random when ``random_crop``, else centred.
    Labels keep NaN for unknown; losses mask them.
    """

    def __init__(self, store: SiteStore, rows: np.ndarray, crop_samples: int | None = None,
                 random_crop: bool = False, seed: int = 0) -> None:
        self.store = store
        self.rows = np.asarray(rows)
        self.crop = crop_samples
        self.random_crop = random_crop
        self.rng = np.random.default_rng(seed)
        self.clinical = torch.from_numpy(store.clinical(self.rows))
        self.lab = torch.from_numpy(store.lab_labels(self.rows))
        self.dx = torch.from_numpy(store.diagnosis_labels(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        signal = np.asarray(self.store.waveforms[self.rows[item]], dtype=np.float32)
        if self.crop is not None and self.crop < signal.shape[-1]:
            span = signal.shape[-1] - self.crop
            start = int(self.rng.integers(0, span + 1)) if self.random_crop else span // 2
            signal = signal[:, start:start + self.crop]
        return {"ecg": torch.from_numpy(np.ascontiguousarray(signal)),
                "clinical": self.clinical[item], "lab": self.lab[item], "dx": self.dx[item],
                "row": torch.tensor(int(self.rows[item]))}
