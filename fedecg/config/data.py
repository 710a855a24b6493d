"""Settings of ``fedecg prepare`` and ``fedecg validate``: linking windows, panel, folds, waveforms.

The lab panel and the diagnosis set are plain mappings here because their typed models
(``fedecg.data.labs.LabDefinition``, ``fedecg.data.diagnoses.DiagnosisLabel``) live one layer up;
``fedecg.data.cohort.resolve_panel`` / ``resolve_diagnosis_set`` validate them, and leaving them
out (``null``) means the defaults ``DEFAULT_LAB_PANEL`` / ``DEFAULT_DIAGNOSIS_LABELS``. The
diagnosis set may also name a built-in set (``clinical`` or ``ecg``).

What a site records (``SITE_DECLARATION_KEYS``: its label set, the labels it records, diagnoses in
WFDB headers) may also be declared by a generic site in its own ``site.yaml``; values set here
take precedence.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from fedecg.config.base import StrictModel

OnError = Literal["raise", "skip"]
LabelSetName = Literal["clinical", "ecg"]
HeaderDiagnoses = Literal["snomed"]
SITE_DECLARATION_KEYS = ("diagnosis_labels", "recorded_labels", "header_diagnoses")
"""``cohort`` keys a generic site may declare in its ``site.yaml``."""


class CohortConfig(StrictModel):
    """How each ECG is linked to the clinical record around it (DESIGN.md §3)."""

    feature_window_hours: float = Field(24.0, gt=0, description="lab features: nearest within ±")
    label_window_hours: float = Field(6.0, gt=0, description="lab-abnormality labels: nearest ±")
    vitals_window_hours: float = Field(24.0, gt=0, description="vitals (BP, heart rate...) ±")
    biometrics_window_days: float = Field(365.0, gt=0, description="weight, height, BMI ±")
    lab_panel: list[dict[str, Any]] | None = Field(
        None, description="LabDefinition mappings; null = fedecg.data.labs.DEFAULT_LAB_PANEL")
    diagnosis_labels: list[dict[str, Any]] | LabelSetName | None = Field(
        None, description="DiagnosisLabel mappings, or a built-in set's name (clinical, ecg); "
        "null = the site's site.yaml, else clinical (DEFAULT_DIAGNOSIS_LABELS)")
    recorded_labels: list[str] | None = Field(
        None, description="diagnosis labels this site records (others are unknown, never "
        "negative); null = every label with a code in a vocabulary the site's diagnoses use")
    header_diagnoses: HeaderDiagnoses | None = Field(
        None, description="snomed: also read '# Dx:' SNOMED codes from each record's WFDB "
        "header as statements of that ECG (generic sites)")
    n_folds: int = Field(10, ge=3, description="patient-grouped folds 0..n_folds-1")
    fold_seed: int = Field(0, description="seed of the patient hash that assigns folds")
    val_folds: list[int] = Field(default_factory=lambda: [8])
    test_folds: list[int] = Field(default_factory=lambda: [9])

    @model_validator(mode="after")
    def _check_folds(self) -> CohortConfig:
        for name in ("val_folds", "test_folds"):
            bad = [f for f in getattr(self, name) if not 0 <= f < self.n_folds]
            if bad:
                raise ValueError(f"{name} {bad}: expected folds in 0..{self.n_folds - 1}")
        shared = sorted(set(self.val_folds) & set(self.test_folds))
        if shared:
            raise ValueError(f"folds {shared} are both val and test; a fold has one split")
        if len(set(self.val_folds) | set(self.test_folds)) >= self.n_folds:
            raise ValueError("val_folds and test_folds leave no training fold")
        return self


class WaveformConfig(StrictModel):
    """How waveforms are preprocessed into the store."""

    fs: float = Field(100.0, gt=0, description="store sampling rate (Hz)")
    duration_s: float = Field(10.0, gt=0, description="seconds kept per record (pad/trim)")
    clip_mv: float = Field(3.0, gt=0, description="amplitudes clipped to ±clip_mv")
    dtype: Literal["float16", "float32"] = "float16"
    min_signal_fraction: float = Field(
        0.5, gt=0, le=1, description="records with less signal than this share of duration_s "
        "(before trailing zeros) are rejected: the rest would be zero padding")

    @property
    def n_samples(self) -> int:
        """Samples per lead in the store."""
        return round(self.fs * self.duration_s)

    @property
    def min_seconds(self) -> float:
        """Seconds of signal a record needs (``min_signal_fraction`` of ``duration_s``)."""
        return self.min_signal_fraction * self.duration_s


class PrepareConfig(StrictModel):
    """Everything ``fedecg prepare`` needs besides its input and output paths."""

    site_name: str | None = Field(None, description="name in the manifest; default: input name")
    cohort: CohortConfig = Field(default_factory=CohortConfig)
    waveform: WaveformConfig = Field(default_factory=WaveformConfig)
    on_error: OnError = Field("raise", description="bad record or row: raise, or skip + rejects")
    workers: int = Field(1, ge=1, description="waveform processes")
    chunk_size: int = Field(64, ge=1, description="records per worker task")
    table_chunk_rows: int = Field(10_000, ge=1000, description="labevents rows per read block")
    checkpoint_records: int = Field(
        1000, ge=1, description="records between checkpoints: a killed prepare, run again, "
        "continues from its last checkpoint")


EXECUTION_SETTINGS = frozenset({"workers", "chunk_size", "table_chunk_rows", "checkpoint_records"})
"""``PrepareConfig`` fields that change how fast a store is written, never what it holds: an
interrupted prepare resumes even when they differ."""
