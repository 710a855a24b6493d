"""One line per epoch or round, with the validation metric and an ETA, on a TTY and off it.

``fedecg train`` and ``fedecg simulate`` report through ``RunProgress``: by default a short
human line on stderr (``transfer · lab 3/4 · val loss 0.412 · val lab AUROC 0.655 · 6.1 s/epoch
· ETA 2m05s``); ``--quiet`` prints none; ``--log-json`` prints one JSON object per line on
stdout instead, for machines. The ETA is the median wall-clock time of the units (epochs or
rounds) seen so far in this process times the units left.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console

from fedecg.data.progress import format_duration


class Output(StrEnum):
    """How a long command reports its progress."""

    LINES = "lines"
    QUIET = "quiet"
    JSON = "json"


def output_mode(quiet: bool, log_json: bool) -> Output:
    """The mode of ``--quiet``/``--log-json`` (JSON wins: it is what a machine asked for)."""
    if log_json:
        return Output.JSON
    return Output.QUIET if quiet else Output.LINES


RESULT_KEYS = ("diagnosis_macro_auroc", "diagnosis_macro_auroc_ci", "lab_macro_auroc",
               "lab_macro_auroc_ci", "diagnosis_macro_auprc", "lab_macro_auprc", "n_test")
"""What the final JSON line (``--log-json``) carries per model."""
QUIET_HELP = "Print no per-epoch/per-round lines (the result and errors still print)."
LOG_JSON_HELP = "Print progress as one JSON object per line on stdout (for machines)."


def _number(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.3f}"
    return None


class RunProgress:
    """Counts the units (epochs, rounds) of a run and reports each one as it ends."""

    def __init__(self, total: int, unit: str, mode: Output, console: Console) -> None:
        self.total = total
        self.unit = unit
        self.mode = mode
        self.console = console
        self._clock = time.perf_counter()
        self._seconds: list[float] = []

    def restart_clock(self) -> None:
        """Time the next unit from now (after work that is not a unit, e.g. a baseline)."""
        self._clock = time.perf_counter()

    def eta(self, done: int) -> float | None:
        """Seconds left for the ``total - done`` units, or None before the first one."""
        if not self._seconds:
            return None
        return statistics.median(self._seconds) * max(self.total - done, 0)

    def unit_done(self, done: int, label: str, metrics: Mapping[str, Any],
                  fields: Mapping[str, Any]) -> None:
        """Report unit number ``done`` (1-based over the run) named ``label``.

        ``metrics`` are ``{shown name: value}`` for the human line; ``fields`` what the JSON
        line carries (model, stage, epoch or round, the metrics under their file keys).
        """
        now = time.perf_counter()
        self._seconds.append(now - self._clock)
        self._clock = now
        eta = self.eta(done)
        if self.mode is Output.JSON:
            record = {"event": self.unit, **fields, "done": done, "total": self.total,
                      "seconds": round(self._seconds[-1], 3),
                      "eta_seconds": None if eta is None else round(eta, 1)}
            typer.echo(json.dumps(record, default=str))
        elif self.mode is Output.LINES:
            shown = [f"{name} {text}" for name, value in metrics.items()
                     if (text := _number(value)) is not None]
            timing = f"{self._seconds[-1]:.1f} s/{self.unit}"
            left = "done" if done >= self.total else f"ETA {format_duration(eta or 0.0)}"
            self.console.print(" · ".join([label, *shown, timing, left]), highlight=False,
                               soft_wrap=True)

    def note(self, text: str) -> None:
        """A phase line (``transfer: pooled baseline``), as JSON in JSON mode."""
        if self.mode is Output.JSON:
            typer.echo(json.dumps({"event": "phase", "text": text}))
        else:
            self.console.print(f"[bold]•[/] {text}", highlight=False, soft_wrap=True)

    def result(self, record: Mapping[str, Any]) -> None:
        """The final JSON line of a run (JSON mode only)."""
        if self.mode is Output.JSON:
            typer.echo(json.dumps({"event": "result", **record}, default=str))
