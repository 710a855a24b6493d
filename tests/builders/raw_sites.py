"""Tiny handmade sites for the data tests: a MIMIC layout and a generic layout.

The clinical rows are chosen so that every linked value can be computed by hand (see the
comments); waveforms are written with ``wfdb.wrsamp`` at test time so that no binary file is
kept in the repository. Each lead carries its own DC offset (0.1 mV per canonical index, plus
0.05) on top of a 1 Hz sine of 0.5 mV, so a test can tell the leads apart after reordering.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb

from fedecg.data.leads import CANONICAL_LEADS, MIMIC_LEADS

GENERIC_SITE = Path(__file__).resolve().parents[1] / "fixtures" / "generic_site"


def lead_offset(name: str) -> float:
    """The DC offset (mV) that marks lead ``name`` in the fixture records."""
    return 0.1 * CANONICAL_LEADS.index(name) + 0.05


def fixture_signal(fs: float, seconds: float, names: list[str]) -> np.ndarray:
    """``[T, len(names)]`` mV: a 1 Hz sine of 0.5 mV plus each lead's offset."""
    t = np.arange(round(fs * seconds)) / fs
    return np.stack([0.5 * np.sin(2 * np.pi * t) + lead_offset(n) for n in names], axis=1)


def write_record(base: Path, signal: np.ndarray, fs: float, names: list[str],
                 units: str = "mV", gain: float = 200.0) -> Path:
    """Write a format-16 WFDB record ``base`` (.hea + .dat); NaN becomes the invalid sample."""
    base.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(base.name, fs=fs, units=[units] * len(names), sig_name=list(names),
                p_signal=signal, fmt=["16"] * len(names), adc_gain=[gain] * len(names),
                baseline=[0] * len(names), write_dir=str(base.parent))
    return base


# subject 1 (M, 60 in 2150): ECG 40000001 at 2150-03-01 10:00 lies in admission 20000001
#   (I4891 -> atrial_fibrillation, ICD-9 4280 -> heart_failure); potassium 6.0 at 09:00
#   (nearest, in both windows; 5.1 upper range -> potassium_high), potassium 4.0 at 20:00;
#   sodium 130 at 22:00 (12 h: a feature, but outside the 6 h label window); omr weight
#   176 lb (79.832 kg) and height 70 in (177.8 cm) on 2150-02-20, blood pressure 130/85
#   on 2150-03-01 (midday, 2 h away).
# subject 1: ECG 40000002 at 2150-06-01 08:00: no stay, no lab within 24 h.
# subject 2 (F, 45 in 2160): ECG 40000003 at 2160-01-10 12:00 after admission 20000002 ended;
#   hemoglobin 10 at 13:00 without a range but flagged abnormal -> hemoglobin_low.
# subject 3 (M, 70 in 2170): ECG 40000004 at 2170-05-05 05:00, no labs.
RECORD_LIST = [
    (10000001, 40000001, "2150-03-01 10:00:00"),
    (10000001, 40000002, "2150-06-01 08:00:00"),
    (10000002, 40000003, "2160-01-10 12:00:00"),
    (10000003, 40000004, "2170-05-05 05:00:00"),
]
HOSP = {
    "patients": "subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod\n"
                "10000001,M,60,2150,2008 - 2010,\n10000002,F,45,2160,2011 - 2013,\n"
                "10000003,M,70,2170,2014 - 2016,\n",
    "admissions": "subject_id,hadm_id,admittime,dischtime\n"
                  "10000001,20000001,2150-02-28 00:00:00,2150-03-05 12:00:00\n"
                  "10000002,20000002,2160-01-01 00:00:00,2160-01-05 00:00:00\n",
    "diagnoses_icd": "subject_id,hadm_id,seq_num,icd_code,icd_version\n"
                     "10000001,20000001,1,I4891,10\n10000001,20000001,2,4280,9\n"
                     "10000002,20000002,1,E875,10\n",
    "labevents": "labevent_id,subject_id,hadm_id,specimen_id,itemid,charttime,value,valuenum,"
                 "valueuom,ref_range_lower,ref_range_upper,flag\n"
                 "1,10000001,20000001,1,50971,2150-03-01 09:00:00,6.0,6.0,mEq/L,3.3,5.1,abnormal\n"
                 "2,10000001,20000001,2,50971,2150-03-01 20:00:00,4.0,4.0,mEq/L,3.3,5.1,\n"
                 "3,10000001,20000001,3,50983,2150-03-01 22:00:00,130,130,mEq/L,133,145,abnormal\n"
                 "4,10000001,,4,50000,2150-03-01 10:00:00,7,7,x,,,\n"
                 "5,10000002,20000002,5,51222,2160-01-10 13:00:00,10,10,g/dL,,,abnormal\n",
    "omr": "subject_id,chartdate,seq_num,result_name,result_value\n"
           "10000001,2150-02-20,1,Weight (Lbs),176\n10000001,2150-02-20,1,Height (Inches),70\n"
           "10000001,2150-03-01,1,Blood Pressure,130/85\n10000001,2150-03-01,1,eGFR,>60\n",
}


