"""Tiny hand-made site stores for the training tests (written with the real ``StoreWriter``).

Each record's signal is a sinusoid on all 12 leads plus noise: its amplitude jumps when
potassium is high (so ``potassium_high`` is visible in the ECG) and its frequency jumps for
atrial fibrillation. ``heart_failure`` follows hemoglobin, which the ECG does not show.
Some labels are unknown (NaN).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.data.store import StoreManifest, StoreWriter, label_prevalence
from fedecg.run_folder import RunFolder

DX = ("atrial_fibrillation", "heart_failure")
LABS = ("potassium", "hemoglobin")
FEATURES = ("age", "lab_potassium", "lab_hemoglobin")
TINY_CONFIG = [
    "encoder.stem_width=8", "encoder.widths=[8,16]", "encoder.blocks=[1,1]",
    "encoder.kernel_size=5", "clinical.hidden=16", "clinical.embedding_dim=16",
    "pretrain.projection_dim=16", "crop_samples=100", "batch_size=16", "eval.bootstrap=20",
    "eval.crops=2", "pretrain.epochs=1", "lab.epochs=1", "diagnosis.epochs=1", "threads=1",
]


def make_store(path: Path, n: int = 120, n_samples: int = 200, fs: float = 100.0,
               seed: int = 0, site: str = "site-a", lab_names: tuple[str, ...] = LABS) -> Path:
    """Write a separable tiny store of ``n`` records at ``path`` and return ``path``."""
    rng = np.random.default_rng(seed)
    potassium = rng.normal(4.5, 0.9, n)
    hemoglobin = rng.normal(12.5, 1.5, n)
    afib = rng.random(n) < 0.35
    t = np.arange(n_samples) / fs
    panel = [lab for lab in DEFAULT_LAB_PANEL if lab.name in lab_names]
    cohort = pd.DataFrame({"subject_id": np.arange(n), "study_id": 1000 + np.arange(n),
                           "age": rng.normal(60, 12, n), "lab_potassium": potassium,
                           "lab_hemoglobin": hemoglobin})
    cohort.loc[rng.random(n) < 0.1, "lab_hemoglobin"] = np.nan
    for lab in panel:
        values = cohort[f"lab_{lab.name}"].to_numpy()
        for direction in lab.directions:
            hit = values > lab.ref_high if direction == "high" else values < lab.ref_low
            cohort[f"abn_{lab.name}_{direction}"] = np.where(np.isnan(values), np.nan,
                                                             hit.astype(float))
    cohort["dx_atrial_fibrillation"] = afib.astype(float)
    cohort["dx_heart_failure"] = (hemoglobin < 12.0).astype(float)
    cohort.loc[rng.random(n) < 0.15, ["dx_atrial_fibrillation", "dx_heart_failure"]] = np.nan
    cohort["split"] = np.where(np.arange(n) % 5 < 3, "train",
                               np.where(np.arange(n) % 5 == 3, "val", "test"))
    cohort["fold"] = np.arange(n) % 5
    lab_labels = [name for lab in panel for name in lab.label_names()]
    manifest = StoreManifest(
        site_name=site, n_records=n, fs=fs, n_samples=n_samples,
        clinical_features=[f for f in FEATURES if f == "age" or f[4:] in lab_names],
        lab_labels=lab_labels, diagnosis_labels=list(DX), lab_panel=panel,
        diagnosis_set=[d for d in DEFAULT_DIAGNOSIS_LABELS if d.name in DX],
        feature_window_hours=24.0, label_window_hours=6.0,
        preprocessing={"clip_mv": 3.0, "fs": fs}, counts={"records": n},
        prevalence=label_prevalence(cohort, [f"abn_{x}" for x in lab_labels]))
    with StoreWriter(path, n, n_samples) as writer:
        for i in range(n):
            amplitude = 1.0 if potassium[i] > 5.1 else 0.4
            freq = 4.0 if afib[i] else 1.2
            phase = rng.uniform(0, 2 * np.pi)
            wave = amplitude * np.sin(2 * np.pi * freq * t + phase)
            writer.write(i, wave[None, :] + rng.normal(0, 0.05, (12, n_samples)))
        writer.finish(cohort, manifest)
    return path


def metrics_history(run: Path) -> list[dict]:
    """RUN/metrics.jsonl without timings and memory (the only values a rerun changes)."""
    records = [json.loads(x) for x in RunFolder(run).metrics.read_text().splitlines()]
    return [{k: v for k, v in r.items()
             if not k.endswith(("seconds", "per_second")) and k != "peak-rss-mb"}
            for r in records]
