"""Linking: one cohort row per ECG with demographics, biometrics, vitals, labs, labels and fold.

Every input layout (MIMIC, generic) is first mapped to ``ClinicalTables`` (canonical long
frames), so there is one linking implementation. Linking is vectorized with ``merge_asof``
by subject; nothing loops over ECGs in Python.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedecg.config.base import validate_config
from fedecg.config.data import CohortConfig
from fedecg.data.diagnoses import (
    CODE_SYSTEMS,
    DEFAULT_DIAGNOSIS_LABELS,
    LABEL_SETS,
    DiagnosisLabel,
    recorded_labels,
)
from fedecg.data.labs import DEFAULT_LAB_PANEL, LabDefinition
from fedecg.data.memory import release_freed_memory
from fedecg.data.store import DIAGNOSIS_PREFIX, LAB_FEATURE_PREFIX, LAB_LABEL_PREFIX
from fedecg.errors import ConfigError, TableError

log = logging.getLogger(__name__)

BIOMETRICS = ("weight_kg", "height_cm", "bmi")
VITALS = ("heart_rate", "sbp", "dbp", "resp_rate", "o2sat", "temperature")
MEASUREMENT_NAMES = BIOMETRICS + VITALS
DEMOGRAPHICS = ("age", "sex_male")
NEAREST_LAB_HOURS = "nearest_lab_hours"
"""Cohort column: |hours| from the ECG to its nearest panel lab (NaN beyond the feature window)."""
ECG_COLUMNS = ("study_id", "subject_id", "ecg_time", "record_path")
US = "datetime64[us]"


@dataclass
class ClinicalTables:
    """A site's clinical record in canonical long form (what every layout reader returns).

    * ``patients``: ``subject_id, sex ('M'/'F'/NA), birth_time``
    * ``labs``: ``subject_id, time, lab (panel name), value, ref_low, ref_high, flag`` where
      ``flag`` is 1.0 when the source marks the value abnormal, 0.0 when it marks it normal,
      NaN when it says nothing
    * ``stays``: ``subject_id, stay_id (str), start, end, kind ('admission' | 'ed')``; start and
      end may be NaT for an encounter that ECGs name (``encounter_id``) instead of times
    * ``diagnoses``: ``stay_id, code, system`` (``system`` one of ``CODE_SYSTEMS``: icd9, icd10,
      snomed, statement); an empty code marks an encounter without codes (all labels negative)
    * ``measurements``: ``subject_id, time, name (one of MEASUREMENT_NAMES), value``
    """

    patients: pd.DataFrame
    labs: pd.DataFrame
    stays: pd.DataFrame
    diagnoses: pd.DataFrame
    measurements: pd.DataFrame
    sources: dict[str, str] = field(default_factory=dict)
    lab_rows_read: int | None = None
    """Panel lab rows of the cohort's patients read, when ``labs`` keeps only those that can
    link to an ECG (None: ``labs`` holds them all)."""

    @property
    def lab_rows(self) -> int:
        """Panel lab rows of the cohort's patients in the input."""
        return len(self.labs) if self.lab_rows_read is None else self.lab_rows_read

    def drop_labs(self) -> None:
        """Free the lab rows (once the cohort is linked); ``lab_rows`` still counts them."""
        self.lab_rows_read = self.lab_rows
        self.labs = self.labs.iloc[:0].copy()
        release_freed_memory()


def resolve_panel(config: CohortConfig) -> tuple[LabDefinition, ...]:
    """The configured lab panel, validated (default ``DEFAULT_LAB_PANEL``)."""
    if config.lab_panel is None:
        return DEFAULT_LAB_PANEL
    if not config.lab_panel:
        raise ConfigError("cohort.lab_panel is empty; expected at least one lab. A site without "
                          "labs keeps the panel (leave it null): its lab values are unknown and "
                          "training skips the lab stage")
    panel = tuple(validate_config(LabDefinition, item, f"cohort.lab_panel[{i}]")
                  for i, item in enumerate(config.lab_panel))
    _check_unique([lab.name for lab in panel], "cohort.lab_panel", "lab name")
    _check_unique([i for lab in panel for i in lab.itemids], "cohort.lab_panel", "itemid")
    return panel


