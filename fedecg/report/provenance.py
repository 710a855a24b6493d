"""``RUN/provenance.json``: when a run ran, for how long, by which command and which versions.

``fedecg train`` and ``fedecg simulate`` record it when they finish; the report shows it at
the top. A run folder without it (an older run, a deployed study) gets the installed versions
and the time ``summary.json`` was written, marked as such.
"""

from __future__ import annotations

import json
import platform
import shlex
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from fedecg.io import SHARED, atomic_write_json
from fedecg.run_folder import RunFolder

PACKAGES = ("fedecg", "flwr", "torch", "opacus")


def installed_versions() -> dict[str, str]:
    """Python and the versions of fedecg, Flower, PyTorch and Opacus installed now."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def record_run(run_dir: Path, argv: list[str], started: float, finished: float,
               resumed: bool = False) -> Path:
    """Write ``run_dir/provenance.json`` for a command ``argv`` that ran from ``started`` to
    ``finished`` (Unix times), ``resumed`` when it continued an interrupted run, and return
    its path."""
    path = RunFolder(run_dir).provenance
    atomic_write_json(path, {
        "command": shlex.join(["fedecg", *argv]), "started": _iso(started),
        "finished": _iso(finished), "seconds": round(finished - started, 1),
        "resumed": resumed, "versions": installed_versions()}, SHARED)
    return path


def read_provenance(run_dir: Path) -> dict[str, Any]:
    """The recorded provenance, or what can be said without it (``recorded: False``)."""
    folder = RunFolder(run_dir)
    path = folder.provenance
    try:
        return {"recorded": True, **json.loads(path.read_text())}
    except (OSError, ValueError):
        summary = folder.summary
        written = _iso(summary.stat().st_mtime) if summary.is_file() else None
        return {"recorded": False, "finished": written, "versions": installed_versions()}
