"""Writing the MIMIC-IV-ECG side: WFDB records, ``record_list.csv``, ``machine_measurements.csv``.

WFDB files are written directly (format 16, gain 200/mV, baseline 0, NaN as -32768, the value
WFDB reserves for missing samples) because ``wfdb.wrsamp`` spends ~30 ms per record on header
bookkeeping; tests check that ``wfdb.rdrecord`` reads them back exactly.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

ADC_GAIN = 200.0
WFDB_NAN = -32768
MISSING_MEASURE = 29999
CSV_CHUNK_ROWS = 100_000
RECORD_LIST_COLUMNS = ["subject_id", "study_id", "file_name", "ecg_time", "path"]
MACHINE_COLUMNS = (["subject_id", "study_id", "cart_id", "ecg_time"]
                   + [f"report_{i}" for i in range(18)]
                   + ["bandwidth", "filtering", "rr_interval", "p_onset", "p_end", "qrs_onset",
                      "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis"])


def to_digital(signal_mv: np.ndarray) -> np.ndarray:
    """mV → int16 ADC units ([T, leads]) with NaN as WFDB's missing value."""
    scaled = np.clip(np.round(signal_mv.T * ADC_GAIN), -32767, 32767)
    return np.where(np.isnan(scaled), WFDB_NAN, scaled).astype("<i2")


def write_wfdb(base: Path, signal_mv: np.ndarray, fs: int, leads: Sequence[str],
               when: datetime) -> None:
    """Write ``base``.hea and ``base``.dat (12 x T mV signal) as a MIMIC-IV-ECG record does."""
    digital = to_digital(signal_mv)
    name = base.name
    checksums = digital.astype(np.int64).sum(axis=0) % 65536
    lines = [f"{name} {len(leads)} {fs} {digital.shape[0]} {when:%H:%M:%S} {when:%d/%m/%Y}"]
    lines += [f"{name}.dat 16 {ADC_GAIN:g}(0)/mV 16 0 {int(digital[0, i])} {int(checksums[i])} "
              f"0 {lead}" for i, lead in enumerate(leads)]
    base.parent.mkdir(parents=True, exist_ok=True)
    base.with_suffix(".dat").write_bytes(digital.tobytes())
    base.with_suffix(".hea").write_text("\n".join(lines) + "\n")


def v10_path(subject_id: int, study_id: int) -> str:
    """MIMIC-IV-ECG v1.0 relative record path: ``files/pNNNN/pSUBJECT/sSTUDY/STUDY``."""
    return f"files/p{str(subject_id)[:4]}/p{subject_id}/s{study_id}/{study_id}"


def _binary_writer(path: Path) -> BinaryIO:
    if path.suffix == ".gz":
        return gzip.GzipFile(path, "wb", mtime=0)  # type: ignore[return-value]
    return path.open("wb")


def write_csv(frame: pd.DataFrame, path: Path) -> int:
    """CSV (gzip when the name ends in .gz, with a fixed header time so bytes are reproducible),
    formatted ``CSV_CHUNK_ROWS`` rows at a time so no whole-table text is held; returns rows."""
    starts = range(0, max(len(frame), 1), CSV_CHUNK_ROWS)
    return write_csv_parts((frame.iloc[i:i + CSV_CHUNK_ROWS] for i in starts), path)


def write_csv_parts(parts: Iterable[pd.DataFrame], path: Path) -> int:
    """One CSV from frames with the same columns, written in turn (the header once): the bytes
    equal those of the frames' concatenation written at once. Returns the rows written."""
    rows = 0
    with _binary_writer(path) as handle:
        for i, part in enumerate(parts):
            handle.write(part.to_csv(index=False, header=i == 0, lineterminator="\n")
                         .encode("utf-8"))
            rows += len(part)
    return rows


def _reports(m: pd.DataFrame) -> list[list[str]]:
    """Machine statements from the measured morphology (rhythm first, summary last)."""
    out = []
    for row in m.itertuples(index=False):
        lines = []
        if row.rhythm == "af":
            lines.append("Atrial fibrillation")
        elif row.hr_bpm > 100:
            lines.append("Sinus tachycardia")
        elif row.hr_bpm < 60:
            lines.append("Sinus bradycardia")
        else:
            lines.append("Sinus rhythm")
        if row.pr_ms > 210 and row.rhythm != "af":
            lines.append("1st degree A-V block")
        if row.bbb != "none":
            lines.append({"rbbb": "Right bundle branch block",
                          "lbbb": "Left bundle branch block"}[row.bbb])
        if row.axis_deg < -30:
            lines.append("Left axis deviation")
        if row.st_mv > 0:
            lines.append(f"{row.st_territory.capitalize()} ST elevation - consider acute infarct")
        elif row.st_mv < 0:
            lines.append(f"{row.st_territory.capitalize()} ST depression - possible ischemia")
        if row.q_territory != "none":
            lines.append(f"{row.q_territory.capitalize()} infarct - age undetermined")
        if row.qrs_scale < 0.6:
            lines.append("Low QRS voltages in limb leads")
        if row.qtc_ms > 480:
            lines.append("Prolonged QT interval")
        lines.append("Normal ECG" if len(lines) == 1 and lines[0] == "Sinus rhythm"
                     else "Abnormal ECG")
        out.append(lines)
    return out


def machine_measurements(ecgs: pd.DataFrame, bandwidth: list[str],
                         filtering: list[str]) -> pd.DataFrame:
    """``machine_measurements.csv`` rows: reports and interval/axis measurements per ECG."""
    af = (ecgs["rhythm"] == "af").to_numpy()
    p_onset = np.full(len(ecgs), 40)
    qrs_onset = p_onset + np.round(ecgs["pr_ms"].to_numpy()).astype(int)
    frame = pd.DataFrame({
        "subject_id": ecgs["subject_id"], "study_id": ecgs["study_id"],
        "cart_id": ecgs["cart_id"], "ecg_time": ecgs["ecg_time_text"]})
    reports = _reports(ecgs)
    for i in range(18):
        frame[f"report_{i}"] = [r[i] if i < len(r) else None for r in reports]
    frame["bandwidth"] = bandwidth
    frame["filtering"] = [f or None for f in filtering]
    frame["rr_interval"] = np.round(60000.0 / ecgs["hr_bpm"].to_numpy()).astype(int)
    frame["p_onset"] = np.where(af, MISSING_MEASURE, p_onset)
    frame["p_end"] = np.where(af, MISSING_MEASURE, p_onset + 100)
    frame["qrs_onset"] = np.where(af, 170, qrs_onset)
    qrs_on = frame["qrs_onset"].to_numpy()
    frame["qrs_end"] = qrs_on + np.round(ecgs["qrs_ms"].to_numpy()).astype(int)
    frame["t_end"] = qrs_on + np.round(ecgs["qt_ms"].to_numpy()).astype(int)
    frame["p_axis"] = np.where(af, MISSING_MEASURE, 55)
    frame["qrs_axis"] = np.round(ecgs["axis_deg"].to_numpy()).astype(int)
    frame["t_axis"] = np.round(ecgs["axis_deg"].to_numpy() - 11.0).astype(int)
    return frame[MACHINE_COLUMNS]
