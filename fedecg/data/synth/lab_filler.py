"""Filler ``labevents`` rows of analytes outside fedecg's lab panel, to reach MIMIC's row count.

MIMIC-IV v2.2 ``labevents`` holds 118,171,367 rows of 1,622 itemids; the twin draws only the
panel's 27 itemids (about 75 rows per patient, a tenth of MIMIC's ~400 per patient at 160,000
patients; see ``tables_only.py``). ``fedecg synth --tables-only --lab-fraction F`` pads the
table with rows of other common itemids (differential counts, red-cell indices, coagulation,
urine) measured on the same specimens, up to ``F`` x MIMIC's rows, so fedecg's readers meet
MIMIC's volume and its mix of irrelevant rows. Panel rows and their values are unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

MIMIC_LABEVENT_ROWS = 118_171_367
"""Rows of ``hosp/labevents`` in MIMIC-IV v2.2 (mimic-code's row-count checks)."""
FILLER_STREAM = 4

# itemid: (label, category, unit, mean, sd, decimals)
FILLER_ITEMS: dict[int, tuple[str, str, str, float, float, int]] = {
    51279: ("Red Blood Cells", "Hematology", "m/uL", 4.2, 0.6, 2),
    51250: ("MCV", "Hematology", "fL", 90.0, 6.0, 0),
    51248: ("MCH", "Hematology", "pg", 30.0, 2.5, 1),
    51249: ("MCHC", "Hematology", "g/dL", 33.0, 1.5, 1),
    51277: ("RDW", "Hematology", "%", 14.0, 1.5, 1),
    52172: ("RDW-SD", "Hematology", "fL", 46.0, 5.0, 1),
    51256: ("Neutrophils", "Hematology", "%", 68.0, 10.0, 1),
    51244: ("Lymphocytes", "Hematology", "%", 20.0, 8.0, 1),
    51254: ("Monocytes", "Hematology", "%", 7.0, 2.0, 1),
    51200: ("Eosinophils", "Hematology", "%", 1.5, 1.0, 1),
    51146: ("Basophils", "Hematology", "%", 0.4, 0.2, 1),
    51274: ("PT", "Hematology", "sec", 13.0, 2.0, 1),
    51275: ("PTT", "Hematology", "sec", 32.0, 5.0, 1),
    50934: ("H", "Chemistry", "", 10.0, 8.0, 0),
    50947: ("I", "Chemistry", "", 1.0, 1.0, 0),
    51678: ("L", "Chemistry", "", 5.0, 4.0, 0),
    50820: ("pH", "Blood Gas", "units", 7.38, 0.05, 2),
    50821: ("pO2", "Blood Gas", "mm Hg", 90.0, 25.0, 0),
    50818: ("pCO2", "Blood Gas", "mm Hg", 42.0, 7.0, 0),
    51491: ("pH", "Hematology", "units", 6.0, 0.6, 1),
    51498: ("Specific Gravity", "Hematology", "", 1.015, 0.007, 3),
    50863: ("Alkaline Phosphatase", "Chemistry", "IU/L", 90.0, 40.0, 0),
    50954: ("Lactate Dehydrogenase (LD)", "Chemistry", "IU/L", 230.0, 80.0, 0),
    50910: ("Creatine Kinase (CK)", "Chemistry", "IU/L", 150.0, 120.0, 0),
}


def filler_d_labitems() -> pd.DataFrame:
    """``d_labitems`` rows of the filler itemids."""
    fluid = {"Blood Gas": "Blood", "Chemistry": "Blood", "Hematology": "Blood"}
    return pd.DataFrame([(itemid, label, fluid[category], category)
                         for itemid, (label, category, *_) in sorted(FILLER_ITEMS.items())],
                        columns=["itemid", "label", "fluid", "category"])


def with_filler(rows: pd.DataFrame, extra_per_row: float, rng: np.random.Generator
                ) -> pd.DataFrame:
    """Sorted panel ``rows`` plus about ``extra_per_row`` filler rows each, on the same
    specimens and times, sorted again as MIMIC's (subject, charttime, itemid)."""
    n_extra = round(len(rows) * extra_per_row)
    if n_extra == 0 or rows.empty:
        return rows
    turn = np.arange(n_extra)
    source = rows.iloc[turn % len(rows)].reset_index(drop=True)
    itemids = np.array(sorted(FILLER_ITEMS))
    which = (turn // len(rows)) % len(itemids)
    specs = [FILLER_ITEMS[i] for i in itemids]
    units = np.array([spec[2] or None for spec in specs], dtype=object)
    means, sds, decimals = (np.array([spec[k] for spec in specs]) for k in (3, 4, 5))
    num = np.abs(rng.normal(means[which], sds[which]))
    places = decimals[which]
    for d in np.unique(places):
        num[places == d] = np.round(num[places == d], d)
    filler = source.assign(
        itemid=itemids[which], valuenum=num,
        value=[f"{v:.{d}f}" for v, d in zip(num, places, strict=True)],
        valueuom=units[which],
        ref_range_lower=np.nan, ref_range_upper=np.nan, flag=None)
    table = pd.concat([rows, filler[rows.columns]], ignore_index=True)
    return table.sort_values(["subject_id", "charttime", "itemid"], kind="stable")
