"""Output folders are marked with what wrote them; ``--overwrite`` replaces only fedecg's own
folder of the same kind, never an input, a folder of another kind, or someone else's files.
A killed writer's staging folder is removed by the next writer of the same output."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from builders.raw_sites import make_mimic_site
from builders.site_store import make_store
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.train import TrainConfig
from fedecg.data.store import MANIFEST_FILE
from fedecg.errors import OutputExistsError
from fedecg.io import MARKER, OutputKind, atomic_directory, claim_output, mark_output
from fedecg.run_folder import RunFolder, prepare_training

runner = CliRunner()


def _prepare(tmp_path: Path, out: Path, *extra: str):
    site = tmp_path / "site"
    ecg_root, mimic_root = (site / "ecg", site / "mimic") if site.is_dir() else \
        make_mimic_site(site)
    return runner.invoke(app, ["prepare", "--ecg-root", str(ecg_root), "--mimic-root",
                               str(mimic_root), "--out", str(out), *extra])


def _error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    return lines[0]


def test_prepare_overwrite_refuses_a_folder_fedecg_did_not_write(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = _error_line(_prepare(tmp_path, out, "--overwrite").output)
    assert "not written by fedecg" in line and "--overwrite" not in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_prepare_overwrite_replaces_its_own_store(tmp_path):
    out = tmp_path / "store"
    assert _prepare(tmp_path, out, "--site-name", "north").exit_code == 0
    result = _prepare(tmp_path, out, "--site-name", "south", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((out / MANIFEST_FILE).read_text())["site_name"] == "south"
    assert json.loads((out / MARKER).read_text())["kind"] == "store"
    assert out.stat().st_mode & 0o777 == 0o700  # a store holds patient waveforms


def test_prepare_overwrite_keeps_a_store_that_holds_someone_elses_file(tmp_path):
    out = tmp_path / "store"
    assert _prepare(tmp_path, out).exit_code == 0
    (out / "my-notes.txt").write_text("mine")
    line = _error_line(_prepare(tmp_path, out, "--overwrite").output)
    assert "holds files fedecg did not write there (my-notes.txt)" in line
    assert (out / "my-notes.txt").read_text() == "mine" and (out / MANIFEST_FILE).is_file()


def test_prepare_never_overwrites_a_run_folder(tmp_path):
    store = make_store(tmp_path / "site-a", 20, ecgs_per_patient=1,
                       separable=True)
    run = tmp_path / "run"
    prepare_training(RunFolder(run), TrainConfig(), [store], overwrite=False)  # as `fedecg train`
    before = sorted(p.name for p in run.iterdir())
    line = _error_line(_prepare(tmp_path, run, "--overwrite").output)
    assert "holds a fedecg run, not a store" in line and "--overwrite" not in line
    assert sorted(p.name for p in run.iterdir()) == before


def test_prepare_refuses_to_write_into_its_input(tmp_path):
    line = _error_line(_prepare(tmp_path, tmp_path / "site" / "ecg" / "store").output)
    assert "lies inside the input" in line
    assert not (tmp_path / "site" / "ecg" / "store").exists()


@pytest.mark.parametrize(("found", "kind", "overwrite", "existing_ok", "expected"), [
    (None, OutputKind.RUN, False, False, False),  # nothing there yet
    (OutputKind.RUN, OutputKind.RUN, True, False, True),  # ours, replace
    (OutputKind.RUN, OutputKind.RUN, False, True, True),  # ours, continue
    (OutputKind.RUN, OutputKind.RUN, False, False, "pass --overwrite to replace it"),
    (OutputKind.STORE, OutputKind.STUDY, True, True, "holds a fedecg store, not a study"),
    (OutputKind.SERVER_KIT, OutputKind.RUN, True, True, "holds a fedecg server kit"),
    ("other files", OutputKind.SWEEP, True, True, "not written by fedecg"),
])
def test_claim_output_accepts_only_fedecgs_own_kind(tmp_path, found, kind, overwrite,
                                                     existing_ok, expected):
    folder = tmp_path / "out"
    if found == "other files":
        folder.mkdir()
        (folder / "x.csv").write_text("1")
    elif found is not None:
        folder.mkdir()
        mark_output(folder, found)
    if isinstance(expected, bool):
        assert claim_output(folder, kind, overwrite=overwrite,
                            existing_ok=existing_ok) is expected
        return
    with pytest.raises(OutputExistsError, match=expected):
        claim_output(folder, kind, overwrite=overwrite, existing_ok=existing_ok)


def test_a_killed_writers_staging_folder_is_removed_by_the_next_writer(tmp_path, caplog):
    ended = subprocess.Popen(["true"])
    ended.wait()
    stale = tmp_path / f".store.tmp-{ended.pid}-abc123"
    stale.mkdir()
    (stale / "waveforms.npy").write_bytes(b"patient data")
    running = tmp_path / f".store.tmp-{os.getppid()}-def456"  # a live writer's: kept
    running.mkdir()
    with caplog.at_level(logging.WARNING, logger="fedecg.io"), \
            atomic_directory(tmp_path / "store", OutputKind.STORE) as staging:
        assert staging.name.startswith(f".store.tmp-{os.getpid()}-")
        (staging / "manifest.json").write_text("{}")
    assert not stale.exists() and running.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "store"]
    assert len(caplog.records) == 1 and stale.name in caplog.records[0].getMessage()
