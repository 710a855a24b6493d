"""``fedecg prepare``: a site's inputs (MIMIC or generic layout) → a site store.

The cohort is built first (tables only); waveforms are then streamed record by record into the
store's waveform file (positioned writes, no memory map), in chunks over a process pool, so
memory stays flat in the number of ECGs. A bad record raises a ``RecordError`` (and the
atomic writer leaves no store), or with ``on_error='skip'`` is dropped and listed in
``rejects.csv``. A killed prepare, run again, continues from its last checkpoint
(``fedecg.data.resumable``).
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from threadpoolctl import threadpool_limits

from fedecg import __version__
from fedecg.config.data import EXECUTION_SETTINGS, PrepareConfig, WaveformConfig
from fedecg.data.cohort import (
    ClinicalTables,
    build_cohort,
    clinical_feature_names,
    resolve_diagnosis_set,
    resolve_panel,
)
from fedecg.data.ecg_rows import drop_unlinkable_ecgs
from fedecg.data.ecg_windows import EcgWindows
from fedecg.data.generic import read_site_ecgs, read_site_tables, with_site_declaration
from fedecg.data.labs import panel_label_names
from fedecg.data.mimic import read_mimic_tables, read_record_list
from fedecg.data.progress import CountProgress, format_duration, say
from fedecg.data.resumable import ResumableStoreWriter, digest, file_stats, frame_digest
from fedecg.data.store import StoreManifest, label_prevalence
from fedecg.data.tables import LINE, Rejects, find_table
from fedecg.data.waveform import preprocess, quality_problem, read_ecg
from fedecg.errors import RecordError, TableError
from fedecg.io import OutputKind, claim_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MimicInput:
    """MIMIC layout: the MIMIC-IV-ECG folder and the MIMIC-IV folder holding ``hosp/``."""

    ecg_root: Path
    mimic_root: Path

    @property
    def name(self) -> str:
        """Default site name."""
        return Path(self.ecg_root).resolve().name


@dataclass(frozen=True)
class SiteInput:
    """Generic hospital layout (``client/README.md``)."""

    site_dir: Path

    @property
    def name(self) -> str:
        """Default site name."""
        return Path(self.site_dir).resolve().name


PrepareInput = MimicInput | SiteInput


@dataclass(frozen=True)
class LoadedInput:
    """ECG index and clinical tables of an input, read with checks, and the settings in
    force (``config`` with what a generic site declares in its ``site.yaml``)."""

    ecgs: pd.DataFrame
    tables: ClinicalTables
    layout: str
    config: PrepareConfig
    index: Path


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare_store`` wrote."""

    path: Path
    manifest: StoreManifest
    n_rejected_records: int
    n_rejected_rows: int
    seconds: float
    resumed: int = 0
    """Records an interrupted prepare had written (0: none, or it started afresh)."""

    def summary(self) -> str:
        """One line for the terminal."""
        m = self.manifest
        rate = m.n_records / self.seconds if self.seconds > 0 else float("nan")
        return (f"{self.path}: {m.n_records} ECGs of {m.counts.get('patients', 0)} patients, "
                f"{m.fs:g} Hz x {m.n_samples} samples; rejected {self.n_rejected_records} "
                f"records and {self.n_rejected_rows} table rows; {self.seconds:.1f} s "
                f"({rate:.0f} ECG/s)")


def load_input(inputs: PrepareInput, config: PrepareConfig, rejects: Rejects) -> LoadedInput:
    """Read an input's ECG index and clinical tables (bad rows raise or go to ``rejects``)."""
    panel = resolve_panel(config.cohort)
    if isinstance(inputs, SiteInput):
        config = with_site_declaration(config, Path(inputs.site_dir))
    if isinstance(inputs, MimicInput):
        ecgs = read_record_list(Path(inputs.ecg_root), rejects)
        window = max(config.cohort.feature_window_hours, config.cohort.label_window_hours)
        tables = read_mimic_tables(Path(inputs.mimic_root), ecgs["subject_id"].unique(), panel,
                                   rejects, config.table_chunk_rows, EcgWindows(ecgs, window))
        layout, index, id_column = "mimic", find_table(inputs.ecg_root, "record_list"), "subject_id"
    else:
        ecgs = read_site_ecgs(Path(inputs.site_dir), rejects)
        tables = read_site_tables(Path(inputs.site_dir), panel, rejects, ecgs,
                                  config.cohort.header_diagnoses)
        layout, index, id_column = "generic", find_table(inputs.site_dir, "ecgs"), "patient_id"
    ecgs = drop_unlinkable_ecgs(ecgs, tables.patients, index,
                                tables.sources.get("patients", "the patients table"), id_column,
                                rejects).drop(columns=LINE)
    if ecgs.empty:
        reasons = "; ".join(rejects.frame()["reason"].tail(2)) if len(rejects) else "none"
        raise TableError(f"{inputs}: no usable ECG rows in the ECG index; expected at least one "
                         f"(last reasons: {reasons})")
    return LoadedInput(ecgs=ecgs, tables=tables, layout=layout, config=config,
                       index=index)


