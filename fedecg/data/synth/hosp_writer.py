"""Write the twin's ``hosp/`` folder with bounded memory: ``labevents`` streamed by patients.

Every random draw of the tables happens first, in the order the twin has always used (so a seed
gives the same bytes as before); the long ``labevents`` rows are then made, sorted, numbered and
written chunk by chunk of consecutive patients, never held whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.data.synth.assemble import World, lab_draws
from fedecg.data.synth.hosp_tables import (
    admission_frame,
    admissions_table,
    diagnoses_table,
    omr_table,
    patients_table,
)
from fedecg.data.synth.icd import icd_dictionary
from fedecg.data.synth.lab_filler import (
    FILLER_STREAM,
    MIMIC_LABEVENT_ROWS,
    filler_d_labitems,
    with_filler,
)
from fedecg.data.synth.labevents import (
    LabPlan,
    d_labitems,
    finish_labevents,
    labevent_rows,
    patient_chunks,
    plan_labevents,
)
from fedecg.data.synth.mimic_writer import write_csv, write_csv_parts
from fedecg.errors import ConfigError

LAB_CHUNK_PATIENTS = 2000
"""Patients per written ``labevents`` chunk (about 150,000 rows without filler)."""


def filler_per_row(plan_rows: int, lab_fraction: float) -> float:
    """Filler rows per panel row that bring ``labevents`` to ``lab_fraction`` x MIMIC's rows."""
    target = lab_fraction * MIMIC_LABEVENT_ROWS
    if target < plan_rows:
        raise ConfigError(
            f"synth: --lab-fraction {lab_fraction:g} asks for {target:,.0f} labevents rows, but "
            f"the twin's own lab panel already makes {plan_rows:,}; expected a fraction of at "
            f"least {plan_rows / MIMIC_LABEVENT_ROWS:.2g} (or leave --lab-fraction out)")
    return target / max(plan_rows, 1) - 1.0


def labevent_parts(plan: LabPlan, seed: int, extra_per_row: float = 0.0
                   ) -> Iterator[pd.DataFrame]:
    """``labevents`` in consecutive chunks of patients, numbered on from 1."""
    first_id = 1
    per_chunk = max(1, int(LAB_CHUNK_PATIENTS / (1.0 + extra_per_row)))
    for i, part in enumerate(patient_chunks(plan, per_chunk)):
        rows = labevent_rows(part)
        if extra_per_row > 0:
            rows = with_filler(rows, extra_per_row, np.random.default_rng(
                [seed, FILLER_STREAM, i]))
        table = finish_labevents(rows, first_id)
        first_id += len(table)
        yield table


def write_hosp(hosp: Path, world: World, rng: np.random.Generator, seed: int,
               lab_fraction: float | None = None) -> tuple[int, pd.DataFrame]:
    """Write every ``hosp`` table; returns the ``labevents`` rows and the coded conditions per
    ``hadm_id``. ``lab_fraction`` pads ``labevents`` with filler rows (``lab_filler``)."""
    hosp.mkdir()
    admissions = admission_frame(rng, world)
    diagnoses, coded = diagnoses_table(rng, world, admissions)
    plan = plan_labevents(rng, *lab_draws(rng, world))
    tables = {
        "patients": patients_table(world, admissions),
        "admissions": admissions_table(rng, world, admissions),
        "d_labitems": d_labitems(), "omr": omr_table(rng, world),
        "diagnoses_icd": diagnoses, "d_icd_diagnoses": icd_dictionary(diagnoses),
    }
    extra = 0.0
    if lab_fraction is not None:
        extra = filler_per_row(plan.rows, lab_fraction)
        tables["d_labitems"] = pd.concat([d_labitems(), filler_d_labitems()]).sort_values(
            "itemid", kind="stable")
    for name, table in tables.items():
        write_csv(table, hosp / f"{name}.csv.gz")
    del tables, admissions, diagnoses
    rows = write_csv_parts(labevent_parts(plan, seed, extra), hosp / "labevents.csv.gz")
    return rows, coded
