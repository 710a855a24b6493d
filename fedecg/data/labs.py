"""The lab panel: which laboratory values become features and abnormality labels.

Each lab names its MIMIC ``itemid``s (several may measure the same analyte), its unit, a default
reference range (used when a row has none) and the directions that become labels
(``potassium_high``, ``hemoglobin_low``, ...). Defaults follow the MIMIC-IV demo's own ranges.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedecg.config.base import StrictModel

Direction = Literal["high", "low"]


class LabDefinition(StrictModel):
    """One analyte of the panel."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    itemids: list[int] = Field(min_length=1)
    unit: str
    ref_low: float
    ref_high: float
    directions: list[Direction] = Field(min_length=1)

    def label_names(self) -> list[str]:
        """Names of this lab's abnormality labels, e.g. ``['potassium_high', 'potassium_low']``."""
        return [f"{self.name}_{direction}" for direction in self.directions]


def _lab(name: str, itemids: list[int], unit: str, low: float, high: float,
         *directions: Direction) -> LabDefinition:
    return LabDefinition(name=name, itemids=itemids, unit=unit, ref_low=low, ref_high=high,
                         directions=list(directions))


DEFAULT_LAB_PANEL: tuple[LabDefinition, ...] = (
    _lab("potassium", [50971, 50822], "mEq/L", 3.3, 5.1, "high", "low"),
    _lab("sodium", [50983, 50824], "mEq/L", 133.0, 145.0, "high", "low"),
    _lab("calcium", [50893], "mg/dL", 8.4, 10.3, "high", "low"),
    _lab("magnesium", [50960], "mg/dL", 1.6, 2.6, "high", "low"),
    _lab("creatinine", [50912], "mg/dL", 0.5, 1.2, "high"),
    _lab("urea_nitrogen", [51006], "mg/dL", 6.0, 20.0, "high"),
    _lab("glucose", [50931], "mg/dL", 70.0, 100.0, "high", "low"),
    _lab("hemoglobin", [51222], "g/dL", 12.0, 17.5, "low"),
    _lab("hematocrit", [51221], "%", 36.0, 51.0, "low"),
    _lab("wbc", [51301], "K/uL", 4.0, 10.0, "high", "low"),
    _lab("platelets", [51265], "K/uL", 150.0, 400.0, "low"),
    _lab("troponin_t", [51003], "ng/mL", 0.0, 0.01, "high"),
    _lab("ntprobnp", [50963], "pg/mL", 0.0, 229.0, "high"),
    _lab("bicarbonate", [50882], "mEq/L", 22.0, 32.0, "low"),
    _lab("chloride", [50902], "mEq/L", 96.0, 108.0, "high", "low"),
    _lab("anion_gap", [50868], "mEq/L", 8.0, 20.0, "high"),
    _lab("albumin", [50862], "g/dL", 3.5, 5.2, "low"),
    _lab("phosphate", [50970], "mg/dL", 2.7, 4.5, "high"),
    _lab("ck_mb", [50911], "ng/mL", 0.0, 10.0, "high"),
    _lab("lactate", [50813], "mmol/L", 0.5, 2.0, "high"),
    _lab("inr", [51237], "ratio", 0.9, 1.1, "high"),
    _lab("tsh", [50993], "uIU/mL", 0.27, 4.2, "high", "low"),
    _lab("ast", [50878], "IU/L", 0.0, 40.0, "high"),
    _lab("alt", [50861], "IU/L", 0.0, 40.0, "high"),
    _lab("bilirubin", [50885], "mg/dL", 0.0, 1.5, "high"),
)


def panel_label_names(panel: list[LabDefinition] | tuple[LabDefinition, ...]) -> list[str]:
    """All abnormality label names of a panel, in panel order."""
    return [label for lab in panel for label in lab.label_names()]


def itemid_to_lab(panel: list[LabDefinition] | tuple[LabDefinition, ...]) -> dict[int, str]:
    """Map every panel ``itemid`` to its lab name."""
    return {itemid: lab.name for lab in panel for itemid in lab.itemids}
