"""``fedecg prepare``: both layouts, every bad input, atomicity, the CLI, a synth round trip."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders.raw_sites import (
    HOSP,
    fixture_signal,
    lead_offset,
    make_generic_site,
    make_mimic_site,
    record_path,
    write_record,
    write_table,
)
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.data import PrepareConfig
from fedecg.data.leads import CANONICAL_LEADS, MIMIC_LEADS
from fedecg.data.prepare import MimicInput, SiteInput, prepare_store, schema_manifest
from fedecg.data.store import REJECTS_FILE, SiteStore, StoreWriter
from fedecg.data.waveform import preprocess, read_ecg
from fedecg.errors import FedecgError, InputFileError, RecordError, TableError

OFFSETS = np.array([lead_offset(name) for name in CANONICAL_LEADS])


def _prepare(tmp_path: Path, inputs: MimicInput | SiteInput, **settings) -> SiteStore:
    prepare_store(inputs, tmp_path / "store", PrepareConfig(**settings))
    return SiteStore.open(tmp_path / "store")


@pytest.mark.parametrize(("layout", "gz"), [("v1", False), ("demo", True)])
def test_mimic_layout_round_trip(tmp_path: Path, layout: str, gz: bool) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path, layout=layout, gz=gz)
    store = _prepare(tmp_path, MimicInput(ecg_root, mimic_root))
    assert store.waveforms.shape == (4, 12, 1000) and store.waveforms.dtype == np.float16
    assert store.cohort["study_id"].tolist() == [40000001, 40000002, 40000003, 40000004]
    means = np.asarray(store.waveforms, dtype=np.float32)[:, :, 100:900].mean(axis=2)
    np.testing.assert_allclose(means, np.tile(OFFSETS, (4, 1)), atol=2e-3)  # canonical order
    path = ecg_root / record_path(10000001, 40000001, layout)
    expected = preprocess(read_ecg(path), 100, 3.0, 1000).astype(np.float16)
    np.testing.assert_array_equal(store.waveforms[0], expected)
    m = store.manifest
    assert m.counts["patients"] == 3 and m.counts["stays"] == 1
    assert m.preprocessing["source_fs"] == {"500": 4}
    assert m.prevalence["abn_potassium_high"] == {"known": 1, "positive": 1, "prevalence": 1.0}
    assert m.clinical_features[:3] == ["age", "sex_male", "weight_kg"]
    assert len(m.lab_labels) == 33 and m.lab_labels[:2] == ["potassium_high", "potassium_low"]
    assert not (tmp_path / "store" / REJECTS_FILE).exists()


def test_generic_layout_any_rate_order_case_and_units(tmp_path: Path) -> None:
    store = _prepare(tmp_path, SiteInput(make_generic_site(tmp_path)), waveform={"fs": 50})
    # a deployed study's server checks each site against the manifest its settings fix
    schema = schema_manifest(PrepareConfig(waveform={"fs": 50}), "study")
    assert schema.incompatibilities(store.manifest) == []
    assert schema_manifest(PrepareConfig(), "study").incompatibilities(store.manifest) == [
        "fs: 100.0 vs 50.0", "n_samples: 1000 vs 500"]
    assert store.waveforms.shape == (3, 12, 500)
    wave = np.asarray(store.waveforms, dtype=np.float32)
    np.testing.assert_allclose(wave[:, :, 50:350].mean(axis=2), np.tile(OFFSETS, (3, 1)),
                               atol=3e-3)
    assert np.all(wave[2, :, 400:] == 0)  # the 8 s record is padded to 10 s
    assert store.manifest.preprocessing["source_fs"] == {"250": 1, "500": 1, "100": 1}
    assert store.cohort["subject_id"].tolist() == ["P1", "P1", "P2"]


def test_workers_give_identical_stores(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    one = _prepare(tmp_path / "a", MimicInput(ecg_root, mimic_root), workers=1)
    two = _prepare(tmp_path / "b", MimicInput(ecg_root, mimic_root), workers=2, chunk_size=1)
    np.testing.assert_array_equal(one.waveforms, two.waveforms)
    pd.testing.assert_frame_equal(one.cohort, two.cohort)


def _truncate(ecg_root: Path) -> None:
    dat = ecg_root / (record_path(10000001, 40000002, "v1") + ".dat")
    dat.write_bytes(dat.read_bytes()[:5000])


def _rewrite(names: list[str], nan_lead: int | None = None) -> Callable[[Path], None]:
    def apply(ecg_root: Path) -> None:
        signal = fixture_signal(500, 10, list(MIMIC_LEADS))[:, :len(names)].copy()
        if nan_lead is not None:
            signal[:, nan_lead] = np.nan
        write_record(ecg_root / record_path(10000001, 40000002, "v1"), signal, 500, names)
    return apply


def _write_signal(signal: Callable[[np.ndarray], np.ndarray],
                  seconds: float = 10) -> Callable[[Path], None]:
    def apply(ecg_root: Path) -> None:
        wave = signal(fixture_signal(500, seconds, list(MIMIC_LEADS)))
        write_record(ecg_root / record_path(10000001, 40000002, "v1"), wave, 500,
                     list(MIMIC_LEADS))
    return apply


def _zero_after(seconds: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(wave: np.ndarray) -> np.ndarray:
        wave[round(500 * seconds):] = 0.0
        return wave
    return apply


def _header_rate(rate: str) -> Callable[[Path], None]:
    def apply(ecg_root: Path) -> None:
        hea = ecg_root / (record_path(10000001, 40000002, "v1") + ".hea")
        hea.write_text(hea.read_text().replace("40000002 12 500 ", f"40000002 12 {rate} "))
    return apply


def _record_list(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def apply(ecg_root: Path) -> None:
        frame = pd.read_csv(ecg_root / "record_list.csv", dtype=str)
        edit(frame).to_csv(ecg_root / "record_list.csv", index=False)
    return apply


def _bad_time(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[1, "ecg_time"] = "2150-13-45 99:00"
    return frame


RECORD_CASES = {
    "truncated .dat": (_truncate, r"40000002\.dat: truncated or corrupt"),
    "missing lead": (_rewrite(list(MIMIC_LEADS[:11])), r"missing lead\(s\) \['V6'\]"),
    "unknown lead names": (_rewrite([*MIMIC_LEADS[:11], "X6"]), r"unknown lead names \['X6'\]"),
    "all-NaN lead": (_rewrite(list(MIMIC_LEADS), nan_lead=0), r"\['I'\] hold no valid sample"),
    "rate nan": (_header_rate("nan"), r"40000002\.hea: sampling rate 'nan' Hz in the record "
                 r"line; expected a number from 50 to 10000 Hz"),
    "rate 1e9": (_header_rate("1e9"), r"sampling rate '1e9' Hz in the record line"),
    "flat line": (_write_signal(np.zeros_like), r"40000002: flat line: every lead varies by "
                  r"less than 0\.01 mV"),
    "2 s record": (_write_signal(lambda w: w, seconds=2), r"only 2\.0 s of signal; expected at "
                   r"least 5 s, or most of the ECG would be zero padding"),
    "zero-padded record": (_write_signal(_zero_after(2)), r"only 2\.0 s of signal, then 8\.0 s "
                           r"of zeros in every lead"),
}
def _unknown_patient(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[1, "subject_id"] = "10000009"
    return frame


def _before_birth(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[1, "ecg_time"] = "2050-06-01 08:00:00"  # subject 10000001 was born in 2090
    return frame


ROW_CASES = {
    "unparseable time": (_record_list(_bad_time), "record_list.csv: line 3, column 'ecg_time': "
                         "'2150-13-45 99:00' is not a date-time"),
    "duplicate study id": (_record_list(lambda f: pd.concat([f, f.iloc[[1]]])),
                           "record_list.csv: line 6, column 'study_id': duplicate study_id "
                           "'40000002' \\(first at line 3\\)"),
    "patient not in patients": (_record_list(_unknown_patient), "record_list.csv: line 3, column "
                                "'subject_id': patient '10000009' is not in .*patients.csv, so "
                                "sex and age would be unknown"),
    "ECG before birth": (_record_list(_before_birth), "record_list.csv: line 3, column "
                         "'subject_id': age -39.6 years at the ECG \\(2050-06-01 08:00:00\\): "
                         "the birth date 2090-01-01 of patient '10000001' in .*patients.csv is "
                         "after the ECG"),
}


def _no_store_left(tmp_path: Path) -> bool:
    return not (tmp_path / "store").exists() and not list(tmp_path.glob(".store*"))


@pytest.mark.parametrize("case", sorted(RECORD_CASES | ROW_CASES))
def test_bad_ecg_inputs_raise_or_go_to_rejects(tmp_path: Path, case: str) -> None:
    breaker, message = (RECORD_CASES | ROW_CASES)[case]
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    breaker(ecg_root)
    inputs = MimicInput(ecg_root, mimic_root)
    error = RecordError if case in RECORD_CASES else TableError
    with pytest.raises(error, match=message):
        prepare_store(inputs, tmp_path / "store", PrepareConfig())
    assert _no_store_left(tmp_path)
    store = _prepare(tmp_path, inputs, on_error="skip")
    rejects = pd.read_csv(tmp_path / "store" / REJECTS_FILE)
    assert len(rejects) == 1 and rejects.loc[0, "study_id"] == 40000002
    assert pd.Series(rejects.loc[0, "reason"]).str.contains(message.split(": ")[-1]).all()
    kept = [40000001, 40000003, 40000004] if case != "duplicate study id" else None
    assert store.cohort["study_id"].tolist() == (kept or [40000001, 40000002, 40000003,
                                                          40000004])
    assert len(store.waveforms) == len(store.cohort) == store.manifest.n_records


GENERIC_CASES = {  # table, old text, new text, the reason, the ECGs kept with --on-error skip
    "lab value inf": ("labs", "5.8,mEq/L", "inf,mEq/L", "labs.csv: line 2, column 'value': 'inf' "
                      "is not a numeric lab value", ["E1", "E2", "E3"]),
    "encounter ends before it starts": (
        "diagnoses", "2024-05-05 12:00", "2024-05-04 12:00", "diagnoses.csv: line 4, column "
        "'end_time': 2024-05-04 12:00:00 is before start_time 2024-05-05 07:00:00; an "
        "encounter must end after it starts", ["E1", "E2", "E3"]),
    "birth date after the ECG": ("patients", "P2,M,1950", "P2,M,2090", "ecgs.csv: line 4, column "
                                 "'patient_id': age -65.7 years at the ECG", ["E1", "E2"]),
    "patient not in patients.csv": ("ecgs", "E3,P2", "E3,P9", "ecgs.csv: line 4, column "
                                    "'patient_id': patient 'P9' is not in .*patients.csv",
                                    ["E1", "E2"]),
}


@pytest.mark.parametrize("case", sorted(GENERIC_CASES))
def test_implausible_generic_rows_raise_or_go_to_rejects(tmp_path: Path, case: str) -> None:
    table, old, new, message, kept = GENERIC_CASES[case]
    site = make_generic_site(tmp_path)
    path = site / f"{table}.csv"
    path.write_text(path.read_text().replace(old, new))
    with pytest.raises(TableError, match=message + ".*; fix it, or pass --on-error skip"):
        prepare_store(SiteInput(site), tmp_path / "store", PrepareConfig())
    assert _no_store_left(tmp_path)
    store = _prepare(tmp_path, SiteInput(site), on_error="skip")
    rejects = pd.read_csv(tmp_path / "store" / REJECTS_FILE)
    assert len(rejects) == 1 and rejects.loc[0, "path"] == str(site / message.split(":")[0])
    assert pd.Series(rejects.loc[0, "reason"]).str.contains(message.split(": ")[-1]).all()
    assert store.cohort["study_id"].tolist() == kept
    assert not store.cohort["age"].lt(0).any() and store.cohort["sex"].notna().all()
    assert np.isfinite(store.cohort["lab_potassium"].dropna()).all()


def test_lab_without_numeric_value_raises_or_is_rejected(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    text = HOSP["labevents"] + "6,10000001,20000001,6,50912,2150-03-01 10:30:00,___,,mg/dL,,,\n"
    path = write_table(mimic_root / "hosp", "labevents", text)
    with pytest.raises(TableError, match=f"{path}: line 7, column 'valuenum': empty is not a "
                                         "numeric lab value"):
        prepare_store(MimicInput(ecg_root, mimic_root), tmp_path / "store", PrepareConfig())
    assert _no_store_left(tmp_path)
    store = _prepare(tmp_path, MimicInput(ecg_root, mimic_root), on_error="skip")
    rejects = pd.read_csv(tmp_path / "store" / REJECTS_FILE)
    assert rejects[["path", "line"]].values.tolist() == [[str(path), 7]]
    assert store.cohort["lab_creatinine"].isna().all()


@pytest.mark.parametrize(("table", "text", "error", "message"), [
    ("omr", None, InputFileError, r"table 'omr' not found: expected .*omr\.csv or .*omr\.csv\.gz"),
    ("admissions", "subject_id,hadm_id,admittime\n1,2,2150-01-01\n", TableError,
     r"admissions\.csv: missing column\(s\) \['dischtime'\]; found"),
])
def test_missing_table_or_column_is_named(tmp_path: Path, table: str, text: str | None,
                                          error: type[FedecgError], message: str) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    (mimic_root / "hosp" / f"{table}.csv").unlink()
    if text is not None:
        write_table(mimic_root / "hosp", table, text)
    for on_error in ("raise", "skip"):
        with pytest.raises(error, match=message):
            prepare_store(MimicInput(ecg_root, mimic_root), tmp_path / "store",
                          PrepareConfig(on_error=on_error))
    assert _no_store_left(tmp_path)


def test_generic_unit_mismatch_names_row_and_expected_unit(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    labs = (site / "labs.csv").read_text().replace("5.8,mEq/L", "5.8,mmol/L")
    (site / "labs.csv").write_text(labs)
    with pytest.raises(TableError, match=r"labs\.csv: line 2, column 'unit': unit 'mmol/L' for "
                                         r"potassium; expected 'mEq/L'"):
        prepare_store(SiteInput(site), tmp_path / "store", PrepareConfig())


def test_ed_module_adds_stays_diagnoses_and_vitals(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    ed = mimic_root / "ed"
    ed.mkdir()
    write_table(ed, "edstays", "subject_id,hadm_id,stay_id,intime,outtime\n"
                "10000003,,30000001,2170-05-05 03:00:00,2170-05-05 09:00:00\n")
    write_table(ed, "diagnosis", "subject_id,stay_id,seq_num,icd_code,icd_version,icd_title\n"
                "10000003,30000001,1,I214,10,NSTEMI\n")
    write_table(ed, "triage", "subject_id,stay_id,temperature,heartrate,resprate,o2sat,sbp,dbp,"
                "pain,acuity,chiefcomplaint\n10000003,30000001,98.6,110,18,97,150,90,5,2,CP\n")
    write_table(ed, "vitalsign", "subject_id,stay_id,charttime,temperature,heartrate,resprate,"
                "o2sat,sbp,dbp,rhythm,pain\n"
                "10000003,30000001,2170-05-05 04:45:00,,95,,,,,,\n")
    row = _prepare(tmp_path, MimicInput(ecg_root, mimic_root)).cohort.iloc[3]
    assert (row["stay_kind"], row["dx_acute_mi"], row["dx_heart_failure"]) == ("ed", 1, 0)
    assert row["heart_rate"] == 95 and row["sbp"] == 150  # vitalsign 15 min, triage 2 h
    assert row["temperature"] == pytest.approx(37.0)


runner = CliRunner()


def test_cli_prepare_with_overrides_and_errors(tmp_path: Path) -> None:
    ecg_root, mimic_root = make_mimic_site(tmp_path)
    args = ["prepare", "--ecg-root", str(ecg_root), "--mimic-root", str(mimic_root),
            "--out", str(tmp_path / "store")]
    result = runner.invoke(app, [*args, "--set", "waveform.fs=250", "--site-name", "north",
                                 "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "4 ECGs of 3 patients" in result.output
    log = result.output.splitlines()  # off a terminal: the phases, then (a fast run) one line
    assert log[0].startswith("prepare: reading the record list and clinical tables of")
    assert log[1].startswith("prepare: 4 ECGs of 3 patients in the cohort")
    assert log[2].startswith("prepare: 4 of 4 records (100%) · ") and log[2].endswith("left")
    assert log[3].startswith(f"{tmp_path / 'store'}: 4 ECGs of 3 patients")
    manifest = SiteStore.open(tmp_path / "store").manifest
    assert (manifest.fs, manifest.n_samples, manifest.site_name) == (250, 2500, "north")
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "already holds a fedecg store" in again.output
    bad = runner.invoke(app, [*args, "--overwrite", "--set", "cohort.n_folds=1"])
    assert bad.exit_code == 1 and "cohort.n_folds" in bad.output
    both = runner.invoke(app, [*args, "--site-dir", str(tmp_path)])
    assert both.exit_code == 1 and "not both" in both.output
    shutil.rmtree(mimic_root / "hosp")
    missing = runner.invoke(app, [*args, "--overwrite"])
    assert missing.exit_code == 1 and "hosp: folder not found" in missing.output
    assert "Traceback" not in missing.output


def test_synthetic_twin_round_trip(tmp_path: Path) -> None:
    from fedecg.data.synth import generate_twin

    summary = generate_twin(tmp_path / "twin", patients=12, sites=2, seed=3)
    store = _prepare(tmp_path, MimicInput(tmp_path / "twin", tmp_path / "twin"))
    assert len(store) == summary.ecgs and store.manifest.counts["patients"] == 12
    assert store.cohort["lab_potassium"].notna().mean() > 0.5
    assert store.cohort["dx_atrial_fibrillation"].notna().any()
    wave = np.asarray(store.waveforms, dtype=np.float32)
    assert np.isfinite(wave).all() and np.abs(wave).max() <= 3.0 and wave.std() > 0.01
    # the store's waveforms.npy is, byte for byte, numpy's own file of the preprocessed records
    expected = np.stack([preprocess(read_ecg(Path(path)), 100, 3.0, 1000).astype(np.float16)
                         for path in store.cohort["record_path"]])
    assert (tmp_path / "store" / "waveforms.npy").read_bytes() == _npy_bytes(expected)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_store_writer_keeps_rows_in_any_order_and_compacts_to_numpys_file(
        tmp_path: Path) -> None:
    rows = np.random.default_rng(0).normal(size=(9, 12, 50)).astype(np.float32)
    keep = np.array([1, 1, 0, 1, 0, 0, 1, 1, 0], dtype=bool)
    with StoreWriter(tmp_path / "store", 9, 50) as writer:
        for index in np.random.default_rng(1).permutation(9):
            writer.write(int(index), rows[index])
        with pytest.raises(ValueError, match=r"record 9 of shape \(12, 50\): expected a row"):
            writer.write(9, rows[0])
        writer.finish(pd.DataFrame({"row": np.flatnonzero(keep)}), schema_manifest(
            PrepareConfig(waveform={"fs": 5}), "site", n_records=int(keep.sum())), keep=keep)
    written = (tmp_path / "store" / "waveforms.npy").read_bytes()
    assert written == _npy_bytes(rows[keep].astype(np.float16))


def test_documented_preset_equals_the_defaults() -> None:
    from fedecg.config.base import load_config

    preset = Path(__file__).resolve().parents[2] / "configs" / "prepare.yaml"
    assert load_config(PrepareConfig, preset) == PrepareConfig()


def test_cli_prepare_into_an_unwritable_out_is_one_line(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    result = CliRunner().invoke(app, ["prepare", "--site-dir", str(site), "--out", "/proc/x"])
    *progress, error = result.output.splitlines()  # the phases read so far, then the error
    assert result.exit_code == 1 and all(line.startswith("prepare: ") for line in progress)
    assert error.startswith("error: /proc/") and "that you may write there" in error
