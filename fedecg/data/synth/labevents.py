"""``labevents`` and ``d_labitems``: lab draws around ECGs and each admitted day.

A draw around an ECG reads that ECG's latent labs, drifted in proportion to the time between
them; a morning draw in an admission reads the admission's latent labs. Which analytes a draw
holds depends on the patient's conditions (NT-proBNP is ordered for heart failure, ...).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.data.synth.physiology import LAB_SPECS, drift_labs

LABEVENT_COLUMNS = ["labevent_id", "subject_id", "hadm_id", "specimen_id", "itemid",
                    "order_provider_id", "charttime", "storetime", "value", "valuenum",
                    "valueuom", "ref_range_lower", "ref_range_upper", "flag", "priority",
                    "comments"]

# itemid: (lab, d_labitems label, category); the first itemid of each lab is its main one
D_LABITEMS: dict[int, tuple[str, str, str]] = {
    50971: ("potassium", "Potassium", "Chemistry"),
    50822: ("potassium", "Potassium, Whole Blood", "Blood Gas"),
    50983: ("sodium", "Sodium", "Chemistry"),
    50824: ("sodium", "Sodium, Whole Blood", "Blood Gas"),
    50893: ("calcium", "Calcium, Total", "Chemistry"),
    50960: ("magnesium", "Magnesium", "Chemistry"),
    50912: ("creatinine", "Creatinine", "Chemistry"),
    51006: ("urea_nitrogen", "Urea Nitrogen", "Chemistry"),
    50931: ("glucose", "Glucose", "Chemistry"),
    51222: ("hemoglobin", "Hemoglobin", "Hematology"),
    51221: ("hematocrit", "Hematocrit", "Hematology"),
    51301: ("wbc", "White Blood Cells", "Hematology"),
    51265: ("platelets", "Platelet Count", "Hematology"),
    51003: ("troponin_t", "Troponin T", "Chemistry"),
    50963: ("ntprobnp", "NTproBNP", "Chemistry"),
    50882: ("bicarbonate", "Bicarbonate", "Chemistry"),
    50902: ("chloride", "Chloride", "Chemistry"),
    50868: ("anion_gap", "Anion Gap", "Chemistry"),
    50862: ("albumin", "Albumin", "Chemistry"),
    50970: ("phosphate", "Phosphate", "Chemistry"),
    50911: ("ck_mb", "Creatine Kinase, MB Isoenzyme", "Chemistry"),
    50813: ("lactate", "Lactate", "Blood Gas"),
    51237: ("inr", "INR(PT)", "Hematology"),
    50993: ("tsh", "Thyroid Stimulating Hormone", "Chemistry"),
    50878: ("ast", "Asparate Aminotransferase (AST)", "Chemistry"),
    50861: ("alt", "Alanine Aminotransferase (ALT)", "Chemistry"),
    50885: ("bilirubin", "Bilirubin, Total", "Chemistry"),
}

_GROUPS: dict[str, tuple[int, ...]] = {
    "bmp": (50971, 50983, 50902, 50882, 50868, 51006, 50912, 50931),
    "cbc": (51222, 51221, 51301, 51265),
    "minerals": (50893, 50960, 50970),
    "troponin": (51003,),
    "ck_mb": (50911,),
    "bnp": (50963,),
    "lactate": (50813,),
    "inr": (51237,),
    "lft": (50878, 50861, 50885, 50862),
    "tsh": (50993,),
    "gas": (50822, 50824),
}
_SEX_RANGES = {"hemoglobin": {"F": (12.0, 16.0), "M": (13.7, 17.5)},
               "hematocrit": {"F": (36.0, 48.0), "M": (40.0, 51.0)}}


def d_labitems() -> pd.DataFrame:
    """``d_labitems`` rows for the panel's itemids."""
    return pd.DataFrame([(itemid, label, "Blood", category)
                         for itemid, (_, label, category) in sorted(D_LABITEMS.items())],
                        columns=["itemid", "label", "fluid", "category"])


def _group_odds(draws: pd.DataFrame, morning: np.ndarray) -> dict[str, np.ndarray]:
    def b(name: str) -> np.ndarray:
        return draws[name].to_numpy(dtype=float)
    return {
        "bmp": np.full(len(draws), 0.95), "cbc": np.full(len(draws), 0.85),
        "minerals": 0.55 + 0.2 * morning,
        "troponin": (0.25 + 0.45 * np.maximum(b("acute_mi"), b("chronic_ischemic"))) * ~morning,
        "bnp": (0.05 + 0.4 * b("heart_failure") + 0.1 * b("atrial_fibrillation")) * ~morning,
        "lactate": 0.06 + 0.5 * b("sepsis"),
        "inr": 0.2 + 0.3 * b("atrial_fibrillation"),
        "lft": np.full(len(draws), 0.3), "tsh": (0.05 + 0.1 * b("atrial_fibrillation")) * ~morning,
        "gas": 0.05 + 0.15 * b("sepsis"),
    }