def resolve_diagnosis_set(config: CohortConfig) -> tuple[DiagnosisLabel, ...]:
    """The configured diagnosis labels, validated (default ``DEFAULT_DIAGNOSIS_LABELS``)."""
    if config.diagnosis_labels is None:
        return DEFAULT_DIAGNOSIS_LABELS
    if isinstance(config.diagnosis_labels, str):
        return LABEL_SETS[config.diagnosis_labels]
    labels = tuple(validate_config(DiagnosisLabel, item, f"cohort.diagnosis_labels[{i}]")
                   for i, item in enumerate(config.diagnosis_labels))
    _check_unique([label.name for label in labels], "cohort.diagnosis_labels", "name")
    return labels


def _check_unique(values: Sequence[object], where: str, what: str) -> None:
    seen = pd.Series(values)
    repeated = sorted(set(seen[seen.duplicated()]), key=str)
    if repeated:
        raise ConfigError(f"{where}: {what}(s) {repeated} appear more than once; each must be "
                          "unique")


def clinical_feature_names(panel: Sequence[LabDefinition]) -> list[str]:
    """Clinical encoder inputs: demographics, biometrics, vitals, then ``lab_<name>``."""
    return [*DEMOGRAPHICS, *MEASUREMENT_NAMES, *(LAB_FEATURE_PREFIX + lab.name for lab in panel)]


def nearest_events(ecgs: pd.DataFrame, events: pd.DataFrame, window: pd.Timedelta,
                   columns: Sequence[str] = (), *, time: str = "time",
                   ecg_time: str = "ecg_time", by: str = "subject_id") -> pd.DataFrame:
    """For each ECG, the ``columns`` of the same subject's event nearest in time.

    Events further than ``window`` (either side) do not count. Returns a frame aligned with
    ``ecgs`` holding ``columns`` and ``offset_hours`` (event time minus ECG time; NaN and NaN
    values where no event is in the window). Ties in distance go to the earlier event; events at
    the same time are ordered by their values, so the result does not depend on row order.
    """
    timed = ecgs[ecg_time].notna().to_numpy()  # an ECG without a time links to no event
    if events.empty or not timed.any():
        return pd.DataFrame({c: np.full(len(ecgs), np.nan) for c in [*columns, "offset_hours"]},
                            index=ecgs.index)
    left = pd.DataFrame({by: ecgs[by].to_numpy(), "_t": ecgs[ecg_time].astype(US).to_numpy(),
                         "_row": np.arange(len(ecgs))})[timed].sort_values("_t", kind="stable")
    right = events[[by, time, *columns]].rename(columns={time: "_event_time"})
    right["_event_time"] = right["_event_time"].astype(US)
    right = right.sort_values(["_event_time", *columns], kind="stable")
    merged = pd.merge_asof(left, right, left_on="_t", right_on="_event_time", by=by,
                           direction="nearest", tolerance=window)
    merged = merged.set_index("_row").reindex(np.arange(len(ecgs)))
    out = merged[list(columns)].set_axis(ecgs.index)
    out["offset_hours"] = ((merged["_event_time"] - merged["_t"]).to_numpy()
                           / np.timedelta64(1, "h"))
    return out


def nearest_lab_values(ecgs: pd.DataFrame, labs: pd.DataFrame,
                       panel: Sequence[LabDefinition], window_hours: float,
                       columns: Sequence[str] = ("value",)) -> dict[str, pd.DataFrame]:
    """Per panel lab name, ``nearest_events`` of that lab within ±``window_hours``.

    ``ecgs`` needs ``subject_id, ecg_time``; ``labs`` is ``ClinicalTables.labs`` (or any frame
    with ``subject_id, time, lab`` and ``columns``). Reusable outside prepare, e.g. to condition
    synthetic waveforms on each ECG's nearest real labs.
    """
    window = pd.Timedelta(hours=window_hours)
    return {lab.name: nearest_events(ecgs, rows, window, columns)
            for lab, rows in rows_of_each_lab(labs, panel)}


def rows_of_each_lab(labs: pd.DataFrame, panel: Sequence[LabDefinition]
                     ) -> Iterator[tuple[LabDefinition, pd.DataFrame]]:
    """Each panel lab and the rows of ``labs`` holding it (none: an empty frame), in panel
    order; each lab's rows are copied only when its turn comes, so memory holds one lab's
    copy beside ``labs``, not the whole panel's."""
    positions = labs.groupby("lab", sort=False, observed=True).indices
    for lab in panel:
        release_freed_memory()  # what linking the previous lab freed
        yield lab, labs.take(positions.pop(lab.name, np.arange(0)))


