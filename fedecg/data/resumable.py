"""A store writer that a killed ``fedecg prepare`` continues when it is run again.

Records are written, in cohort order, into ``.OUT.partial`` beside ``OUT`` together with a
journal (``journal.json``): the fingerprint of what is prepared (fedecg version, the settings
that shape the store, the input tables, the cohort), how many records are durably written,
which of them were rejected and why, and the source rates seen. Every ``checkpoint_records``
records the waveform file is flushed to disk first and the journal is then replaced
atomically, so the journal never counts a record that is not on disk. A writer that finds a
journal with the same fingerprint continues after its last checkpoint; another fingerprint
starts afresh, and the log says what changed.

``OUT`` still appears only when complete: the finished folder is renamed into place. A kill
(SIGKILL, SIGTERM, power loss) or Ctrl-C leaves the partial folder for the next run; an error
(bad input) removes it, as it leaves no store. A lock on the partial folder keeps two prepares
from writing it at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedecg.data.store import StoreManifest, StoreWriter
from fedecg.errors import OutputExistsError, StoreError
from fedecg.io import (
    OutputKind,
    atomic_write_json,
    claim_output,
    mark_output,
    move_into_place,
    private_dir,
    remove_stale_staging,
)

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.json"
LOCK_FILE = "lock"
JOURNAL_FORMAT = 1
FINGERPRINT_PARTS = {"fedecg_version": "the fedecg version", "settings": "the settings",
                     "tables": "the input tables", "cohort": "the cohort",
                     "store": "the store's shape"}
"""Parts of a fingerprint and how a message names them, in the order they are compared."""


def partial_folder(out: Path) -> Path:
    """Where records of ``out`` are written until it is complete: ``.OUT.partial`` beside it."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def digest(value: Any) -> str:
    """A short SHA-256 of ``value`` (JSON-able, sorted keys)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def frame_digest(frame: pd.DataFrame) -> str:
    """A SHA-256 of a frame's column names, dtypes and values (row order counts)."""
    sha = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()])
                         .encode())
    sha.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return sha.hexdigest()[:32]


def file_stats(paths: Mapping[str, Path]) -> dict[str, list[int]]:
    """``[size, mtime_ns]`` of each file in ``paths`` (of each table file of a folder)."""
    stats = {}
    for name, path in sorted(paths.items()):
        path = Path(path)
        files = sorted(path.glob("*.csv*")) if path.is_dir() else [path]
        for item in files:
            found = item.stat()
            stats[f"{name}:{item.name}"] = [found.st_size, found.st_mtime_ns]
    return stats


@dataclass
class Journal:
    """What an interrupted writer had durably written (``journal.json``)."""

    fingerprint: dict[str, Any]
    n_records: int
    done: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    source_fs: dict[str, int] = field(default_factory=dict)
    compacting: bool = False
    format: int = JOURNAL_FORMAT

    @classmethod
    def read(cls, path: Path) -> Journal | None:
        """The journal at ``path``; None when there is none or it cannot be read."""
        try:
            journal = cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        journal.rejected = [(int(index), str(reason)) for index, reason in journal.rejected]
        return journal

    def reason_not_to_continue(self, fingerprint: Mapping[str, Any]) -> str | None:
        """Why records of this journal cannot be reused for ``fingerprint`` (None: they can)."""
        if self.format != JOURNAL_FORMAT:
            return "its journal has another format"
        changed = [what for key, what in FINGERPRINT_PARTS.items()
                   if self.fingerprint.get(key) != fingerprint.get(key)]
        if changed:
            return f"{' and '.join(changed)} changed since it was interrupted"
        if self.compacting:
            return "it was interrupted while compacting the waveforms, which leaves them unusable"
        return None


