"""Diagnosis label sets: named groups of codes in several vocabularies.

A label lists ICD-10 and ICD-9 code *prefixes* (compared without dots, ``I48.0`` → ``I480``),
SNOMED CT concept ids (exact), and free statement codes (exact, case-insensitive; e.g. the
SCP-ECG statements of PTB-XL) that assign it. MIMIC mixes ICD-9 and ICD-10 and no mapping table
is available offline, so each label lists codes of every vocabulary it can be read from.

A label with no code in any vocabulary a site uses cannot be recorded by that site: its values
there are unknown, never negative (``recorded_labels``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Literal

from pydantic import Field

from fedecg.config.base import StrictModel

CodeSystem = Literal["icd9", "icd10", "snomed", "statement"]
CODE_SYSTEMS: tuple[CodeSystem, ...] = ("icd9", "icd10", "snomed", "statement")


class DiagnosisLabel(StrictModel):
    """One diagnosis label: its name and the codes that assign it, per vocabulary."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    icd10: list[str] = Field(default_factory=list, description="ICD-10 prefixes")
    icd9: list[str] = Field(default_factory=list, description="ICD-9 prefixes")
    snomed: list[str] = Field(default_factory=list, description="SNOMED CT concept ids")
    statements: list[str] = Field(default_factory=list, description="free statement codes")
    description: str = ""

    def codes(self, system: CodeSystem) -> list[str]:
        """This label's codes in ``system``, normalized as site codes are."""
        return [normalize_code(c, system) for c in getattr(self, _FIELD[system])]

    def matches(self, code: str, system: CodeSystem) -> bool:
        """True when ``code`` of vocabulary ``system`` assigns this label."""
        normalized, codes = normalize_code(code, system), self.codes(system)
        if system in ("icd9", "icd10"):
            return any(normalized.startswith(prefix) for prefix in codes)
        return normalized in codes


_FIELD = {"icd9": "icd9", "icd10": "icd10", "snomed": "snomed", "statement": "statements"}


def normalize_icd(code: str) -> str:
    """Upper-case, strip spaces and dots: ``' i48.0 '`` → ``'I480'``."""
    return str(code).strip().upper().replace(".", "")


def normalize_code(code: str, system: CodeSystem) -> str:
    """A code as labels compare it: ICD without dots, everything upper-case and stripped."""
    return normalize_icd(code) if system in ("icd9", "icd10") else str(code).strip().upper()


def recorded_labels(labels: Sequence[DiagnosisLabel], systems: Collection[str]) -> list[str]:
    """Names of the ``labels`` a site using vocabularies ``systems`` can record (has codes in)."""
    return [label.name for label in labels
            if any(label.codes(system) for system in systems if system in _FIELD)]


def _dx(name: str, icd10: list[str], icd9: list[str], description: str,
        snomed: list[str] | None = None, statements: list[str] | None = None
        ) -> DiagnosisLabel:
    return DiagnosisLabel(name=name, icd10=icd10, icd9=icd9, description=description,
                          snomed=snomed or [], statements=statements or [])


_AF_SNOMED = ["164889003", "164890007"]
_CONDUCTION_SNOMED = ["270492004", "233917008", "195042002", "27885002", "54016002",
                      "28189009", "59118001", "713427006", "713426002", "164909002",
                      "733534002", "251120003", "445118002", "445211001", "6374002"]

