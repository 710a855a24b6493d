"""A tiny, seeded site store for the federated tests (written with the real StoreWriter).

Each patient has a latent condition per diagnosis; a positive condition adds a lead-specific
bump to the ECG and shifts one clinical feature, so models have something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.config.data import PrepareConfig
from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.data.prepare import schema_manifest
from fedecg.data.store import StoreManifest, StoreWriter, label_prevalence

DX = ["atrial_fibrillation", "heart_failure", "ckd"]
LABS = DEFAULT_LAB_PANEL[:2]  # potassium high/low, sodium high/low
LAB_LABELS = [name for lab in LABS for name in lab.label_names()]
FEATURES = ["age", "lab_potassium", "lab_sodium", "lab_potassium_missing"]

SCHEMA = PrepareConfig.model_validate({  # what a deployed study's sites prepare with
    "cohort": {"lab_panel": [lab.model_dump(mode="json") for lab in LABS],
               "diagnosis_labels": [d.model_dump(mode="json") for d in DEFAULT_DIAGNOSIS_LABELS
                                    if d.name in DX]},
    "waveform": {"fs": 100.0, "duration_s": 2.0}})

TINY_TRAIN = {  # a TrainConfig small enough for tests
    "crop_samples": 100, "batch_size": 16,
    "encoder": {"stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "groups": 4},
    "clinical": {"hidden": 16, "embedding_dim": 16},
    "pretrain": {"projection_dim": 16, "epochs": 2}, "lab": {"epochs": 1},
    "diagnosis": {"epochs": 2}, "eval": {"crops": 1, "bootstrap": 0}}


def make_store(out: Path, n_patients: int = 40, ecgs_per_patient: int = 3, n_samples: int = 200,
               fs: float = 100.0, seed: int = 0, prevalence: tuple[float, ...] = (0.3, 0.15, 0.05),
               site_name: str = "test-site", hospitals: int = 2,
               schema: PrepareConfig | None = None) -> Path:
    """Write a store of ``n_patients`` x ``ecgs_per_patient`` ECGs to ``out``; return ``out``.

    With ``schema`` the store has exactly the features and labels that ``fedecg prepare``
    gives with those settings (``SCHEMA``: a deployed study's sites); else a smaller feature set.
    """
    rng = np.random.default_rng(seed)
    n = n_patients * ecgs_per_patient
    patient = np.repeat(np.arange(1000, 1000 + n_patients), ecgs_per_patient)
    condition = rng.random((n_patients, len(DX))) < np.asarray(prevalence)
    dx = condition[patient - 1000].astype(float)
    dx[rng.random(n) < 0.2] = np.nan  # ECGs outside any stay: unknown diagnoses
    split = np.array(["train", "val", "test"])[
        np.searchsorted([0.6, 0.8], rng.random(n_patients))][patient - 1000]
    cohort = pd.DataFrame({"subject_id": patient, "study_id": np.arange(n) + 5_000_000,
                           "split": split, "fold": (patient % 5),
                           "hospital": (patient % hospitals).astype(str)})
    for j, name in enumerate(DX):
        cohort[f"dx_{name}"] = dx[:, j]
    latent = condition[patient - 1000]
    cohort["age"] = rng.normal(60, 10, n) + 10 * latent[:, 1]
    cohort["lab_potassium"] = rng.normal(4.2, 0.4, n) + 1.5 * latent[:, 2]
    cohort["lab_sodium"] = rng.normal(140, 3, n)
    cohort["lab_potassium_missing"] = 0.0
    potassium = cohort["lab_potassium"].to_numpy()
    for label, value in zip(LAB_LABELS, [potassium > 5.1, potassium < 3.3,
                                         cohort["lab_sodium"] > 145, cohort["lab_sodium"] < 133],
                            strict=True):
        cohort[f"abn_{label}"] = np.asarray(value, dtype=float)
    manifest = StoreManifest(
        site_name=site_name, n_records=n, fs=fs, n_samples=n_samples, clinical_features=FEATURES,
        lab_labels=LAB_LABELS, diagnosis_labels=DX, lab_panel=list(LABS),
        diagnosis_set=[d for d in DEFAULT_DIAGNOSIS_LABELS if d.name in DX],
        feature_window_hours=24.0, label_window_hours=6.0)
    if schema is not None:
        manifest = schema_manifest(schema, site_name)
        n_samples, fs = manifest.n_samples, manifest.fs
        for name in manifest.clinical_features:
            if name not in cohort:
                cohort[name] = rng.normal(0.0, 1.0, n)
    manifest = manifest.model_copy(update=dict(
        n_records=n, counts={"records": n, "patients": n_patients},
        prevalence=label_prevalence(cohort, [f"dx_{d}" for d in DX])))
    t = np.arange(n_samples) / fs
    with StoreWriter(out, n, n_samples) as writer:
        for i in range(n):
            signal = 0.1 * rng.normal(size=(12, n_samples)) + 0.5 * np.sin(2 * np.pi * 1.2 * t)
            for j in range(len(DX)):
                if latent[i, j]:
                    signal[3 * j:3 * j + 3] += 0.8 * np.sin(2 * np.pi * (3 + 2 * j) * t)
            writer.write(i, signal.astype(np.float16))
        writer.finish(cohort, manifest)
    return out
