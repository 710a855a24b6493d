"""Files fedecg writes and reads, safely.

* Atomic writes: a reader sees the old file or the new one, never half of one. Files are
  private (``PRIVATE``, 0600) unless ``mode`` says otherwise (``SHARED``, 0640, for reports and
  summaries that hold no patient data); folders made by ``atomic_directory`` are 0700.
* Output folders carry a marker, ``.fedecg.json`` (the kind of output and the fedecg that wrote
  it). ``claim_output`` lets a command write only into a new or empty folder or one fedecg wrote
  as the same kind, and never into one of its own inputs, so ``--overwrite`` deletes only what
  fedecg wrote.
* Tensor files are read with ``weights_only=True`` (``load_weights``): a file that asks to run
  code is refused, and nothing in it runs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

from fedecg import __version__
from fedecg.errors import OutputExistsError

log = logging.getLogger(__name__)

PRIVATE, SHARED, PRIVATE_DIR = 0o600, 0o640, 0o700
MARKER = ".fedecg.json"
_UNSAFE_GLOBAL = re.compile(r"unsupported GLOBAL (\S+)")


class OutputKind(StrEnum):
    """The kinds of output folder fedecg writes (the ``kind`` in their marker)."""

    RUN = "run"  # fedecg train --out
    STORE = "store"  # fedecg prepare --out
    TWIN = "synthetic dataset"  # fedecg synth --out
    MODEL = "model"  # RUN/model
    STUDY = "study"  # fedecg simulate --out, fedecg server submit --out
    SWEEP = "sweep"  # fedecg sweep privacy --out
    NODE_KIT = "node kit"  # fedecg node keygen --kit
    SERVER_KIT = "server kit"  # fedecg server init --kit


def atomic_write_bytes(path: Path, data: bytes, mode: int = PRIVATE) -> None:
    """Write ``data`` to ``path`` (file mode ``mode``) via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, mode: int = PRIVATE) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: Path, payload: Any, mode: int = PRIVATE) -> None:
    """Write ``payload`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n", mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) if needed and make it readable by its owner only."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR)
    return path


def save_weights(path: Path, payload: Any) -> None:
    """``torch.save`` ``payload`` (tensors and plain data only) to ``path`` atomically."""
    import torch

    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_weights(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` onto the CPU.

    Raises ``ValueError`` with a short reason (never torch's advice to unpickle the file)
    when the file is not a PyTorch file of tensors and plain data.
    """
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # whatever went wrong, the file's content cannot be used
        unsafe = _UNSAFE_GLOBAL.search(str(exc))
        if unsafe:
            raise ValueError(f"it asks to run Python code ({unsafe.group(1)}); refused, nothing "
                             "in it was run") from None
        raise ValueError("not a PyTorch file of tensors (damaged, or not written by "
                         "fedecg)") from None


def mark_output(folder: Path, kind: OutputKind, record_contents: bool = False) -> None:
    """Record in ``folder`` that fedecg wrote it as an output of ``kind`` (and, with
    ``record_contents``, the names it holds now: all of them fedecg's)."""
    marker: dict[str, Any] = {"kind": str(kind), "fedecg_version": __version__}
    if record_contents:
        marker["contents"] = sorted(p.name for p in Path(folder).iterdir())
    atomic_write_json(Path(folder) / MARKER, marker)