DEFAULT_DIAGNOSIS_LABELS: tuple[DiagnosisLabel, ...] = (
    _dx("atrial_fibrillation", ["I48"], ["42731", "42732"], "Atrial fibrillation or flutter",
        _AF_SNOMED, ["AFIB", "AFLT"]),
    _dx("heart_failure", ["I50", "I110", "I130", "I132"], ["428", "40201", "40211", "40291",
        "40401", "40403", "40411", "40413", "40491", "40493"], "Heart failure"),
    _dx("acute_mi", ["I21", "I22"], ["410"], "Acute myocardial infarction"),
    _dx("chronic_ischemic", ["I25"], ["412", "414"], "Chronic ischemic heart disease"),
    _dx("hypertension", ["I10", "I11", "I12", "I13", "I15", "I16"],
        ["401", "402", "403", "404", "405"], "Hypertension"),
    _dx("conduction_disease", ["I44", "I45"], ["426"], "AV block, bundle branch block",
        _CONDUCTION_SNOMED, ["1AVB", "2AVB", "3AVB", "CRBBB", "IRBBB", "CLBBB", "ILBBB", "LAFB",
                             "LPFB"]),
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
"""The ``clinical`` label set: hospital diagnoses, mostly ICD-coded."""

ECG_DIAGNOSIS_LABELS: tuple[DiagnosisLabel, ...] = (
    _dx("atrial_fibrillation", ["I480", "I481", "I482", "I4891"], ["42731"],
        "Atrial fibrillation", ["164889003"], ["AFIB"]),
    _dx("atrial_flutter", ["I483", "I484", "I4892"], ["42732"], "Atrial flutter",
        ["164890007"], ["AFLT"]),
    _dx("sinus_rhythm", [], [], "Normal sinus rhythm (an ECG statement, no ICD code)",
        ["426783006"], ["SR", "NORM"]),
    _dx("sinus_bradycardia", ["R001"], [], "Sinus bradycardia", ["426177001", "426627000"],
        ["SBRAD"]),
    _dx("sinus_tachycardia", ["R000"], ["7850"], "Sinus tachycardia", ["427084000"], ["STACH"]),
    _dx("av_block", ["I440", "I441", "I442", "I443"], ["4260", "4261"], "AV block (1st-3rd)",
        ["270492004", "233917008", "195042002", "27885002", "54016002", "28189009"],
        ["1AVB", "2AVB", "3AVB"]),
    _dx("rbbb", ["I451"], ["4264"], "Right bundle branch block (complete or incomplete)",
        ["59118001", "713427006", "713426002"], ["CRBBB", "IRBBB"]),
    _dx("lbbb", ["I447"], ["4263"], "Left bundle branch block",
        ["164909002", "733534002", "251120003"], ["CLBBB", "ILBBB"]),
    _dx("lafb", ["I444"], ["4262"], "Left anterior fascicular block", ["445118002"], ["LAFB"]),
    _dx("ivcd", ["I454"], [], "Nonspecific intraventricular conduction delay", ["698252002"],
        ["IVCD"]),
    _dx("premature_atrial", ["I491"], ["42761"], "Premature atrial (supraventricular) beats",
        ["284470004", "63593006", "251170000"], ["PAC", "SVPB"]),
    _dx("premature_ventricular", ["I493"], ["42769"], "Premature ventricular beats",
        ["427172004", "17338001", "11157007"], ["PVC"]),
    _dx("lvh", [], [], "Left ventricular hypertrophy or high voltage (ICD-10 I51.7 does not "
        "separate it from other enlargement, so ICD sites do not record it)",
        ["164873001", "55827005"], ["LVH", "VCLVH"]),
    _dx("rvh", [], [], "Right ventricular hypertrophy", ["89792004"], ["RVH"]),
    _dx("atrial_enlargement", [], [], "Left or right atrial enlargement or abnormality",
        ["67741000119109", "253352002", "446358003", "67751000119106"],
        ["LAO/LAE", "RAO/RAE"]),
    _dx("axis_deviation", [], [], "Left or right axis deviation", ["39732003", "47665007"]),
    _dx("st_t_changes", [], [], "ST or T-wave changes (abnormal T, T inversion, ST elevation "
        "or depression, nonspecific ST-T)",
        ["164934002", "59931005", "55930002", "428750005", "164930006", "429622005",
         "164931005"], ["NDT", "NST_", "STD_", "STE_", "NT_", "INVT", "ISC_"]),
    _dx("old_mi", ["I252"], ["412"], "Old (prior) myocardial infarction", ["164867002"],
        ["IMI", "AMI", "ASMI", "ILMI", "ALMI", "IPMI", "LMI", "PMI"]),
    _dx("pacing", ["Z950"], ["V4501"], "Paced rhythm or pacemaker present", ["10370003"],
        ["PACE"]),
    _dx("long_qt", ["I4581"], ["42682"], "Long QT", ["111975006"], ["LNGQT"]),
)
"""The ``ecg`` label set: what a 12-lead ECG itself shows, in ICD-10/9, SNOMED CT and SCP-ECG."""

LABEL_SETS: dict[str, tuple[DiagnosisLabel, ...]] = {
    "clinical": DEFAULT_DIAGNOSIS_LABELS, "ecg": ECG_DIAGNOSIS_LABELS}
"""Built-in label sets by name (``cohort.diagnosis_labels: ecg``)."""
