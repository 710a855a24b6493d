"""The typed WFDB reader (real PTB-XL and Chapman records, bad records) and preprocessing."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import wfdb
from builders.raw_sites import fixture_signal, lead_offset, write_record
from conftest import SHARED_DATA, WFDB_SAMPLES
from scipy.signal import resample_poly

from fedecg.data.leads import CANONICAL_LEADS, MIMIC_LEADS
from fedecg.data.waveform import EcgRecord, interpolate_nan, preprocess, read_ecg, resample
from fedecg.errors import RecordError

PTBXL = WFDB_SAMPLES / "ptb-xl" / "records100" / "00000" / "00001_lr"
CHAPMAN = WFDB_SAMPLES / "chapman-shaoxing" / "JS00001"


def _wfdb_by_name(path: Path) -> np.ndarray:
    """wfdb's own reading, reordered by (case-insensitive) lead name into canonical order."""
    record = wfdb.rdrecord(str(path))
    names = [name.lower() for name in record.sig_name]
    return np.stack([record.p_signal[:, names.index(lead.lower())] for lead in CANONICAL_LEADS])


@pytest.mark.parametrize(("path", "fs", "samples"), [(PTBXL, 100, 1000), (CHAPMAN, 500, 5000)])
def test_real_records_match_wfdb_by_lead_name(shared_data: Path, path: Path, fs: float,
                                              samples: int) -> None:
    record = read_ecg(path)
    assert record.fs == fs and record.signal.shape == (12, samples)
    np.testing.assert_allclose(record.signal, _wfdb_by_name(path), atol=1e-6)


def test_ptbxl_upper_case_names_and_avl_avf_order(shared_data: Path) -> None:
    raw = wfdb.rdrecord(str(PTBXL))
    assert raw.sig_name[3:6] == ["AVR", "AVL", "AVF"]
    signal = read_ecg(PTBXL).signal
    for canonical, source in (("aVR", 3), ("aVL", 4), ("aVF", 5)):
        np.testing.assert_allclose(signal[CANONICAL_LEADS.index(canonical)],
                                   raw.p_signal[:, source], atol=1e-6)


def test_mimic_order_and_microvolts_are_mapped(tmp_path: Path) -> None:
    base = write_record(tmp_path / "r", 1000 * fixture_signal(500, 2, list(MIMIC_LEADS)), 500,
                        list(MIMIC_LEADS), units="uV", gain=1.0)
    means = read_ecg(base).signal.mean(axis=1)
    np.testing.assert_allclose(means, [lead_offset(n) for n in CANONICAL_LEADS], atol=2e-3)


def _copy(src: Path, dst: Path) -> Path:
    for ext in (".hea", ".dat"):
        shutil.copy(src.with_name(src.name + ext), dst.with_name(dst.name + ext))
    text = dst.with_name(dst.name + ".hea").read_text().replace(src.name, dst.name)
    dst.with_name(dst.name + ".hea").write_text(text)
    return dst


def _edit_header(base: Path, old: str, new: str) -> None:
    hea = base.with_name(base.name + ".hea")
    hea.write_text(hea.read_text().replace(old, new))


def test_header_without_rate_is_rejected(tmp_path: Path, shared_data: Path) -> None:
    base = _copy(PTBXL, tmp_path / "r")
    _edit_header(base, "r 12 100 1000", "r 12")
    assert wfdb.rdheader(str(base)).fs == 250  # what we guard against
    with pytest.raises(RecordError, match=r"r\.hea: .*no sampling rate.*250 Hz"):
        read_ecg(base)


@pytest.mark.parametrize("keep_bytes", [10_000, 10_001, 24 * 500])  # odd: a half sample
def test_truncated_dat_is_rejected(tmp_path: Path, shared_data: Path, keep_bytes: int) -> None:
    base = _copy(PTBXL, tmp_path / "r")
    dat = base.with_name("r.dat")
    dat.write_bytes(dat.read_bytes()[:keep_bytes])
    with pytest.raises(RecordError, match=r"r\.dat: truncated or corrupt"):
        read_ecg(base)