class ResumableStoreWriter(StoreWriter):
    """A ``StoreWriter`` that writes records in order and continues an interrupted one.

    ``fingerprint`` names what is written (see ``FINGERPRINT_PARTS``); ``resume=False`` starts
    afresh even when an interrupted writer's records match. After entering, ``done`` records
    are written (``resumed`` of them by an interrupted writer); call ``write_next`` or
    ``reject_next`` for each of the others in order, then ``finish``.
    """

    def __init__(self, out: Path, n_records: int, n_samples: int, dtype: str, *,
                 fingerprint: Mapping[str, Any], checkpoint_records: int,
                 overwrite: bool = False, inputs: Sequence[Path] = (),
                 resume: bool = True) -> None:
        super().__init__(out, n_records, n_samples, dtype, overwrite=overwrite, inputs=inputs)
        self.journal = Journal({**fingerprint, "store": [n_samples, str(np.dtype(dtype))]},
                               n_records)
        self.every = checkpoint_records
        self.resume = resume
        self.resumed = 0

    @property
    def done(self) -> int:
        """Records written or rejected so far (all below this index)."""
        return self.journal.done

    @property
    def rejected(self) -> list[tuple[int, str]]:
        """``(index, reason)`` of each record rejected so far, in order."""
        return self.journal.rejected

    @property
    def source_fs(self) -> dict[str, int]:
        """Records written so far per source sampling rate (``'500'``: 4000, ...)."""
        return self.journal.source_fs

    def __enter__(self) -> ResumableStoreWriter:
        claim_output(self.out, OutputKind.STORE, inputs=self.inputs, overwrite=self.overwrite)
        remove_stale_staging(self.out)
        self.staging = private_dir(partial_folder(self.out))
        self._stack.enter_context(hold_lock(self.staging / LOCK_FILE, self.out))
        previous = Journal.read(self.staging / JOURNAL_FILE)
        reason = self._reason_to_restart(previous)
        if previous is not None and reason is None:
            self.journal, self.resumed = previous, previous.done
            _remove_interrupted_writes(self.staging)
            self._open_waveforms(create=False)
            return self
        if previous is not None:
            log.warning("%s: not continuing the interrupted prepare in %s: %s; starting afresh",
                        self.out, self.staging, reason)
        _empty(self.staging, keep=LOCK_FILE)
        self._open_waveforms(create=True)
        return self

    def _reason_to_restart(self, previous: Journal | None) -> str | None:
        if previous is None:
            return None
        if not self.resume:
            return "asked not to resume"
        reason = previous.reason_not_to_continue(self.journal.fingerprint)
        size = (self.staging / "waveforms.npy").stat().st_size if reason is None else 0
        if reason is None and size != self.waveforms_bytes:
            reason = f"its waveform file holds {size} bytes, not {self.waveforms_bytes}"
        return reason

    def write_next(self, signal: np.ndarray, source_fs: float) -> None:
        """Store the signal of record ``done`` (read at ``source_fs`` Hz)."""
        self.write(self.journal.done, signal)
        key = f"{source_fs:g}"
        self.journal.source_fs[key] = self.journal.source_fs.get(key, 0) + 1
        self._advance()

    def reject_next(self, reason: str) -> None:
        """Leave record ``done`` out of the store, for ``reason``."""
        self.journal.rejected.append((self.journal.done, reason))
        self._advance()

    def _advance(self) -> None:
        self.journal.done += 1
        if self.journal.done % self.every == 0:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Flush the records to disk, then record in the journal that they are written."""
        assert self.staging is not None and self._file is not None
        os.fsync(self._file.fileno())
        atomic_write_json(self.staging / JOURNAL_FILE, asdict(self.journal))

    def finish(self, cohort: pd.DataFrame, manifest: StoreManifest,
               keep: np.ndarray | None = None, rejects: pd.DataFrame | None = None) -> None:
        """As ``StoreWriter.finish``; a compaction is journaled first (an interrupted one
        cannot be continued, so its rerun starts afresh)."""
        self.journal.compacting = keep is not None and not bool(np.all(keep))
        self.checkpoint()
        super().finish(cohort, manifest, keep=keep, rejects=rejects)

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self.staging is not None
        interrupted = exc_type is not None and not issubclass(exc_type, Exception)
        try:
            if interrupted and self._file is not None and not self.journal.compacting:
                self.checkpoint()
            elif exc_type is None:
                self._move_into_place()
        finally:
            self._stack.close()
            if not interrupted:
                shutil.rmtree(self.staging, ignore_errors=True)  # gone once moved into place
        if interrupted:
            log.warning("%s: interrupted after %d of %d records; run the same command again to "
                        "continue", self.out, self.journal.done, self.journal.n_records)
        return False

    def _move_into_place(self) -> None:
        assert self.staging is not None
        if not self._finished:
            raise StoreError(f"{self.out}: store writer closed before finish(); nothing written")
        for name in (JOURNAL_FILE, LOCK_FILE):
            (self.staging / name).unlink()
        mark_output(self.staging, OutputKind.STORE, record_contents=True)
        move_into_place(self.staging, self.out)


@contextmanager
def hold_lock(path: Path, out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (released when the process ends, even killed)."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise OutputExistsError(f"{out}: another fedecg prepare (process {holder}) is "
                                    "writing it now; wait for it to end, or stop it and run "
                                    "again") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def _remove_interrupted_writes(folder: Path) -> None:
    """Remove the temporary files of atomic writes a killed prepare left (``.NAME.*.tmp``:
    ``fedecg.io.atomic_write_bytes`` renames them into place only once complete)."""
    for leftover in folder.glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def _empty(folder: Path, keep: str) -> None:
    """Remove everything in ``folder`` but ``keep``."""
    for item in folder.iterdir():
        if item.name == keep:
            continue
        if item.is_dir():
            shutil.rmtree(item)
        else:
            item.unlink()
