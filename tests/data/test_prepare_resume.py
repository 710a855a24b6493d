"""A killed ``fedecg prepare`` continues when run again: resume equals uninterrupted.

A real ``fedecg prepare`` process of a small twin (two broken records, ``--on-error skip``,
a checkpoint every 4 records) is killed with SIGKILL once its journal counts 8 records; each
test continues a copy of what it left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.data import PrepareConfig
from fedecg.data.prepare import MimicInput, prepare_store
from fedecg.data.resumable import JOURNAL_FILE, LOCK_FILE, hold_lock, partial_folder
from fedecg.data.store import COHORT_FILE, MANIFEST_FILE, REJECTS_FILE, WAVEFORMS_FILE
from fedecg.errors import OutputExistsError

SETTINGS = ["--on-error", "skip", "--set", "checkpoint_records=4"]
KILL_AT = 8  # records the journal counts when the run is killed
BROKEN = (1, -2)  # positions in the record list of the records cut short: one before the kill


def _prepare_args(twin: Path, out: Path, mimic_root: Path | None = None) -> list[str]:
    return ["prepare", "--ecg-root", str(twin), "--mimic-root", str(mimic_root or twin),
            "--out", str(out), *SETTINGS]


def _journal_done(out: Path) -> int:
    try:
        return json.loads((partial_folder(out) / JOURNAL_FILE).read_text())["done"]
    except (OSError, ValueError):
        return 0


def _default_ctrl_c() -> None:
    """In the child: Ctrl-C as a terminal gives it, whatever the test process ignores (a
    child inherits an ignored SIGINT, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _killed_prepare(twin: Path, out: Path, signum: int = signal.SIGKILL,
                    timeout_s: float = 120.0) -> str:
    """Run ``fedecg prepare``, send it ``signum`` once its journal counts ``KILL_AT`` records;
    what it printed."""
    process = subprocess.Popen([sys.executable, "-m", "fedecg.cli", *_prepare_args(twin, out)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=_default_ctrl_c)
    deadline = time.monotonic() + timeout_s
    try:
        while _journal_done(out) < KILL_AT and process.poll() is None:
            assert time.monotonic() < deadline, "prepare wrote no journal in time"
            time.sleep(0.005)
        os.kill(process.pid, signum)
        printed = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode != 0, printed[-2000:]
    return printed


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """``(twin, partial folder the killed run left, uninterrupted store)``."""
    from fedecg.data.synth import generate_twin

    root = tmp_path_factory.mktemp("resume")
    twin = root / "twin"
    # ~1,400 records: at fedecg's read speed a 100-patient twin (~300) can finish in the
    # moment between the journal showing KILL_AT records and the signal arriving
    generate_twin(twin, patients=500, sites=1, seed=5)
    paths = pd.read_csv(twin / "record_list.csv")["path"]
    for position in BROKEN:
        dat = twin / (paths.iloc[position] + ".dat")
        dat.write_bytes(dat.read_bytes()[:5000])
    out = root / "killed" / "store"
    _killed_prepare(twin, out)
    assert not out.exists() and KILL_AT <= _journal_done(out) < len(paths)
    reference = root / "uninterrupted" / "store"
    result = CliRunner().invoke(app, _prepare_args(twin, reference))
    assert result.exit_code == 0, result.output
    return twin, partial_folder(out), reference


def _continue_in(tmp_path: Path, partial: Path) -> Path:
    """A copy of the killed run's partial folder beside ``tmp_path/store``; that path."""
    out = tmp_path / "store"
    shutil.copytree(partial, partial_folder(out))
    return out


def _without_times(manifest: Path) -> dict:
    fields = json.loads(manifest.read_text())
    fields.pop("created_at")
    return fields


def test_killed_prepare_resumes_into_the_uninterrupted_store(
        tmp_path: Path, killed: tuple[Path, Path, Path]) -> None:
    twin, partial, reference = killed
    written = json.loads((partial / JOURNAL_FILE).read_text())
    assert written["rejected"][0][0] == 1 and len(written["rejected"]) == 1
    out = _continue_in(tmp_path, partial)
    # a kill during the journal's atomic write leaves its temporary file (seen in CI)
    (partial_folder(out) / f".{JOURNAL_FILE}.x1y2z3.tmp").write_text("{")
    result = CliRunner().invoke(app, _prepare_args(twin, out))
    assert result.exit_code == 0, result.output
    n = json.loads((reference / MANIFEST_FILE).read_text())["counts"]["records"] + 2
    assert (f"resuming {out}: {written['done']:,} of {n:,} records already written"
            in result.output)
    for name in (WAVEFORMS_FILE, COHORT_FILE, REJECTS_FILE):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert _without_times(out / MANIFEST_FILE) == _without_times(reference / MANIFEST_FILE)
    assert len(pd.read_csv(out / REJECTS_FILE)) == 2
    assert not partial_folder(out).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in reference.iterdir())


def _compacting(partial: Path) -> None:
    journal = json.loads((partial / JOURNAL_FILE).read_text())
    (partial / JOURNAL_FILE).write_text(json.dumps({**journal, "compacting": True}))


def _sex_swapped(twin: Path, root: Path) -> Path:
    """A MIMIC-IV folder like ``twin``'s whose first patient has the other sex."""
    hosp = shutil.copytree(twin / "hosp", root / "mimic" / "hosp")
    path = next(hosp.glob("patients.csv*"))
    patients = pd.read_csv(path, dtype=str, keep_default_na=False)
    patients.loc[0, "gender"] = {"F": "M", "M": "F"}[patients.loc[0, "gender"]]
    patients.to_csv(path, index=False)
    return hosp.parent


RESTARTS = {  # the reason the rerun gives
    "settings": "the settings and the cohort changed since it was interrupted",
    "tables": "the input tables and the cohort changed since it was interrupted",
    "compacting": "it was interrupted while compacting the waveforms, which leaves them "
                  "unusable",
}


@pytest.mark.parametrize("case", sorted(RESTARTS))
def test_a_changed_prepare_starts_afresh_and_says_why(
        tmp_path: Path, killed: tuple[Path, Path, Path], case: str) -> None:
    twin, partial, reference = killed
    out = _continue_in(tmp_path, partial)
    mimic_root = _sex_swapped(twin, tmp_path) if case == "tables" else None
    if case == "compacting":
        _compacting(partial_folder(out))
    extra = ["--set", "cohort.label_window_hours=12"] if case == "settings" else []
    result = CliRunner().invoke(app, [*_prepare_args(twin, out, mimic_root), *extra])
    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output
    said = " ".join(result.output.split())
    assert f"not continuing the interrupted prepare in {partial_folder(out)}: " \
        f"{RESTARTS[case]}; starting afresh" in said
    assert not partial_folder(out).exists()
    assert len(pd.read_csv(out / REJECTS_FILE)) == 2
    assert (out / WAVEFORMS_FILE).read_bytes() == (reference / WAVEFORMS_FILE).read_bytes()
    same_cohort = (out / COHORT_FILE).read_bytes() == (reference / COHORT_FILE).read_bytes()
    assert same_cohort == (case == "compacting")


def test_resume_can_be_refused_and_a_running_prepare_is_not_joined(
        tmp_path: Path, killed: tuple[Path, Path, Path]) -> None:
    twin, partial, reference = killed
    out = _continue_in(tmp_path, partial)
    config = PrepareConfig(on_error="skip", checkpoint_records=4)
    with hold_lock(partial_folder(out) / LOCK_FILE, out), \
            pytest.raises(OutputExistsError, match=f"process {os.getpid()}"):
        prepare_store(MimicInput(twin, twin), out, config)
    result = prepare_store(MimicInput(twin, twin), out, config, resume=False)
    assert result.resumed == 0
    assert (out / WAVEFORMS_FILE).read_bytes() == (reference / WAVEFORMS_FILE).read_bytes()


def test_ctrl_c_saves_what_was_written_and_the_rerun_continues(
        tmp_path: Path, killed: tuple[Path, Path, Path]) -> None:
    twin, _, reference = killed
    out = tmp_path / "store"
    printed = _killed_prepare(twin, out, signal.SIGINT)
    saved = _journal_done(out)
    assert f"interrupted after {saved} of" in " ".join(printed.split()), printed[-2000:]
    assert not out.exists() and saved >= KILL_AT
    result = prepare_store(MimicInput(twin, twin), out, PrepareConfig(on_error="skip"))
    assert result.resumed == saved
    assert (out / WAVEFORMS_FILE).read_bytes() == (reference / WAVEFORMS_FILE).read_bytes()
    assert (out / REJECTS_FILE).read_bytes() == (reference / REJECTS_FILE).read_bytes()
