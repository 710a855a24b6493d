"""The one site-store builder of the tests: tiny, seeded, written with the real StoreWriter.

``make_store`` writes one of two kinds of data, chosen by ``separable``:

* latent (the default; the federated, privacy and deployment tests): each patient has a latent
  condition per diagnosis (``DX``); a positive condition adds a lead-specific bump to the ECG
  and shifts one clinical feature, so models have something to learn across sites;
* separable (centralized training tests; one ECG per patient): the signal is a sinusoid on all
  12 leads plus noise, its amplitude jumps when potassium is high (so ``potassium_high`` is
  visible in the ECG) and its frequency jumps for atrial fibrillation; ``heart_failure``
  follows hemoglobin, which the ECG does not show. Some labels are unknown (NaN).

In both, the lab-abnormality labels follow the lab panel's reference ranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.config.data import PrepareConfig
from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.labs import DEFAULT_LAB_PANEL, LabDefinition
from fedecg.data.prepare import schema_manifest
from fedecg.data.store import StoreManifest, StoreWriter, label_prevalence

DX = ["atrial_fibrillation", "heart_failure", "ckd"]
LABS = DEFAULT_LAB_PANEL[:2]  # potassium high/low, sodium high/low
LAB_LABELS = [name for lab in LABS for name in lab.label_names()]
SEPARABLE_DX = DX[:2]
SEPARABLE_LABS = ("potassium", "hemoglobin")

SCHEMA = PrepareConfig.model_validate({  # what a deployed study's sites prepare with
    "cohort": {"lab_panel": [lab.model_dump(mode="json") for lab in LABS],
               "diagnosis_labels": [d.model_dump(mode="json") for d in DEFAULT_DIAGNOSIS_LABELS
                                    if d.name in DX]},
    "waveform": {"fs": 100.0, "duration_s": 2.0}})

Records = tuple[pd.DataFrame, list[LabDefinition], list[str], Iterator[np.ndarray]]


def make_store(out: Path, n_patients: int = 40, ecgs_per_patient: int = 3, *,
               separable: bool = False, n_samples: int = 200, fs: float = 100.0, seed: int = 0,
               site_name: str = "site-a", hospitals: int = 2,
               prevalence: tuple[float, ...] = (0.3, 0.15, 0.05),
               labs: tuple[str, ...] = SEPARABLE_LABS, schema: PrepareConfig | None = None
               ) -> Path:
    """Write a store of ``n_patients`` x ``ecgs_per_patient`` ECGs to ``out``; return ``out``.

    Latent data (module docstring) take ``prevalence`` (one per ``DX``) and ``hospitals``
    (the ``hospital`` column); with ``schema`` the store has exactly the features and labels
    that ``fedecg prepare`` gives with those settings (``SCHEMA``: a deployed study's sites).
    Separable data (``separable``) take ``labs``, the lab panel's names to keep.
    """
    rng = np.random.default_rng(seed)
    shaped = None if schema is None else schema_manifest(schema, site_name)
    if shaped is not None:
        n_samples, fs = shaped.n_samples, shaped.fs
    if separable:
        cohort, panel, dx, signals = _separable(rng, n_patients * ecgs_per_patient, n_samples,
                                                fs, labs)
    else:
        cohort, panel, dx, signals = _latent(rng, n_patients, ecgs_per_patient, n_samples, fs,
                                             prevalence, hospitals)
    lab_labels = [name for lab in panel for name in lab.label_names()]
    features = [c for c in cohort if c == "age" or c.startswith("lab_")]
    manifest = StoreManifest(
        site_name=site_name, n_records=len(cohort), fs=fs, n_samples=n_samples,
        clinical_features=features, lab_labels=lab_labels, diagnosis_labels=dx,
        lab_panel=panel, diagnosis_set=[d for d in DEFAULT_DIAGNOSIS_LABELS if d.name in dx],
        feature_window_hours=24.0, label_window_hours=6.0,
        preprocessing={"clip_mv": 3.0, "fs": fs})
    if shaped is not None:
        manifest = shaped
        for name in manifest.clinical_features:
            if name not in cohort:
                cohort[name] = rng.normal(0.0, 1.0, len(cohort))
    manifest = manifest.model_copy(update=dict(
        n_records=len(cohort), counts={"records": len(cohort), "patients": n_patients},
        prevalence=label_prevalence(cohort, [f"dx_{d}" for d in dx]
                                    + [f"abn_{x}" for x in lab_labels])))
    with StoreWriter(out, len(cohort), manifest.n_samples) as writer:
        for i, signal in enumerate(signals):
            writer.write(i, signal)
        writer.finish(cohort, manifest)
    return out


def _lab_flags(cohort: pd.DataFrame, panel: list[LabDefinition]) -> None:
    """``abn_<lab>_<direction>``: outside the reference range, NaN where the value is."""
    for lab in panel:
        values = cohort[f"lab_{lab.name}"].to_numpy()
        for direction in lab.directions:
            hit = values > lab.ref_high if direction == "high" else values < lab.ref_low
            cohort[f"abn_{lab.name}_{direction}"] = np.where(np.isnan(values), np.nan,
                                                             hit.astype(float))


def _latent(rng: np.random.Generator, n_patients: int, ecgs_per_patient: int, n_samples: int,
            fs: float, prevalence: tuple[float, ...], hospitals: int) -> Records:
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
    _lab_flags(cohort, list(LABS))
    t = np.arange(n_samples) / fs

    def signals() -> Iterator[np.ndarray]:
        for i in range(n):
            signal = 0.1 * rng.normal(size=(12, n_samples)) + 0.5 * np.sin(2 * np.pi * 1.2 * t)
            for j in range(len(DX)):
                if latent[i, j]:
                    signal[3 * j:3 * j + 3] += 0.8 * np.sin(2 * np.pi * (3 + 2 * j) * t)
            yield signal.astype(np.float16)

    return cohort, list(LABS), list(DX), signals()


def _separable(rng: np.random.Generator, n: int, n_samples: int, fs: float,
               labs: tuple[str, ...]) -> Records:
    potassium = rng.normal(4.5, 0.9, n)
    hemoglobin = rng.normal(12.5, 1.5, n)
    afib = rng.random(n) < 0.35
    panel = [lab for lab in DEFAULT_LAB_PANEL if lab.name in labs]
    cohort = pd.DataFrame({"subject_id": np.arange(n), "study_id": 1000 + np.arange(n),
                           "age": rng.normal(60, 12, n), "lab_potassium": potassium,
                           "lab_hemoglobin": hemoglobin})
    cohort.loc[rng.random(n) < 0.1, "lab_hemoglobin"] = np.nan
    _lab_flags(cohort, panel)
    cohort["dx_atrial_fibrillation"] = afib.astype(float)
    cohort["dx_heart_failure"] = (hemoglobin < 12.0).astype(float)
    cohort.loc[rng.random(n) < 0.15, ["dx_atrial_fibrillation", "dx_heart_failure"]] = np.nan
    cohort["split"] = np.where(np.arange(n) % 5 < 3, "train",
                               np.where(np.arange(n) % 5 == 3, "val", "test"))
    cohort["fold"] = np.arange(n) % 5
    cohort = cohort.drop(columns=[f"lab_{name}" for name in SEPARABLE_LABS
                                  if name not in labs])
    t = np.arange(n_samples) / fs

    def signals() -> Iterator[np.ndarray]:
        for i in range(n):
            amplitude = 1.0 if potassium[i] > 5.1 else 0.4
            freq = 4.0 if afib[i] else 1.2
            phase = rng.uniform(0, 2 * np.pi)
            wave = amplitude * np.sin(2 * np.pi * freq * t + phase)
            yield wave[None, :] + rng.normal(0, 0.05, (12, n_samples))

    return cohort, panel, list(SEPARABLE_DX), signals()
