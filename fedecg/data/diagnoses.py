"""Diagnosis label sets: named groups of ICD-10 and ICD-9 code prefixes.

MIMIC mixes ICD-9 and ICD-10 and no mapping table is available offline, so each label lists
prefixes of both versions. Codes are compared without dots (``I48.0`` → ``I480``).
"""

from __future__ import annotations

from pydantic import Field

from fedecg.config.base import StrictModel


class DiagnosisLabel(StrictModel):
    """One diagnosis label: its name and the ICD code prefixes that assign it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    icd10: list[str] = Field(default_factory=list)
    icd9: list[str] = Field(default_factory=list)
    description: str = ""

    def matches(self, code: str, version: int) -> bool:
        """True when ``code`` (ICD ``version`` 9 or 10) starts with one of this label's prefixes."""
        prefixes = self.icd10 if version == 10 else self.icd9
        normalized = normalize_icd(code)
        return any(normalized.startswith(prefix) for prefix in prefixes)


def normalize_icd(code: str) -> str:
    """Upper-case, strip spaces and dots: ``' i48.0 '`` → ``'I480'``."""
    return str(code).strip().upper().replace(".", "")


def _dx(name: str, icd10: list[str], icd9: list[str], description: str) -> DiagnosisLabel:
    return DiagnosisLabel(name=name, icd10=icd10, icd9=icd9, description=description)


DEFAULT_DIAGNOSIS_LABELS: tuple[DiagnosisLabel, ...] = (
    _dx("atrial_fibrillation", ["I48"], ["42731", "42732"], "Atrial fibrillation or flutter"),
    _dx("heart_failure", ["I50", "I110", "I130", "I132"], ["428", "40201", "40211", "40291",
        "40401", "40403", "40411", "40413", "40491", "40493"], "Heart failure"),
    _dx("acute_mi", ["I21", "I22"], ["410"], "Acute myocardial infarction"),
    _dx("chronic_ischemic", ["I25"], ["412", "414"], "Chronic ischemic heart disease"),
    _dx("hypertension", ["I10", "I11", "I12", "I13", "I15", "I16"],
        ["401", "402", "403", "404", "405"], "Hypertension"),
    _dx("conduction_disease", ["I44", "I45"], ["426"], "AV block, bundle branch block"),
    _dx("cardiomyopathy", ["I42", "I43"], ["425"], "Cardiomyopathy"),
    _dx("ckd", ["N18"], ["585"], "Chronic kidney disease"),
    _dx("aki", ["N17"], ["584"], "Acute kidney injury"),
    _dx("hyperkalemia", ["E875"], ["2767"], "Hyperkalemia"),
    _dx("hypokalemia", ["E876"], ["2768"], "Hypokalemia"),
    _dx("hyponatremia", ["E871"], ["2761"], "Hyponatremia"),
    _dx("diabetes", ["E10", "E11", "E13"], ["250"], "Diabetes mellitus"),
    _dx("anemia", ["D50", "D51", "D52", "D53", "D55", "D56", "D57", "D58", "D59", "D60",
        "D61", "D62", "D63", "D64"], ["280", "281", "282", "283", "284", "285"], "Anemia"),
    _dx("sepsis", ["A40", "A41", "R652"], ["038", "99591", "99592"], "Sepsis"),
    _dx("copd", ["J44"], ["491", "492", "496"], "Chronic obstructive pulmonary disease"),
    _dx("pulmonary_embolism", ["I26"], ["4151"], "Pulmonary embolism"),
)