def abnormality_labels(nearest: pd.DataFrame, lab: LabDefinition) -> pd.DataFrame:
    """``abn_<lab>_<direction>`` (1.0, 0.0, NaN when no value) from a lab's nearest rows.

    Abnormal means outside the row's own reference range; a row without a range uses the
    source's abnormal flag (direction from the side of the panel range's midpoint) and, without
    a flag, the panel's default range.
    """
    value = nearest["value"]
    has_range = nearest["ref_low"].notna() | nearest["ref_high"].notna()
    low = nearest["ref_low"].fillna(lab.ref_low)
    high = nearest["ref_high"].fillna(lab.ref_high)
    above, below = value > high, value < low
    flagged = ~has_range & (nearest["flag"] == 1) & ~above & ~below
    upper_half = value >= (lab.ref_low + lab.ref_high) / 2
    hits = {"high": above | (flagged & upper_half), "low": below | (flagged & ~upper_half)}
    known = value.notna()
    return pd.DataFrame({LAB_LABEL_PREFIX + f"{lab.name}_{d}": hits[d].astype("float32")
                         .where(known) for d in lab.directions}, index=nearest.index)


def containing_stay(ecgs: pd.DataFrame, stays: pd.DataFrame) -> pd.DataFrame:
    """``stay_id`` and ``stay_kind`` of the stay whose [start, end] holds each ECG (else NA).

    Hospital admissions come first; an ED stay is used when no admission holds the ECG.
    """
    result = pd.DataFrame({"stay_id": pd.Series(pd.NA, index=ecgs.index, dtype="str"),
                           "stay_kind": pd.Series(pd.NA, index=ecgs.index, dtype="str")})
    for kind in ("admission", "ed"):
        of_kind = stays[stays["kind"] == kind]
        found = nearest_backward(ecgs, of_kind, "start", ["stay_id", "end"])
        inside = found["end"].notna() & (ecgs["ecg_time"] <= found["end"])
        fill = inside & result["stay_id"].isna()
        result.loc[fill, "stay_id"] = found.loc[fill, "stay_id"].astype("str")
        result.loc[fill, "stay_kind"] = kind
    return result


def nearest_backward(ecgs: pd.DataFrame, events: pd.DataFrame, time: str,
                     columns: Sequence[str]) -> pd.DataFrame:
    """For each ECG, ``columns`` of the subject's latest event at or before the ECG.

    ECGs without a time and events without ``time`` take part in no match (NaN).
    """
    left = pd.DataFrame({"subject_id": ecgs["subject_id"].to_numpy(),
                         "_t": ecgs["ecg_time"].to_numpy(), "_row": np.arange(len(ecgs))})
    left = left[left["_t"].notna()]
    right = events[["subject_id", time, *columns]]
    right = right[right[time].notna()].sort_values([time], kind="stable")
    merged = pd.merge_asof(left.sort_values("_t", kind="stable"), right, left_on="_t",
                           right_on=time, by="subject_id", direction="backward")
    merged = merged.set_index("_row").reindex(np.arange(len(ecgs)))
    return merged[list(columns)].set_axis(ecgs.index)


def diagnosis_matrix(diagnoses: pd.DataFrame, labels: Sequence[DiagnosisLabel]) -> pd.DataFrame:
    """``dx_<name>`` per ``stay_id`` (1.0/0.0) from codes matched per vocabulary: ICD by
    prefix, SNOMED and statements exactly (``DiagnosisLabel.matches``)."""
    system = diagnoses["system"].astype("str")
    upper = diagnoses["code"].astype("str").str.strip().str.upper()
    codes = {name: upper.str.replace(".", "", regex=False) if name in ("icd9", "icd10")
             else upper for name in CODE_SYSTEMS if (system == name).any()}
    hits = {}
    for label in labels:
        hit = pd.Series(False, index=diagnoses.index)
        for name, code in codes.items():
            wanted = tuple(label.codes(name))
            if not wanted:
                continue
            found = (code.str.startswith(wanted) if name in ("icd9", "icd10")
                     else code.isin(wanted))
            hit |= (system == name) & found
        hits[DIAGNOSIS_PREFIX + label.name] = hit
    frame = pd.DataFrame(hits, index=diagnoses.index).astype("float32")
    frame["stay_id"] = diagnoses["stay_id"].astype("str").to_numpy()
    return frame.groupby("stay_id").max()


