"""The progress of a long data command in a log: a line at every tenth, rate and time left."""

from __future__ import annotations

import io

from rich.console import Console

from fedecg.data.progress import CountProgress, format_duration


def test_a_log_gets_a_line_per_tenth_counted_from_a_resumed_start() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    with CountProgress(console, "prepare", 1000, first=300, every_seconds=0) as progress:
        for done in range(301, 1001):
            progress.update(done)
    lines = out.getvalue().splitlines()
    assert [line.split(" · ")[0] for line in lines] == [
        f"prepare: {n:,} of 1,000 records ({n // 10}%)" for n in range(400, 1001, 100)]
    assert all(line.endswith("left") and "ECG/s" in line for line in lines)
    assert lines[-1].endswith("0s left")


def test_a_fast_run_logs_only_its_last_line() -> None:
    out = io.StringIO()
    with CountProgress(Console(file=out, width=200), "synth", 500, unit="ECGs") as progress:
        for done in range(1, 501):
            progress.update(done)
    assert out.getvalue().startswith("synth: 500 of 500 ECGs (100%) · ")
    assert out.getvalue().count("\n") == 1


def test_no_console_prints_nothing_and_durations_read_as_people_write_them() -> None:
    with CountProgress(None, "prepare", 10) as progress:
        progress.update(10)
    assert [format_duration(s) for s in (44.6, 185, 3720)] == ["45s", "3m05s", "1h02m"]
