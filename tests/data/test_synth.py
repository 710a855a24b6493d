"""The synthetic twin: MIMIC file formats, WFDB facts, determinism, sites, latent truth."""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from conftest import ECG_DEMO_RECORD_LIST, MIMIC_DEMO
from scipy import signal as sps
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.data.leads import MIMIC_LEADS
from fedecg.data.synth import TRUTH_FILE, generate_twin
from fedecg.data.synth.assemble import CONDITIONS, build_world, lab_draws
from fedecg.data.synth.hosp_tables import admission_frame, admission_truth, diagnoses_table
from fedecg.data.synth.labevents import build_labevents
from fedecg.data.synth.mimic_writer import write_wfdb
from fedecg.data.synth.sites import make_sites
from fedecg.data.synth.waveform import FS, synthesize_record

FORMAT_SAMPLE = Path(ECG_DEMO_RECORD_LIST).parents[1] / "mimic-iv-ecg-1.0-format-sample"
HOSP_TABLES = ("patients", "admissions", "labevents", "d_labitems", "omr", "diagnoses_icd",
               "d_icd_diagnoses")
runner = CliRunner()


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("twin") / "twin"
    generate_twin(out, patients=60, sites=3, seed=7)
    return out


@pytest.fixture(scope="module")
def truth(twin: Path) -> pd.DataFrame:
    return pd.read_parquet(twin / TRUTH_FILE)


@pytest.fixture(scope="module")
def big_world():
    """A larger latent world (no waveforms) for statistical checks."""
    world = build_world(1500, make_sites(3, 11), 11)
    draws, values = lab_draws(np.random.default_rng(1), world)
    labs = build_labevents(np.random.default_rng(2), draws, values)
    return world, labs


def _header(path: Path) -> list[str]:
    return list(pd.read_csv(path, nrows=0).columns)


def test_tables_have_mimics_exact_columns(twin: Path, shared_data: Path):
    for name in ("record_list", "machine_measurements"):
        assert _header(twin / f"{name}.csv") == _header(FORMAT_SAMPLE / f"{name}.csv"), name
    for name in HOSP_TABLES:
        real = MIMIC_DEMO / "hosp" / f"{name}.csv.gz"
        assert _header(twin / "hosp" / f"{name}.csv.gz") == _header(real), name


def test_record_list_uses_v10_paths_and_8_digit_study_ids(twin: Path):
    records = pd.read_csv(twin / "record_list.csv")
    assert records["study_id"].astype(str).str.fullmatch(r"\d{8}").all()
    assert (records["file_name"] == records["study_id"]).all()
    expected = [f"files/p{str(s)[:4]}/p{s}/s{t}/{t}"
                for s, t in zip(records["subject_id"], records["study_id"], strict=True)]
    assert records["path"].tolist() == expected
    assert records["study_id"].is_unique
    assert pd.to_datetime(records["ecg_time"], format="%Y-%m-%d %H:%M:%S").notna().all()


def test_wfdb_headers_match_mimic_iv_ecg(twin: Path):
    records = pd.read_csv(twin / "record_list.csv").head(5)
    for row in records.itertuples():
        header = wfdb.rdheader(str(twin / row.path))
        assert (header.fs, header.sig_len, header.n_sig) == (500, 5000, 12)
        assert header.fmt == ["16"] * 12
        assert header.adc_gain == [200.0] * 12
        assert header.units == ["mV"] * 12
        assert header.sig_name == list(MIMIC_LEADS)
        stamp = pd.Timestamp.combine(header.base_date, header.base_time)
        assert stamp == pd.Timestamp(row.ecg_time)


def test_own_wfdb_writer_equals_wfdb_wrsamp(tmp_path: Path):
    rng = np.random.default_rng(0)
    sig = rng.normal(0, 0.8, (12, 5000))
    sig[3, 100:140] = np.nan
    write_wfdb(tmp_path / "ours", sig, FS, MIMIC_LEADS, pd.Timestamp("2180-07-23 08:44:00"))
    wfdb.wrsamp("theirs", fs=FS, units=["mV"] * 12, sig_name=list(MIMIC_LEADS),
                p_signal=sig.T, fmt=["16"] * 12, adc_gain=[200.0] * 12, baseline=[0] * 12,
                write_dir=str(tmp_path))
    ours = wfdb.rdrecord(str(tmp_path / "ours"), physical=False)
    theirs = wfdb.rdrecord(str(tmp_path / "theirs"), physical=False)
    np.testing.assert_array_equal(ours.d_signal, theirs.d_signal)
    assert ours.checksum == theirs.checksum
    assert ours.init_value == theirs.init_value
    back = wfdb.rdrecord(str(tmp_path / "ours")).p_signal
    assert np.isnan(back[100:140, 3]).all() and np.isnan(back).sum() == 40