def patient_folds(subjects: pd.Series, n_folds: int, seed: int) -> np.ndarray:
    """Fold 0..n_folds-1 of each row from a seeded hash of its subject (patient-grouped)."""
    keys = subjects.astype("str")
    fold_of = {key: int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8)
                                   .digest(), "big") % n_folds for key in keys.unique()}
    return keys.map(fold_of).to_numpy(dtype=np.int64)


def split_of_folds(folds: np.ndarray, config: CohortConfig) -> np.ndarray:
    """``train``/``val``/``test`` for each fold number."""
    split = np.full(len(folds), "train", dtype=object)
    split[np.isin(folds, config.val_folds)] = "val"
    split[np.isin(folds, config.test_folds)] = "test"
    return split


def _demographics(ecgs: pd.DataFrame, patients: pd.DataFrame) -> pd.DataFrame:
    """Sex and age at the ECG: from the birth date and ECG time, else the ECG row's ``age``."""
    found = ecgs[["subject_id"]].merge(patients[["subject_id", "sex", "birth_time"]],
                                       on="subject_id", how="left", validate="many_to_one")
    days = (ecgs["ecg_time"].to_numpy() - found["birth_time"].to_numpy()) / np.timedelta64(1, "D")
    age = pd.Series(days / 365.2425, index=ecgs.index)
    if "age" in ecgs:
        age = age.fillna(pd.to_numeric(ecgs["age"], errors="coerce"))
    sex = found["sex"].to_numpy()
    male = np.where(sex == "M", 1.0, np.where(sex == "F", 0.0, np.nan))
    return pd.DataFrame({"sex": found["sex"].to_numpy(), "age": age.to_numpy(),
                         "sex_male": male}, index=ecgs.index)


def _measurements(ecgs: pd.DataFrame, measurements: pd.DataFrame,
                  config: CohortConfig) -> pd.DataFrame:
    groups = dict(tuple(measurements.groupby("name", sort=False)))
    out = {}
    for name in MEASUREMENT_NAMES:
        window = (pd.Timedelta(days=config.biometrics_window_days) if name in BIOMETRICS
                  else pd.Timedelta(hours=config.vitals_window_hours))
        events = groups.get(name, measurements.iloc[:0])
        out[name] = nearest_events(ecgs, events, window, ["value"])["value"].astype("float32")
        release_freed_memory()
    frame = pd.DataFrame(out, index=ecgs.index)
    derived = frame["weight_kg"] / (frame["height_cm"] / 100) ** 2
    frame["bmi"] = frame["bmi"].fillna(derived.astype("float32"))
    return frame


def _labs(ecgs: pd.DataFrame, labs: pd.DataFrame, panel: Sequence[LabDefinition],
          config: CohortConfig) -> pd.DataFrame:
    # The nearest event within the wider window is also the nearest within the narrower one
    # whenever it lies inside it, so one search serves both windows. One lab at a time, keeping
    # only its float32 columns: memory holds one lab's nearest rows, not the panel's.
    feature, label = config.feature_window_hours, config.label_window_hours
    window = pd.Timedelta(hours=max(feature, label))
    values, labels = {}, []
    nearest_hours = np.full(len(ecgs), np.nan)
    for lab, rows in rows_of_each_lab(labs, panel):
        near = nearest_events(ecgs, rows, window, ("value", "ref_low", "ref_high", "flag"))
        hours = near["offset_hours"].abs()
        values[LAB_FEATURE_PREFIX + lab.name] = near["value"].where(hours <= feature) \
            .astype("float32")
        labels.append(abnormality_labels(near.where(hours <= label), lab))
        nearest_hours = np.fmin(nearest_hours, hours.where(hours <= feature).to_numpy())
    return pd.concat([pd.DataFrame(values, index=ecgs.index), *labels,
                      pd.DataFrame({NEAREST_LAB_HOURS: nearest_hours}, index=ecgs.index)], axis=1)


def ecg_encounters(ecgs: pd.DataFrame, stays: pd.DataFrame) -> pd.DataFrame:
    """``stay_id``, ``stay_kind`` of each ECG, first found of: the statements of the ECG itself
    (a stay whose ``study_id`` is the ECG's), the encounter its row names (``encounter_id``, a
    stay id), the stay whose [start, end] holds its time; else NA (no encounter)."""
    stay = containing_stay(ecgs, stays)
    kinds = stays.drop_duplicates("stay_id").set_index("stay_id")["kind"]
    choices = []
    if "encounter_id" in ecgs:
        choices.append(ecgs["encounter_id"].astype("str").where(ecgs["encounter_id"].notna()))
    if "study_id" in stays:
        own = stays.dropna(subset=["study_id"]).drop_duplicates("study_id")
        choices.append(ecgs["study_id"].astype("str").map(own.set_index("study_id")["stay_id"]))
    for named in choices:  # later choices take precedence
        chosen = named.notna()
        stay.loc[chosen, "stay_id"] = named[chosen]
        stay.loc[chosen, "stay_kind"] = named[chosen].map(kinds).fillna("unlisted")
    return stay


