"""``fedecg validate``: reports on stores and raw inputs, and non-zero exits on fatal problems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders.raw_sites import (
    fixture_signal,
    make_generic_site,
    make_mimic_site,
    record_path,
    write_record,
    write_table,
)
from conftest import ECG_DEMO_RECORD_LIST, MIMIC_DEMO
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.data import PrepareConfig
from fedecg.data.leads import CANONICAL_LEADS
from fedecg.data.prepare import MimicInput, SiteInput, prepare_store
from fedecg.data.validate import report_input, report_store

runner = CliRunner()


def test_report_on_raw_mimic_counts_linkage_and_prevalence(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    report = report_input(MimicInput(ecg_root, mimic_root), PrepareConfig())
    assert report.ok and report.kind == "mimic"
    assert {k: report.counts[k] for k in ("ecgs", "patients", "stays", "ecgs_in_a_stay")} == {
        "ecgs": 4, "patients": 3, "stays": 1, "ecgs_in_a_stay": 1}
    # ECG 1: potassium 1 h away; ECG 3: hemoglobin 1 h away; ECGs 2 and 4: nothing
    assert report.linkage == {1.0: 0.5, 6.0: 0.5, 24.0: 0.5}
    assert report.prevalence["abn_potassium_high"]["known"] == 1
    assert report.missingness["age"] == 0 and report.missingness["lab_potassium"] == 0.75


def test_store_report_equals_raw_report(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    raw = report_input(SiteInput(site), PrepareConfig())
    prepare_store(SiteInput(site), tmp_path / "store", PrepareConfig())
    stored = report_store(tmp_path / "store")
    assert stored.ok and stored.linkage == raw.linkage
    pd.testing.assert_frame_equal(pd.DataFrame(stored.prevalence), pd.DataFrame(raw.prevalence))
    assert stored.missingness == raw.missingness
    assert stored.counts["ecgs"] == raw.counts["ecgs"] == 3


def test_real_demo_tables_linkage(shared_data: Path, tmp_path: Path) -> None:
    # the demo has no waveforms: check the tables only
    report = report_input(MimicInput(ECG_DEMO_RECORD_LIST.parent, MIMIC_DEMO), PrepareConfig(),
                          check_records=False)
    assert report.counts["ecgs"] == 659 and report.counts["patients"] == 92
    assert report.linkage[24.0] == pytest.approx(556 / 659)  # any panel lab with a number
    assert report.counts["rejected_rows"] == len(report.rejects) > 0


def test_cli_reports_unreadable_records_and_still_succeeds(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    (ecg_root / (record_path(10000001, 40000002, "v1") + ".dat")).unlink()
    result = runner.invoke(app, ["validate", str(ecg_root), "--mimic-root", str(mimic_root)])
    assert result.exit_code == 0, result.output
    assert "1 of 4 records are unreadable" in result.output
    assert "signal file not found" in result.output


def test_cli_exits_non_zero_when_every_record_is_unreadable(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    for dat in ecg_root.rglob("*.dat"):
        dat.write_bytes(b"\x00")
    result = runner.invoke(app, ["validate", str(ecg_root), "--mimic-root", str(mimic_root)])
    assert result.exit_code == 1
    assert "fatal: all 4 records are unreadable" in result.output


def test_cli_exits_non_zero_on_missing_table_and_empty_index(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    (site / "diagnoses.csv").unlink()
    missing = runner.invoke(app, ["validate", str(site)])
    assert missing.exit_code == 1 and "table 'diagnoses' not found" in missing.output
    empty = make_generic_site(tmp_path / "b")
    write_table(empty, "ecgs", "ecg_id,patient_id,record_path,ecg_time\n")
    result = runner.invoke(app, ["validate", str(empty)])
    assert result.exit_code == 1 and "no usable ECG rows" in result.output


def test_cli_flags_sites_whose_labs_do_not_link(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    labs = (site / "labs.csv").read_text().replace("2024-", "2019-")
    (site / "labs.csv").write_text(labs)
    result = runner.invoke(app, ["validate", str(site)])
    assert result.exit_code == 1 and "no ECG has any panel lab" in result.output


def test_site_without_labs_or_times_is_a_warning_not_fatal(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    (site / "labs.csv").unlink()
    result = runner.invoke(app, ["validate", str(site)])
    assert result.exit_code == 0, result.output
    assert "warning: no labs: lab features and lab-abnormality labels are unknown" in (
        " ".join(result.output.split()))
    ecgs = (site / "ecgs.csv").read_text().splitlines()
    (site / "ecgs.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in ecgs) + "\n")
    result = runner.invoke(app, ["validate", str(site)])
    assert result.exit_code == 0 and "no ECG has a time" in " ".join(result.output.split())


def test_cli_store_and_unknown_folder(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    prepare_store(SiteInput(site), tmp_path / "store", PrepareConfig())
    result = runner.invoke(app, ["validate", str(tmp_path / "store")])
    assert result.exit_code == 0 and "label prevalence" in result.output
    unknown = runner.invoke(app, ["validate", str(tmp_path)])
    assert unknown.exit_code == 1 and "not a site store" in unknown.output


def _add_ecg(site: Path, ecg_id: str, patient: str, signal: np.ndarray) -> None:
    write_record(site / "ecg" / ecg_id.lower(), signal, 100, list(CANONICAL_LEADS))
    with (site / "ecgs.csv").open("a") as index:
        index.write(f"{ecg_id},{patient},ecg/{ecg_id.lower()},2024-05-05 08:30:00\n")


def test_validate_flags_every_implausible_input_once(tmp_path: Path) -> None:
    """What used to be stored silently: each is a reject with its reason, validate exits 0."""
    site = make_generic_site(tmp_path)
    wave = fixture_signal(100, 10, list(CANONICAL_LEADS))
    padded = wave.copy()
    padded[200:] = 0.0
    _add_ecg(site, "E4", "P9", wave)  # patient not in patients.csv
    _add_ecg(site, "E5", "P3", wave)  # born after the ECG
    _add_ecg(site, "E6", "P1", np.zeros_like(wave))  # flat line
    _add_ecg(site, "E7", "P1", padded)  # 2 s, then zeros
    with (site / "patients.csv").open("a") as patients:
        patients.write("P3,F,2090-01-01\n")
    for name, old, new in (("labs", "5.8,mEq/L", "inf,mEq/L"),
                           ("diagnoses", "2024-05-05 12:00", "2024-05-04 12:00")):
        (site / f"{name}.csv").write_text((site / f"{name}.csv").read_text().replace(old, new))
    report = report_input(SiteInput(site), PrepareConfig())
    reasons = list(zip(report.rejects["path"].map(lambda p: Path(p).name),
                       report.rejects["reason"], strict=True))
    expected = [("ecgs.csv", "patient 'P9' is not in"), ("ecgs.csv", "age -65.7 years"),
                ("labs.csv", "'inf' is not a numeric lab value"),
                ("diagnoses.csv", "2024-05-04 12:00:00 is before start_time"),
                ("e6", "flat line"), ("e7", "only 2.0 s of signal, then 8.0 s of zeros")]
    assert len(reasons) == len(expected)
    for where, reason in expected:
        assert any(name == where and reason in text for name, text in reasons), reason
    assert report.ok and report.counts["ecgs"] == 5 and report.counts["unreadable_records"] == 2
    result = runner.invoke(app, ["validate", str(site)])
    assert result.exit_code == 0, result.output
    assert "2 of 5 records are unreadable or hold no usable ECG" in result.output
    assert "4 table rows were rejected" in result.output


def test_validate_warns_of_empty_splits_and_rare_labels(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    report = report_input(SiteInput(site), PrepareConfig(), check_records=False)
    warnings = "\n".join(report.warnings)
    assert "this site: no ECG in the test split, so nothing is tested there" in warnings
    assert "no ECG in the val split" in warnings
    assert ("this site: 6 label(s) have fewer than 5 positive ECGs in the train split (3 ECGs), "
            "so they can hardly be learned: abn_potassium_high, abn_sodium_high" in warnings)