def _choose_groups(rng: np.random.Generator, draws: pd.DataFrame) -> dict[str, np.ndarray]:
    morning = draws["morning"].to_numpy(dtype=bool)
    chosen = {g: rng.random(len(draws)) < p for g, p in _group_odds(draws, morning).items()}
    chosen["ck_mb"] = chosen["troponin"] & (rng.random(len(draws)) < 0.35)
    return chosen


def _rows_for_item(draws: pd.DataFrame, values: pd.DataFrame, itemid: int,
                   mask: np.ndarray) -> pd.DataFrame:
    lab = D_LABITEMS[itemid][0]
    panel = {definition.name: definition for definition in DEFAULT_LAB_PANEL}[lab]
    spec = LAB_SPECS[lab]
    sub = draws[mask]
    num = np.round(values.loc[mask, lab].to_numpy(), spec.decimals)
    sex = sub["gender"].to_numpy()
    low = np.full(len(sub), panel.ref_low)
    high = np.full(len(sub), panel.ref_high)
    for sex_code, (lo, hi) in _SEX_RANGES.get(lab, {}).items():
        low[sex == sex_code], high[sex == sex_code] = lo, hi
    text = [f"{v:.{spec.decimals}f}" for v in num]
    return pd.DataFrame({
        "subject_id": sub["subject_id"].to_numpy(), "hadm_id": sub["hadm_id"].to_numpy(),
        "specimen_id": sub["specimen_id"].to_numpy(), "itemid": itemid,
        "charttime": sub["charttime"].to_numpy(), "storetime": sub["storetime"].to_numpy(),
        "value": text, "valuenum": num,
        "valueuom": None if lab == "inr" else panel.unit,
        "ref_range_lower": low, "ref_range_upper": high,
        "flag": np.where((num < low) | (num > high), "abnormal", None),
        "priority": sub["priority"].to_numpy(),
    })


@dataclass
class LabPlan:
    """Everything random about ``labevents``, drawn up front: one row per draw, its measured
    values (with analytic noise) and which analyte groups it holds. Rows are made from it in
    chunks of patients, so the table never has to be held whole."""

    draws: pd.DataFrame
    values: pd.DataFrame
    chosen: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        """Rows of ``labevents`` the plan makes."""
        return sum(int(self.chosen[g].sum()) * len(items) for g, items in _GROUPS.items())

    def part(self, keep: np.ndarray) -> LabPlan:
        """The plan of the draws where ``keep`` is true (in their order)."""
        return LabPlan(self.draws[keep].reset_index(drop=True),
                       self.values[keep].reset_index(drop=True),
                       {g: c[keep] for g, c in self.chosen.items()})


def plan_labevents(rng: np.random.Generator, draws: pd.DataFrame,
                   values: pd.DataFrame) -> LabPlan:
    """The ``LabPlan`` of one row per draw (ids, times, conditions) and its lab values."""
    draws = draws.reset_index(drop=True)
    values = drift_labs(rng, values.reset_index(drop=True), 0.15)  # analytic noise
    return LabPlan(draws, values, _choose_groups(rng, draws))


def labevent_rows(plan: LabPlan) -> pd.DataFrame:
    """The plan's long rows, sorted as MIMIC's (subject, charttime, itemid), without ids."""
    frames = [_rows_for_item(plan.draws, plan.values, itemid, plan.chosen[group])
              for group, itemids in _GROUPS.items() for itemid in itemids]
    table = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    return table.sort_values(["subject_id", "charttime", "itemid"], kind="stable")


def finish_labevents(table: pd.DataFrame, first_id: int) -> pd.DataFrame:
    """Sorted rows as ``labevents``: ids from ``first_id``, MIMIC's columns, times as text."""
    table = table.reset_index(drop=True)
    table.insert(0, "labevent_id", np.arange(first_id, first_id + len(table)))
    table["hadm_id"] = table["hadm_id"].astype("Int64")
    table["order_provider_id"] = None
    table["comments"] = None
    for column in ("charttime", "storetime"):
        table[column] = table[column].dt.strftime("%Y-%m-%d %H:%M:%S")
    return table[LABEVENT_COLUMNS]


def build_labevents(rng: np.random.Generator, draws: pd.DataFrame,
                    values: pd.DataFrame) -> pd.DataFrame:
    """Long ``labevents`` (whole) from one row per draw and its lab values."""
    return finish_labevents(labevent_rows(plan_labevents(rng, draws, values)), 1)


def patient_chunks(plan: LabPlan, patients_per_chunk: int) -> Iterator[LabPlan]:
    """The plan cut into consecutive ranges of ``patients_per_chunk`` subject_ids; sorting each
    part and numbering on gives the rows of the whole table, in order."""
    subject = plan.draws["subject_id"].to_numpy()
    edges = np.unique(subject)[::patients_per_chunk]
    for low, high in zip(edges, [*edges[1:], subject.max() + 1], strict=True):
        yield plan.part((subject >= low) & (subject < high))