def _process(task: tuple[int, str], waveform: WaveformConfig
             ) -> tuple[int, np.ndarray | None, float, str | None]:
    index, path = task
    try:
        record = read_ecg(Path(path))
    except RecordError as exc:
        return index, None, float("nan"), str(exc)
    problem = quality_problem(record, waveform.min_seconds)
    if problem is not None:
        return index, None, float("nan"), f"{record.path}: {problem}"
    signal = preprocess(record, waveform.fs, waveform.clip_mv, waveform.n_samples)
    return index, signal.astype(waveform.dtype), record.fs, None


def stream_records(paths: list[str], config: PrepareConfig
                   ) -> Iterator[tuple[int, np.ndarray | None, float, str | None]]:
    """Yield ``(index, signal or None, source fs, error or None)`` for each path, in order.

    Workers get paths and send back signals in the store's dtype. numpy's BLAS runs on one
    thread in each process: the resampling's small matrix products gain nothing from more,
    and ``config.workers`` processes each spawning threads would oversubscribe the cores.
    """
    work = functools.partial(_process, waveform=config.waveform)
    tasks = enumerate(paths)  # lazy: no list of tasks as long as the cohort
    if config.workers == 1:
        with threadpool_limits(limits=1, user_api="blas"):
            yield from map(work, tasks)
        return
    with multiprocessing.get_context("fork").Pool(config.workers, initializer=threadpool_limits,
                                                  initargs=(1, "blas")) as pool:
        yield from pool.imap(work, tasks, chunksize=config.chunk_size)


def _write_waveforms(writer: ResumableStoreWriter, cohort: pd.DataFrame, config: PrepareConfig,
                     rejects: Rejects, console: Console | None) -> tuple[np.ndarray, Counter]:
    """Write the records after the ``writer.done`` an interrupted run wrote; return which
    records are kept and the count of each source rate. Rejects, earlier ones included, go to
    ``rejects`` in record order."""
    paths = cohort["record_path"].astype("str").tolist()
    studies = cohort["study_id"]
    for index, reason in writer.rejected:
        rejects.handle(RecordError(reason), paths[index], None, studies.iloc[index])
    first = writer.done
    with (CountProgress(console, "prepare", len(paths), first) as progress,
          closing(stream_records(paths[first:], config)) as results):
        for _, signal, fs, error in results:
            if error is None:
                writer.write_next(signal, fs)
            else:
                rejects.handle(RecordError(error), paths[writer.done], None,
                               studies.iloc[writer.done])
                writer.reject_next(error)
            progress.update(writer.done)
    keep = np.ones(len(paths), dtype=bool)
    keep[[index for index, _ in writer.rejected]] = False
    return keep, Counter(writer.source_fs)


def schema_manifest(config: PrepareConfig, site_name: str, **fields: Any) -> StoreManifest:
    """A manifest with the fields that ``config`` fixes (rate, length, features, labels,
    windows) and ``fields`` (counts, provenance, ...).

    Every store prepared with ``config`` has them; a deployed study's server, which holds no
    data, checks each site's store against this manifest.
    """
    panel, labels = resolve_panel(config.cohort), resolve_diagnosis_set(config.cohort)
    return StoreManifest(
        site_name=site_name, fs=config.waveform.fs,
        n_samples=config.waveform.n_samples, dtype=config.waveform.dtype,
        clinical_features=clinical_feature_names(panel), lab_labels=panel_label_names(panel),
        diagnosis_labels=[d.name for d in labels], lab_panel=list(panel),
        diagnosis_set=list(labels), feature_window_hours=config.cohort.feature_window_hours,
        label_window_hours=config.cohort.label_window_hours, **{"n_records": 0, **fields})