def test_corrupt_mat_is_rejected_naming_the_path(tmp_path: Path, shared_data: Path) -> None:
    for ext in (".hea", ".mat"):
        shutil.copy(CHAPMAN.with_name(CHAPMAN.name + ext), tmp_path / f"JS00001{ext}")
    (tmp_path / "JS00001.mat").write_bytes(b"not a mat file")
    with pytest.raises(RecordError, match=r"JS00001: unreadable by wfdb"):
        read_ecg(tmp_path / "JS00001")


def test_missing_files_are_named(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(RecordError, match=r"nothing\.hea: header file not found"):
        read_ecg(tmp_path / "nothing")
    base = _copy(PTBXL, tmp_path / "r")
    base.with_name("r.dat").unlink()
    with pytest.raises(RecordError, match=r"r\.dat: signal file not found"):
        read_ecg(base)


def test_missing_and_unknown_leads_are_named(tmp_path: Path) -> None:
    names = [*CANONICAL_LEADS[:11], "X7"]
    base = write_record(tmp_path / "r", fixture_signal(100, 1, list(CANONICAL_LEADS)), 100, names)
    with pytest.raises(RecordError, match=r"missing lead\(s\) \['V6'\]; unknown .* \['X7'\]"):
        read_ecg(base)
    eleven = write_record(tmp_path / "e", fixture_signal(100, 1, list(CANONICAL_LEADS[:11])), 100,
                          list(CANONICAL_LEADS[:11]))
    with pytest.raises(RecordError, match=r"e: missing lead\(s\) \['V6'\]"):
        read_ecg(eleven)


def test_all_nan_lead_and_bad_units_are_rejected(tmp_path: Path) -> None:
    signal = fixture_signal(100, 1, list(CANONICAL_LEADS))
    signal[:, 4] = np.nan
    base = write_record(tmp_path / "r", signal, 100, list(CANONICAL_LEADS))
    with pytest.raises(RecordError, match=r"lead\(s\) \['aVL'\] hold no valid sample"):
        read_ecg(base)
    volts = write_record(tmp_path / "v", fixture_signal(100, 1, list(CANONICAL_LEADS)), 100,
                         list(CANONICAL_LEADS), units="V")
    with pytest.raises(RecordError, match=r"units 'V'; expected mV or uV"):
        read_ecg(volts)


def test_nan_runs_are_interpolated_linearly() -> None:
    signal = np.array([[0.0, np.nan, np.nan, 3.0, np.nan], [1.0, 1.0, 1.0, 1.0, 1.0]])
    filled = interpolate_nan(signal)
    np.testing.assert_allclose(filled[0], [0.0, 1.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(filled[1], signal[1])


def test_preprocess_resamples_clips_and_fits_length(tmp_path: Path) -> None:
    t = np.arange(5000) / 500
    lead = np.sin(2 * np.pi * 2 * t)  # 2 Hz, 1 mV
    signal = np.tile(lead, (12, 1)).astype(np.float32)
    signal[1] *= 5  # 5 mV: clipped
    signal[2, 1000:1010] = np.nan
    out = preprocess(EcgRecord(signal, 500.0, tmp_path), 100.0, 3.0, 1000)
    assert out.shape == (12, 1000) and out.dtype == np.float32
    expected = np.sin(2 * np.pi * 2 * np.arange(1000) / 100)
    np.testing.assert_allclose(out[0, 50:950], expected[50:950], atol=0.01)
    assert np.abs(out).max() <= 3.0 and out[1].max() == pytest.approx(3.0)
    assert not np.isnan(out).any()
    padded = preprocess(EcgRecord(signal[:, :2000], 500.0, tmp_path), 100.0, 3.0, 1000)
    assert np.all(padded[:, 400:] == 0) and np.abs(padded[0, 50:350]).max() > 0.9
    same = preprocess(EcgRecord(signal[:, :1000], 100.0, tmp_path), 100.0, 3.0, 500)
    np.testing.assert_array_equal(same[0], signal[0, :500])


@pytest.mark.parametrize(("fs_in", "fs_out", "up", "down"), [(500, 100, 1, 5), (360, 100, 5, 18)])
def test_resampling_equals_scipy_default_resample_poly(tmp_path: Path, fs_in: float,
                                                       fs_out: float, up: int, down: int) -> None:
    signal = np.random.default_rng(0).normal(0, 0.5, (12, int(fs_in * 10))).astype(np.float32)
    out = preprocess(EcgRecord(signal, fs_in, tmp_path), fs_out, 3.0, int(fs_out * 10))
    expected = np.clip(resample_poly(signal, up, down, axis=-1), -3.0, 3.0)
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(("up", "down"), [(1, 5), (5, 18), (2, 5), (100, 257), (1, 10), (5, 2),
                                          (3, 1)])
@pytest.mark.parametrize("n_in", [1, 7, 999, 5000])
def test_block_resampling_equals_resample_poly(up: int, down: int, n_in: int) -> None:
    signal = np.random.default_rng(n_in).normal(0, 1, (12, n_in)).astype(np.float32)
    expected = resample_poly(signal.astype(np.float64), up, down, axis=-1)  # zero padding
    out = resample(signal, up, down)
    assert out.shape == expected.shape and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def _scipy_preprocess(record: EcgRecord, fs_out: float, clip_mv: float,
                      n_samples: int) -> np.ndarray:
    """``preprocess`` as it was written on scipy's ``resample_poly`` (before block products)."""
    ratio = Fraction(int(fs_out), int(record.fs))
    signal = interpolate_nan(record.signal).astype(np.float64)
    signal = resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)
    signal = np.clip(signal.astype(np.float32), -clip_mv, clip_mv)
    out = np.zeros((12, n_samples), dtype=np.float32)
    out[:, :min(n_samples, signal.shape[-1])] = signal[:, :n_samples]
    return out


def test_stored_float16_equals_the_scipy_path_byte_for_byte(tmp_path: Path,
                                                            shared_data: Path) -> None:
    """Real records (wfdb's path) and format-16 records at other rates with NaN runs (numpy's
    path): the float16 a store holds is the very bytes that scipy's resample_poly gave."""
    records = [read_ecg(path.with_suffix("")) for path in
               sorted((SHARED_DATA / "physionet-challenge-2021-sample").glob("*.hea"))[:6]]
    rng = np.random.default_rng(0)
    for fs in (250, 360, 1000):
        signal = fixture_signal(fs, 10, list(MIMIC_LEADS)) + rng.normal(0, 0.2, (fs * 10, 12))
        signal[:7, 2], signal[fs:fs + 40, 5] = np.nan, np.nan
        records.append(read_ecg(write_record(tmp_path / f"r{fs}", signal, fs, list(MIMIC_LEADS))))
    for record in records:
        ours = preprocess(record, 100.0, 3.0, 1000).astype(np.float16)
        theirs = _scipy_preprocess(record, 100.0, 3.0, 1000).astype(np.float16)
        assert ours.tobytes() == theirs.tobytes(), record.path


def test_numpy_read_equals_wfdb_with_nan_runs_microvolts_and_mimic_order(tmp_path: Path) -> None:
    signal = fixture_signal(500, 2, list(MIMIC_LEADS)) * 1000  # µV
    signal[:5, 0], signal[100:130, 7] = np.nan, np.nan  # a NaN first sample is no dead lead
    base = write_record(tmp_path / "r", signal, 500, list(MIMIC_LEADS), units="uV", gain=0.2)
    np.testing.assert_allclose(read_ecg(base).signal, _wfdb_by_name(base) / 1000, atol=1e-6)
    assert np.isnan(read_ecg(base).signal).sum() == 35