def test_nan_runs_are_written_and_read_back_as_nan(twin: Path, truth: pd.DataFrame):
    records = pd.read_csv(twin / "record_list.csv").set_index("study_id")
    with_nan = truth[truth["nan_runs"] > 0]["study_id"]
    without = truth[truth["nan_runs"] == 0]["study_id"].head(5)
    assert len(with_nan) > 0
    for study in with_nan:
        assert np.isnan(wfdb.rdrecord(str(twin / records.loc[study, "path"])).p_signal).any()
    for study in without:
        assert not np.isnan(wfdb.rdrecord(str(twin / records.loc[study, "path"])).p_signal).any()


def test_limb_leads_obey_einthoven_and_goldberger(twin: Path):
    path = pd.read_csv(twin / "record_list.csv")["path"].iloc[0]
    sig = wfdb.rdrecord(str(twin / path)).p_signal.T
    lead = {name: sig[i] for i, name in enumerate(MIMIC_LEADS)}
    ok = np.isfinite(sig).all(axis=0)
    tol = 1.5 / 200  # quantization of up to three rounded leads
    assert np.abs((lead["II"] - lead["I"] - lead["III"])[ok]).max() <= tol
    assert np.abs((-(lead["I"] + lead["II"]) / 2 - lead["aVR"])[ok]).max() <= tol
    assert np.abs((lead["I"] - lead["II"] / 2 - lead["aVL"])[ok]).max() <= tol


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path):
    generate_twin(tmp_path / "a", patients=6, sites=2, seed=3)
    generate_twin(tmp_path / "b", patients=6, sites=2, seed=3, workers=2)
    generate_twin(tmp_path / "c", patients=6, sites=2, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_sites_differ_in_population_carts_and_filtering(twin: Path, truth: pd.DataFrame,
                                                        big_world):
    world, _ = big_world
    prevalence = world.ecgs.groupby("hospital")[["heart_failure", "ckd"]].mean()
    assert prevalence.loc[0, "heart_failure"] > prevalence.loc[1, "heart_failure"] + 0.05
    assert prevalence.loc[2, "ckd"] > prevalence.loc[1, "ckd"] + 0.05
    machine = pd.read_csv(twin / "machine_measurements.csv").merge(
        truth[["study_id", "hospital"]], on="study_id")
    carts = machine.groupby("hospital")["cart_id"].apply(set)
    assert all(not (carts[a] & carts[b]) for a in carts.index for b in carts.index if a < b)
    assert machine.groupby("hospital")["bandwidth"].nunique().eq(1).all()
    assert machine.groupby("hospital")["bandwidth"].first().is_unique
    records = pd.read_csv(twin / "record_list.csv").set_index("study_id")

    def high_band_power(hospital: int) -> float:
        studies = truth[(truth["hospital"] == hospital) & (truth["nan_runs"] == 0)]["study_id"]
        powers = []
        for study in studies.head(8):
            sig = wfdb.rdrecord(str(twin / records.loc[study, "path"])).p_signal[:, 1]
            freqs, power = sps.welch(sig - sig.mean(), fs=FS, nperseg=1024)
            powers.append(power[(freqs > 70) & (freqs < 150)].sum())
        return float(np.median(powers))

    # hospital 1 filters at 0.5-40 Hz, hospital 0 records 0.005-150 Hz
    assert high_band_power(1) < 0.1 * high_band_power(0)


def test_latent_labs_drive_lab_conditions_and_lab_tables(big_world):
    world, labs = big_world
    ecgs = world.ecgs
    hyper = ecgs["hyperkalemia"]
    assert hyper.sum() > 20
    assert ecgs.loc[hyper, "potassium"].min() > 5.5
    assert ecgs.loc[hyper, "potassium"].mean() > ecgs.loc[~hyper, "potassium"].mean() + 1.0
    k = labs[labs["itemid"] == 50971].assign(charttime=lambda f: pd.to_datetime(f["charttime"]))
    merged = pd.merge_asof(ecgs[hyper].sort_values("ecg_time"), k.sort_values("charttime"),
                           left_on="ecg_time", right_on="charttime", by="subject_id",
                           direction="nearest", tolerance=pd.Timedelta(hours=1)).dropna(
        subset=["valuenum"])
    assert len(merged) > 10 and (merged["valuenum"] > 5.1).mean() > 0.8
    # labs are dense: most ECGs have a panel lab within 24 h, about half within 1 h
    near = pd.merge_asof(ecgs.sort_values("ecg_time"),
                         labs.assign(charttime=pd.to_datetime(labs["charttime"]))
                         .sort_values("charttime")[["subject_id", "charttime"]],
                         left_on="ecg_time", right_on="charttime", by="subject_id",
                         direction="nearest")
    hours = (near["charttime"] - near["ecg_time"]).abs() / pd.Timedelta(hours=1)
    assert 0.75 < (hours <= 24).mean() < 0.97
    assert 0.3 < (hours <= 1).mean() < 0.7
    assert 0.35 < (~ecgs["admitted"]).mean() < 0.55


def test_lab_rows_are_consistent_with_panel_units_and_flags(twin: Path):
    labs = pd.read_csv(twin / "hosp" / "labevents.csv.gz")
    units = {i: lab.unit for lab in DEFAULT_LAB_PANEL for i in lab.itemids}
    assert set(labs["itemid"]) <= set(units)
    shown = labs[labs["itemid"] != 51237]
    assert (shown["valueuom"] == shown["itemid"].map(units)).all()
    outside = (labs["valuenum"] < labs["ref_range_lower"]) | (
        labs["valuenum"] > labs["ref_range_upper"])
    assert ((labs["flag"] == "abnormal") == outside).all()
    admissions = pd.read_csv(twin / "hosp" / "admissions.csv.gz")
    assert set(labs["hadm_id"].dropna().astype(int)) <= set(admissions["hadm_id"])


def test_diagnoses_match_labels_and_real_icd_titles(twin: Path, shared_data: Path):
    dx = pd.read_csv(twin / "hosp" / "diagnoses_icd.csv.gz", dtype={"icd_code": str})
    assert set(dx["icd_version"]) == {9, 10}
    titles = pd.read_csv(twin / "hosp" / "d_icd_diagnoses.csv.gz", dtype={"icd_code": str})
    real = pd.read_csv(MIMIC_DEMO / "hosp" / "d_icd_diagnoses.csv.gz", dtype={"icd_code": str})
    both = titles.merge(real, on=["icd_code", "icd_version"], suffixes=("", "_real"))
    assert len(both) == len(titles) and (both["long_title"] == both["long_title_real"]).all()
    assert set(zip(dx["icd_code"], dx["icd_version"], strict=True)) == set(
        zip(titles["icd_code"], titles["icd_version"], strict=True))
    matched = [any(label.matches(c, f"icd{v}") for label in DEFAULT_DIAGNOSIS_LABELS)
               for c, v in zip(dx["icd_code"], dx["icd_version"], strict=True)]
    assert 0 < np.mean(matched) < 1  # label codes plus unrelated filler


def test_coding_is_noisy_but_informative(big_world):
    world, _ = big_world
    admissions = admission_frame(np.random.default_rng(0), world)
    _, coded = diagnoses_table(np.random.default_rng(1), world, admissions)
    true = admission_truth(world).reindex(coded.index)
    sensitivity = (coded & true).sum().sum() / true.sum().sum()
    false_rate = (coded & ~true).sum().sum() / (~true).sum().sum()
    assert 0.5 < sensitivity < 0.9
    assert 0.0 < false_rate < 0.03
    assert list(coded.columns) == list(CONDITIONS)


def _rr_cv(sig: np.ndarray) -> float:
    lead = sig[1] - np.median(sig[1])
    peaks, _ = sps.find_peaks(lead, height=0.5 * np.percentile(lead, 99.5), distance=0.25 * FS)
    rr = np.diff(peaks)
    return float(rr.std() / rr.mean())


def test_af_is_visible_as_rr_irregularity_on_the_waveform(big_world):
    world, _ = big_world
    site = world.sites[0]
    cv = {}
    for rhythm in ("af", "sinus"):
        rows = world.ecgs[(world.ecgs["rhythm"] == rhythm) & (world.ecgs["bbb"] == "none")]
        cv[rhythm] = [_rr_cv(synthesize_record(row, site, np.random.default_rng(i),
                                               nan_runs=False)[0])
                      for i, row in enumerate(rows.head(12).to_dict("records"))]
    assert np.median(cv["af"]) > 3 * np.median(cv["sinus"])
    assert (world.ecgs.loc[world.ecgs["rhythm"] == "af", "atrial_fibrillation"]).all()


def test_subtle_effects_follow_latent_labs(big_world):
    world, _ = big_world
    e = world.ecgs
    assert np.corrcoef(e["potassium"], np.log(e["t_amp_mv"]))[0, 1] > 0.5
    assert np.corrcoef(e["calcium"], e["qtc_ms"])[0, 1] < -0.3
    assert np.corrcoef(e["hemoglobin"], e["hr_bpm"])[0, 1] < -0.1
    assert np.corrcoef(np.log(e["ntprobnp"]), e["qrs_scale"])[0, 1] < -0.1


def test_cli_writes_twin_and_refuses_to_overwrite(tmp_path: Path):
    out = tmp_path / "cli_twin"
    result = runner.invoke(app, ["synth", "--out", str(out), "--patients", "4", "--sites", "2"])
    assert result.exit_code == 0, result.output
    assert "ECGs of 4 patients" in result.output
    lines = result.output.splitlines()  # off a terminal: the phases, then the ECGs written
    assert lines[0] == "synth: 4 patients at 2 hospitals (generator version 2, seed 0)"
    assert lines[1].startswith("synth: hosp/ written (") and lines[1].endswith(" ECGs")
    assert any(line.startswith("synth: ") and "(100%)" in line for line in lines)
    assert (out / "README.txt").read_text().startswith("fedecg synthetic twin")
    again = runner.invoke(app, ["synth", "--out", str(out), "--patients", "4"])
    assert again.exit_code == 1 and "already holds a fedecg synthetic dataset" in again.output
    empty = runner.invoke(app, ["synth", "--out", str(tmp_path / "y"), "--patients", "0"])
    assert empty.exit_code == 1 and "patients=0" in empty.output
    lonely = runner.invoke(app, ["synth", "--out", str(tmp_path / "x"), "--record-list", "r.csv"])
    assert lonely.exit_code == 1 and "--clinical-from" in lonely.output


def test_clinical_from_keeps_real_tables_and_times(tmp_path: Path, shared_data: Path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["synth", "--clinical-from", str(MIMIC_DEMO), "--record-list",
                                 str(ECG_DEMO_RECORD_LIST), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "record_list.csv").read_bytes() == Path(ECG_DEMO_RECORD_LIST).read_bytes()
    for name in HOSP_TABLES:
        copied = out / "hosp" / f"{name}.csv.gz"
        assert copied.read_bytes() == (MIMIC_DEMO / "hosp" / f"{name}.csv.gz").read_bytes()
    records = pd.read_csv(ECG_DEMO_RECORD_LIST)
    assert len(records) == 659
    truth = pd.read_parquet(out / TRUTH_FILE)
    assert truth["study_id"].tolist() == records["study_id"].tolist()
    assert (truth["ecg_time"] == pd.to_datetime(records["ecg_time"])).all()
    for row in records.itertuples():
        header = wfdb.rdheader(str(out / row.path))
        assert (header.fs, header.sig_len, header.sig_name) == (500, 5000, list(MIMIC_LEADS))
        assert pd.Timestamp.combine(header.base_date, header.base_time) == pd.Timestamp(
            row.ecg_time)
    sample = records.sample(10, random_state=0)
    for path in sample["path"]:
        assert wfdb.rdrecord(str(out / path)).p_signal.shape == (5000, 12)
    # conditioning: real codes of the holding admission and real labs set the conditions
    held = truth[truth["in_admission"]]
    for name in CONDITIONS:
        assert (held[f"cond_{name}"] | ~held[f"coded_{name}"].astype(bool)).all(), name
    assert held["coded_atrial_fibrillation"].any() and held["coded_hypertension"].any()
    high_k = truth["real_potassium"] & (truth["latent_potassium"] > 5.5)
    assert high_k.sum() > 5 and truth.loc[high_k, "cond_hyperkalemia"].all()
    # real potassium drives the synthetic T wave
    real_k = truth[truth["real_potassium"]]
    assert np.corrcoef(real_k["latent_potassium"], np.log(real_k["t_amp_mv"]))[0, 1] > 0.4
    machine = pd.read_csv(out / "machine_measurements.csv")
    assert machine["study_id"].tolist() == records["study_id"].tolist()
    with gzip.open(out / "hosp" / "labevents.csv.gz", "rt") as handle:
        assert re.match(r"labevent_id,subject_id", handle.readline())
