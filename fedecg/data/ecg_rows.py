"""Checks of each ECG index row against its patient, before linking.

An ECG whose patient is not in the patients table would be stored with unknown sex and age, and
one whose age at the ECG is negative or above ``MAX_AGE_YEARS`` (a birth date after the ECG, a
wrong century) with a wrong age. Both are bad rows of the ECG index: raised, or with
``on_error='skip'`` listed in ``rejects.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.data.tables import Rejects, drop_bad_rows

MAX_AGE_YEARS = 120.0
DAYS_PER_YEAR = 365.2425


def drop_unlinkable_ecgs(ecgs: pd.DataFrame, patients: pd.DataFrame, index_path: Path,
                         patients_path: str, id_column: str, rejects: Rejects) -> pd.DataFrame:
    """Drop (or raise for) ECG rows whose patient is unknown or whose age is implausible.

    ``ecgs`` holds ``study_id, subject_id, ecg_time`` and the index's ``_line``; ``patients`` is
    ``ClinicalTables.patients``. ``id_column`` is the patient id's column name in the index.
    """
    if ecgs.empty:
        return ecgs
    found = ecgs[["subject_id"]].merge(patients[["subject_id", "birth_time"]], on="subject_id",
                                       how="left", validate="many_to_one", indicator=True)
    unknown = (found["_merge"] == "left_only").to_numpy()
    birth = found["birth_time"].astype("datetime64[us]").to_numpy()
    age = (ecgs["ecg_time"].to_numpy() - birth) / np.timedelta64(1, "D") / DAYS_PER_YEAR
    implausible = (age < 0) | (age > MAX_AGE_YEARS)
    subject = ecgs["subject_id"].astype("str").map(repr)
    reasons = np.where(
        unknown,
        "patient " + subject + f" is not in {patients_path}, so sex and age would be unknown; "
        "add the patient or fix the id",
        "age " + pd.Series(age, index=ecgs.index).map("{:.1f}".format) + " years at the ECG ("
        + ecgs["ecg_time"].astype("str") + "): the birth date "
        + pd.Series(birth, index=ecgs.index).astype("str") + " of patient " + subject
        + f" in {patients_path} is "
        + np.where(age < 0, "after the ECG", f"over {MAX_AGE_YEARS:g} years before it")
        + "; fix the birth date or the ECG time")
    return drop_bad_rows(ecgs, unknown | implausible, index_path, id_column, "", rejects,
                         "study_id", original=ecgs["subject_id"],
                         reasons=pd.Series(reasons, index=ecgs.index))