def site_recorded_labels(diagnoses: pd.DataFrame, labels: Sequence[DiagnosisLabel],
                         config: CohortConfig) -> list[str]:
    """The labels this site records: ``cohort.recorded_labels`` when given (checked against
    the label set), else every label with a code in a vocabulary the site's diagnoses use."""
    names = [label.name for label in labels]
    if config.recorded_labels is not None:
        unknown = sorted(set(config.recorded_labels) - set(names))
        if unknown:
            raise ConfigError(f"cohort.recorded_labels: {unknown} are not labels of the "
                              f"diagnosis set; expected some of {names}")
        return [n for n in names if n in config.recorded_labels]
    return recorded_labels(labels, set(diagnoses["system"].astype("str")))


def _diagnoses(ecgs: pd.DataFrame, tables: ClinicalTables, labels: Sequence[DiagnosisLabel],
               config: CohortConfig) -> pd.DataFrame:
    """Encounter and labels per ECG: NaN for an ECG without an encounter and for labels the
    site does not record; an encounter without codes is negative for every recorded label."""
    stay = ecg_encounters(ecgs, tables.stays)
    matrix = diagnosis_matrix(tables.diagnoses, labels)
    dx = matrix.reindex(stay["stay_id"].to_numpy()).set_axis(ecgs.index)
    recorded = site_recorded_labels(tables.diagnoses, labels, config)
    unrecorded = [label.name for label in labels if label.name not in recorded]
    if unrecorded:
        log.info("%d diagnosis label(s) this site does not record are unknown, not negative: "
                 "%s", len(unrecorded), ", ".join(unrecorded))
        dx[[DIAGNOSIS_PREFIX + name for name in unrecorded]] = np.nan
    return pd.concat([stay, dx], axis=1)


def _say_untimed(ecgs: pd.DataFrame) -> None:
    """Log once how many ECGs have no time (they link no lab, vital or time-based encounter)."""
    untimed = int(ecgs["ecg_time"].isna().sum())
    if untimed:
        log.warning("%d of %d ECGs have no time: lab and vital linkage is off for them; their "
                    "labels come from the encounter they name or their own statements",
                    untimed, len(ecgs))


def build_cohort(ecgs: pd.DataFrame, tables: ClinicalTables,
                 config: CohortConfig) -> pd.DataFrame:
    """One row per ECG (DESIGN.md §3), in the order of ``ecgs``.

    ``ecgs`` needs ``study_id, subject_id, ecg_time, record_path`` (extra columns such as
    ``cart_id`` are kept). Adds ``sex, age, sex_male``, biometrics and vitals, ``lab_<name>``
    (nearest within the feature window), ``nearest_lab_hours``, ``abn_<lab>_<dir>`` (nearest
    within the label window; NaN when none), ``stay_id, stay_kind, dx_<name>`` (NaN without an
    encounter, or for a label the site does not record), ``fold`` and ``split``. ``ecgs`` may
    carry ``encounter_id`` (the stay an ECG belongs to) and ``age``; an ECG without a time
    (NaT) links to no lab, vital or time-based stay.
    """
    missing = [c for c in ECG_COLUMNS if c not in ecgs]
    if missing:
        raise TableError(f"ECG index: missing column(s) {missing}; found {list(ecgs.columns)}")
    panel, labels = resolve_panel(config), resolve_diagnosis_set(config)
    ecgs = ecgs.reset_index(drop=True)
    _say_untimed(ecgs)
    parts = [ecgs.drop(columns=["age"], errors="ignore"), _demographics(ecgs, tables.patients),
             _measurements(ecgs, tables.measurements, config),
             _labs(ecgs, tables.labs, panel, config), _diagnoses(ecgs, tables, labels, config)]
    cohort = pd.concat(parts, axis=1)
    cohort["fold"] = patient_folds(cohort["subject_id"], config.n_folds, config.fold_seed)
    cohort["split"] = split_of_folds(cohort["fold"].to_numpy(), config)
    return cohort