def output_kind(folder: Path) -> OutputKind | None:
    """The kind of output fedecg wrote ``folder`` as; None without a readable marker."""
    try:
        return OutputKind(json.loads((Path(folder) / MARKER).read_text())["kind"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _foreign_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that its marker does not list as fedecg's (none if it lists none)."""
    recorded = json.loads((folder / MARKER).read_text()).get("contents")
    if not isinstance(recorded, list):
        return []
    return sorted({p.name for p in folder.iterdir()} - set(recorded) - {MARKER})


def claim_output(folder: Path, kind: OutputKind, *, inputs: Iterable[Path | str] = (),
                 overwrite: bool = False, existing_ok: bool = False) -> bool:
    """Check that ``folder`` may be written as a fedecg ``kind``; True if it already holds one.

    Refused (``OutputExistsError``, one line): a folder that is, holds or lies inside one of
    ``inputs``; a non-empty folder fedecg did not write, or wrote as another kind; one of this
    kind unless ``overwrite`` (the caller replaces it) or ``existing_ok`` (it continues it);
    and, to overwrite, one holding names its marker does not list (``record_contents``).
    """
    folder = Path(folder)
    _refuse_inputs(folder, inputs)
    if not folder.exists():
        return False
    if not folder.is_dir():
        raise OutputExistsError(f"{folder}: is a file, not a folder; choose another path")
    if not any(folder.iterdir()):
        return False
    found = output_kind(folder)
    if found == kind:
        foreign = _foreign_entries(folder) if overwrite else []
        if foreign:
            raise OutputExistsError(f"{folder}: holds files fedecg did not write there "
                                    f"({', '.join(foreign[:3])}); move them out first, or "
                                    "choose another path")
        if overwrite or existing_ok:
            return True
        raise OutputExistsError(f"{folder}: already holds a fedecg {kind}; choose another "
                                "path, or pass --overwrite to replace it")
    if found is None:
        raise OutputExistsError(f"{folder}: exists and was not written by fedecg (no {MARKER}),"
                                " so fedecg will not write there or delete it; choose another "
                                "path (if it is an older fedecg's output, delete it by hand)")
    raise OutputExistsError(f"{folder}: holds a fedecg {found}, not a {kind}; fedecg will not "
                            "replace it; choose another path")


def _refuse_inputs(folder: Path, inputs: Iterable[Path | str]) -> None:
    target = folder.resolve()
    for item in inputs:
        source = Path(item).resolve()
        relation = ("is" if target == source else "holds" if source.is_relative_to(target)
                    else "lies inside" if target.is_relative_to(source) else None)
        if relation is not None:
            raise OutputExistsError(f"{folder}: the output folder {relation} the input {item}; "
                                    "write the output elsewhere")


@contextmanager
def atomic_directory(final: Path, kind: OutputKind, *, overwrite: bool = False,
                     inputs: Iterable[Path | str] = ()) -> Iterator[Path]:
    """Yield a private (0700) staging folder that becomes ``final``, marked as a fedecg
    ``kind``, only if the block succeeds (``claim_output`` says what ``final`` may be).

    On any exception the staging folder is removed and ``final`` is left as it was. Staging
    folders that a killed writer left beside ``final`` are removed first.
    """
    final = Path(final)
    claim_output(final, kind, inputs=inputs, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(final)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=_staging_prefix(final, os.getpid())))
    try:
        yield staging
        mark_output(staging, kind, record_contents=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    move_into_place(staging, final)


def move_into_place(staging: Path, final: Path) -> None:
    """Rename the complete folder ``staging`` to ``final``, replacing a folder there."""
    if final.exists():
        retired = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, retired)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, final)


def _staging_prefix(final: Path, pid: int) -> str:
    return f".{final.name}.tmp-{pid}-"


def remove_stale_staging(final: Path) -> list[Path]:
    """Remove the staging folders of ``final`` whose writing process has ended; return them."""
    pattern = re.compile(re.escape(f".{final.name}.tmp-") + r"(\d+)-")
    removed = []
    for candidate in Path(final).parent.glob(f".{final.name}.tmp-*"):
        found = pattern.match(candidate.name)
        if found and candidate.is_dir() and not pid_alive(int(found.group(1))):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    if removed:
        log.warning("removed %d unfinished output(s) of %s left by a stopped process: %s",
                    len(removed), final, ", ".join(p.name for p in removed))
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists and has not ended (a zombie has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat")
    try:
        return not state.read_text().rsplit(") ", 1)[-1].startswith("Z")
    except OSError:
        return state.parent.is_dir()
