"""Write the example site's 12 synthetic WFDB records (``ecg/*.hea`` + ``.dat``).

Run from anywhere: ``python client/example_site/write_records.py``. The records are committed;
this script documents how they were made and rewrites them identically (seeded). Each is 10 s
at 100 Hz, 12 leads in µV-resolution mV, with a Gaussian P-QRS-T beat per lead and a rhythm
that matches its diagnosis: sinus rhythm, sinus tachycardia, or atrial fibrillation (irregular
RR, no P wave). Records e09-e12 carry their statement as SNOMED CT codes on a ``# Dx:`` header
line, as the PhysioNet Challenge databases do; e01-e08 get theirs from ``diagnoses.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import wfdb

FS = 100
SECONDS = 10
LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
GAIN = np.array([0.6, 1.0, 0.4, -0.8, 0.3, 0.7, -0.5, 0.4, 0.9, 1.2, 1.1, 0.8])
RHYTHMS = {"sinus": ("426783006", 70), "tachy": ("427084000", 115), "afib": ("164889003", 95)}
# (record, rhythm, age, sex); E01-E08 belong to encounters, E09-E12 carry header statements only
RECORDS = [("e01", "sinus", 54, "Male"), ("e02", "afib", 77, "Female"),
           ("e03", "tachy", 63, "Male"), ("e04", "sinus", 45, "Female"),
           ("e05", "afib", 81, "Male"), ("e06", "sinus", 38, "Male"),
           ("e07", "tachy", 70, "Female"), ("e08", "afib", 66, "Female"),
           ("e09", "sinus", 59, "Male"), ("e10", "afib", 72, "Male"),
           ("e11", "tachy", 49, "Female"), ("e12", "sinus", 61, "Female")]


def _wave(t: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - center) / width) ** 2)


def beat_signal(rhythm: str, rng: np.random.Generator) -> np.ndarray:
    """``[samples, 12]`` mV: P (not in AF), QRS and T waves at the rhythm's beat times."""
    t = np.arange(FS * SECONDS) / FS
    rate = RHYTHMS[rhythm][1]
    rr = 60 / rate * (rng.uniform(0.6, 1.4, 40) if rhythm == "afib" else np.full(40, 1.0))
    beats = np.cumsum(rr) - rr[0] + rng.uniform(0.1, 0.5)
    lead = np.zeros_like(t)
    for onset in beats[beats < SECONDS]:
        if rhythm != "afib":
            lead += 0.12 * _wave(t, onset - 0.16, 0.025)
        lead += 1.0 * _wave(t, onset, 0.012) - 0.15 * _wave(t, onset + 0.03, 0.012)
        lead += 0.25 * _wave(t, onset + 0.3, 0.05)
    if rhythm == "afib":
        lead += 0.04 * np.sin(2 * np.pi * 6.3 * t + rng.uniform(0, 6))
    noise = rng.normal(0, 0.01, (len(t), len(LEADS)))
    return lead[:, None] * GAIN[None, :] + noise


def main() -> None:
    folder = Path(__file__).resolve().parent / "ecg"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(7)
    for name, rhythm, age, sex in RECORDS:
        wfdb.wrsamp(name, fs=FS, units=["mV"] * len(LEADS), sig_name=LEADS,
                    p_signal=beat_signal(rhythm, rng), fmt=["16"] * len(LEADS),
                    adc_gain=[1000.0] * len(LEADS), baseline=[0] * len(LEADS),
                    write_dir=str(folder),
                    comments=[f"Age: {age}", f"Sex: {sex}"]
                    + ([f"Dx: {RHYTHMS[rhythm][0]}"] if name >= "e09" else []))


if __name__ == "__main__":
    main()