def record_path(subject: int, study: int, layout: str) -> str:
    """A MIMIC-IV-ECG record path: ``v1`` (files/pNNNN/pSUBJECT/...) or ``demo``."""
    group = f"p{str(subject)[:4]}/" if layout == "v1" else ""
    return f"files/{group}p{subject}/s{study}/{study}"


def make_mimic_site(root: Path, layout: str = "v1", gz: bool = False) -> tuple[Path, Path]:
    """Write the handmade MIMIC site under ``root``; return ``(ecg_root, mimic_root)``."""
    ecg_root, mimic_root = root / "ecg", root / "mimic"
    rows = []
    for subject, study, time in RECORD_LIST:
        path = record_path(subject, study, layout)
        write_record(ecg_root / path, fixture_signal(500, 10, list(MIMIC_LEADS)), 500,
                     list(MIMIC_LEADS))
        rows.append({"subject_id": subject, "study_id": study, "file_name": study,
                     "ecg_time": time, "path": path})
    pd.DataFrame(rows).to_csv(ecg_root / "record_list.csv", index=False)
    pd.DataFrame({"subject_id": [r[0] for r in RECORD_LIST], "study_id": [r[1] for r in
                  RECORD_LIST], "cart_id": [1, 1, 2, 2], "bandwidth": "0.005-150 Hz",
                  "filtering": "60 Hz notch Baseline filter"}).to_csv(
        ecg_root / "machine_measurements.csv", index=False)
    (mimic_root / "hosp").mkdir(parents=True)
    for name, text in HOSP.items():
        write_table(mimic_root / "hosp", name, text, gz)
    return ecg_root, mimic_root


def write_table(folder: Path, name: str, text: str, gz: bool = False) -> Path:
    """Write ``text`` as ``folder/name.csv`` (or ``.csv.gz``), replacing either."""
    for ext in (".csv", ".csv.gz"):
        (folder / f"{name}{ext}").unlink(missing_ok=True)
    path = folder / f"{name}.csv{'.gz' if gz else ''}"
    pd.read_csv(pd.io.common.StringIO(text), dtype=str, keep_default_na=False).to_csv(
        path, index=False)
    return path


def make_generic_site(root: Path) -> Path:
    """Copy the handmade generic site (tests/fixtures/generic_site) and write its records.

    Record ``ecg/e1`` is 250 Hz with leads in canonical order and upper-case names; ``ecg/e2``
    is 500 Hz in MIMIC order, in µV; ``ecg/e3`` is 100 Hz, 8 s, lower-case names.
    """
    site = root / "site"
    shutil.copytree(GENERIC_SITE, site)
    upper = [n.upper() for n in CANONICAL_LEADS]
    write_record(site / "ecg" / "e1", fixture_signal(250, 10, list(CANONICAL_LEADS)), 250, upper)
    write_record(site / "ecg" / "e2", 1000 * fixture_signal(500, 10, list(MIMIC_LEADS)), 500,
                 list(MIMIC_LEADS), units="uV", gain=1.0)
    write_record(site / "ecg" / "e3", fixture_signal(100, 8, list(CANONICAL_LEADS)), 100,
                 [n.lower() for n in CANONICAL_LEADS])
    return site


CHALLENGE_SOURCES = {"E": "georgia", "H": "ptb-xl", "J": "chapman-ningbo"}


def make_challenge_site(root: Path, records: Path) -> Path:
    """A generic site over the 50 real Challenge 2021 records in ``records`` (not copied).

    As a hospital would convert them: ``ecgs.csv`` (no times; ``age`` and the source database
    from the header), ``patients.csv`` (sex, no birth date), no labs, no vitals, an empty
    ``diagnoses.csv``, and a ``site.yaml`` declaring the ECG label set and SNOMED codes in the
    headers' ``# Dx:`` lines.
    """
    site = root / "challenge"
    site.mkdir(parents=True)
    ecgs, patients = [], []
    for header in sorted(records.glob("*.hea")):
        comments = dict(line.lstrip("# ").split(":", 1) for line in header.read_text()
                        .splitlines() if line.startswith("#") and ":" in line)
        name = header.stem
        age = comments.get("Age", "").strip()
        ecgs.append({"ecg_id": name, "patient_id": name, "record_path": str(records / name),
                     "age": "" if age in ("NaN", "Unknown") else age,
                     "source": CHALLENGE_SOURCES[name[0]]})
        patients.append({"patient_id": name, "sex": comments.get("Sex", "").strip(),
                         "birth_date": ""})
    pd.DataFrame(ecgs).to_csv(site / "ecgs.csv", index=False)
    pd.DataFrame(patients).to_csv(site / "patients.csv", index=False)
    (site / "diagnoses.csv").write_text("patient_id,ecg_id,code,code_system\n")
    (site / "site.yaml").write_text("diagnosis_labels: ecg\nheader_diagnoses: snomed\n")
    return site
