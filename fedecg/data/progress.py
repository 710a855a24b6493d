"""Progress of a long data command (``prepare``, ``synth``) on a terminal and in a log.

On a terminal a transient bar; off a terminal (output piped to a log) a line at every tenth of
the work that comes ``LOG_EVERY_SECONDS`` or more after the last line, and one at the end, so
a log of a long run shows how far it got, its rate and the time left, and a short run one line.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

LOG_LINES = 10
LOG_EVERY_SECONDS = 10.0
log = logging.getLogger(__name__)


def say(console: Console | None, text: str) -> None:
    """Log ``text``, and print it on ``console`` when there is one."""
    log.info(text)
    if console is not None:
        console.print(text, highlight=False, soft_wrap=True)


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class CountProgress:
    """Progress of ``total`` items counted from ``first`` (items an interrupted run did)."""

    def __init__(self, console: Console | None, label: str, total: int, first: int = 0,
                 unit: str = "records", rate_unit: str = "ECG/s",
                 every_seconds: float = LOG_EVERY_SECONDS) -> None:
        self.console, self.label, self.total, self.first = console, label, total, first
        self.unit, self.rate_unit, self.every_seconds = unit, rate_unit, every_seconds
        self.start = self.last_line = time.perf_counter()
        self.bar: Progress | None = None
        self.next_line = first + self._step()

    def _step(self) -> int:
        return max(1, -(-self.total // LOG_LINES))

    def __enter__(self) -> CountProgress:
        if self.console is not None and self.console.is_terminal:
            self.bar = Progress(TextColumn(f"[bold]{self.label}[/]"), BarColumn(),
                                MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                                TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.unit, total=self.total, completed=self.first,
                                          rate="")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(kind, error, trace)

    def rate(self, done: int) -> float:
        """Items per second of this run so far."""
        return (done - self.first) / max(time.perf_counter() - self.start, 1e-9)

    def update(self, done: int) -> None:
        """``done`` items of ``total`` are finished (a log gets a line per tenth, at most one
        per ``every_seconds``, and the last)."""
        if self.bar is not None:
            self.bar.update(self.task, completed=done,
                            rate=f"{self.rate(done):.0f} {self.rate_unit}")
            return
        if self.console is None or (done < self.total and done < self.next_line):
            return
        self.next_line = done + self._step()
        now = time.perf_counter()
        if done == self.total or now - self.last_line >= self.every_seconds:
            self.last_line = now
            self._print_line(self.console, done)

    def _print_line(self, console: Console, done: int) -> None:
        rate = self.rate(done)
        left = format_duration((self.total - done) / rate) if rate > 0 else "?"
        console.print(f"{self.label}: {done:,} of {self.total:,} {self.unit} "
                      f"({100 * done / max(self.total, 1):.0f}%) · {rate:,.0f} {self.rate_unit}"
                      f" · {left} left", highlight=False, soft_wrap=True)