def _manifest(cohort: pd.DataFrame, config: PrepareConfig, inputs: PrepareInput,
              loaded: LoadedInput, source_fs: Counter, rejects: dict[str, int]) -> StoreManifest:
    counts = {"records": len(cohort), "patients": int(cohort["subject_id"].nunique()),
              "stays": int(cohort["stay_id"].nunique()), "ecgs_listed": len(loaded.ecgs),
              "lab_rows": loaded.tables.lab_rows,
              "ecgs_with_time": int(cohort["ecg_time"].notna().sum()),
              **{f"split_{s}": int((cohort["split"] == s).sum()) for s in ("train", "val", "test")},
              **{f"rejected_{k}": v for k, v in rejects.items()}}
    manifest = schema_manifest(
        config, config.site_name or inputs.name, n_records=len(cohort),
        preprocessing={"nan": "linear interpolation per lead", "resample":
                       "scipy.signal.resample_poly", "clip_mv": config.waveform.clip_mv,
                       "length": "trimmed or zero-padded at the end",
                       "duration_s": config.waveform.duration_s, "source_fs": dict(source_fs)},
        provenance={"layout": loaded.layout, "inputs": {k: str(v) for k, v in vars(inputs)
                    .items()}, "tables": loaded.tables.sources, "fedecg_version": __version__,
                    "config": config.model_dump(mode="json")}, counts=counts)
    manifest.prevalence = label_prevalence(cohort, manifest.lab_label_columns
                                           + manifest.diagnosis_columns)
    return manifest


def prepare_fingerprint(config: PrepareConfig, loaded: LoadedInput,
                        cohort: pd.DataFrame) -> dict[str, str]:
    """What a store prepared from ``loaded`` with ``config`` depends on (see
    ``ResumableStoreWriter``): an interrupted prepare continues only when all of it is the
    same. Settings of speed alone (``EXECUTION_SETTINGS``) are left out."""
    tables = {**loaded.tables.sources, "ecg_index": str(loaded.index)}
    return {"fedecg_version": __version__,
            "settings": digest(config.model_dump(mode="json", exclude=set(EXECUTION_SETTINGS))),
            "tables": digest(file_stats({k: Path(v) for k, v in tables.items()})),
            "cohort": frame_digest(cohort)}


def prepare_store(inputs: PrepareInput, out: Path, config: PrepareConfig,
                  overwrite: bool = False, console: Console | None = None,
                  resume: bool = True) -> PrepareResult:
    """Build the cohort of ``inputs`` and write the store at ``out`` atomically.

    A prepare that was interrupted (killed, Ctrl-C, power loss) leaves the records it wrote in
    ``.OUT.partial`` beside ``out``; run again with the same inputs and settings it writes only
    the rest (``PrepareResult.resumed``), unless ``resume`` is False. With ``console`` a
    progress bar is drawn there. Returns counts and timing.
    """
    sources = [Path(value) for value in vars(inputs).values()]
    claim_output(Path(out), OutputKind.STORE, inputs=sources, overwrite=overwrite)
    start = time.perf_counter()
    rejects = Rejects(config.on_error)
    say(console, "prepare: reading the record list and clinical tables of "
                  + " and ".join(dict.fromkeys(str(path) for path in sources)))
    loaded = load_input(inputs, config, rejects)
    config = loaded.config
    rejected_rows = len(rejects)
    cohort = build_cohort(loaded.ecgs, loaded.tables, config.cohort)
    say(console, f"prepare: {len(cohort):,} ECGs of {cohort['subject_id'].nunique():,} "
                  f"patients in the cohort ({loaded.tables.lab_rows:,} lab rows read) after "
                  f"{format_duration(time.perf_counter() - start)}; writing their waveforms "
                  f"with {config.workers} worker(s)")
    loaded.tables.drop_labs()  # linked: the waveform stage need not hold them
    with ResumableStoreWriter(
            Path(out), len(cohort), config.waveform.n_samples, config.waveform.dtype,
            fingerprint=prepare_fingerprint(config, loaded, cohort), overwrite=overwrite,
            checkpoint_records=config.checkpoint_records, inputs=sources,
            resume=resume) as writer:
        if writer.resumed:
            say(console, f"resuming {out}: {writer.resumed:,} of {len(cohort):,} records "
                          "already written")
        keep, source_fs = _write_waveforms(writer, cohort, config, rejects, console)
        if not keep.any():
            reasons = "; ".join(rejects.frame()["reason"].tail(3))
            raise RecordError(f"{inputs}: none of the {len(cohort)} records could be read, "
                              f"nothing written; last reasons: {reasons}")
        kept = cohort if keep.all() else cohort.loc[keep].reset_index(drop=True)  # no copy
        counts = {"records": int((~keep).sum()), "rows": rejected_rows}
        manifest = _manifest(kept, config, inputs, loaded, source_fs, counts)
        writer.finish(kept, manifest, keep=keep, rejects=rejects.frame())
    return PrepareResult(path=Path(out), manifest=manifest, n_rejected_records=counts["records"],
                         n_rejected_rows=rejected_rows, seconds=time.perf_counter() - start,
                         resumed=writer.resumed)

