"""ICD codes the twin writes: codes for each condition (both versions) and unrelated filler.

Titles are MIMIC's ``d_icd_diagnoses.long_title`` for the same codes.
"""

from __future__ import annotations

import pandas as pd

CONDITION_CODES: dict[str, dict[int, tuple[tuple[str, str], ...]]] = {
    "atrial_fibrillation": {
        10: (("I480", "Paroxysmal atrial fibrillation"),
             ("I4891", "Unspecified atrial fibrillation")),
        9: (("42731", "Atrial fibrillation"),)},
    "heart_failure": {
        10: (("I5032", "Chronic diastolic (congestive) heart failure"),
             ("I509", "Heart failure, unspecified")),
        9: (("4280", "Congestive heart failure, unspecified"),
            ("42832", "Chronic diastolic heart failure"))},
    "acute_mi": {
        10: (("I214", "Non-ST elevation (NSTEMI) myocardial infarction"),),
        9: (("41071", "Subendocardial infarction, initial episode of care"),)},
    "chronic_ischemic": {
        10: (("I2510", "Atherosclerotic heart disease of native coronary artery without "
                       "angina pectoris"),),
        9: (("41401", "Coronary atherosclerosis of native coronary artery"),)},
    "hypertension": {
        10: (("I10", "Essential (primary) hypertension"),),
        9: (("4019", "Unspecified essential hypertension"),)},
    "conduction_disease": {
        10: (("I440", "Atrioventricular block, first degree"),
             ("I447", "Left bundle-branch block, unspecified")),
        9: (("42611", "First degree atrioventricular block"),
            ("4263", "Other left bundle branch block"))},
    "cardiomyopathy": {
        10: (("I429", "Cardiomyopathy, unspecified"),),
        9: (("4254", "Other primary cardiomyopathies"),)},
    "ckd": {
        10: (("N183", "Chronic kidney disease, stage 3 (moderate)"),
             ("N184", "Chronic kidney disease, stage 4 (severe)")),
        9: (("5853", "Chronic kidney disease, Stage III (moderate)"),
            ("5854", "Chronic kidney disease, Stage IV (severe)"))},
    "aki": {10: (("N179", "Acute kidney failure, unspecified"),),
            9: (("5849", "Acute kidney failure, unspecified"),)},
    "hyperkalemia": {10: (("E875", "Hyperkalemia"),), 9: (("2767", "Hyperpotassemia"),)},
    "hypokalemia": {10: (("E876", "Hypokalemia"),), 9: (("2768", "Hypopotassemia"),)},
    "hyponatremia": {10: (("E871", "Hypo-osmolality and hyponatremia"),),
                     9: (("2761", "Hyposmolality and/or hyponatremia"),)},
    "diabetes": {
        10: (("E119", "Type 2 diabetes mellitus without complications"),),
        9: (("25000", "Diabetes mellitus without mention of complication, type II or "
                      "unspecified type, not stated as uncontrolled"),)},
    "anemia": {10: (("D649", "Anemia, unspecified"),), 9: (("2859", "Anemia, unspecified"),)},
    "sepsis": {10: (("A419", "Sepsis, unspecified organism"),),
               9: (("0389", "Unspecified septicemia"),)},
    "copd": {10: (("J449", "Chronic obstructive pulmonary disease, unspecified"),),
             9: (("496", "Chronic airway obstruction, not elsewhere classified"),)},
    "pulmonary_embolism": {
        10: (("I2699", "Other pulmonary embolism without acute cor pulmonale"),),
        9: (("41519", "Other pulmonary embolism and infarction"),)},
}

FILLER_CODES: dict[int, tuple[tuple[str, str], ...]] = {
    10: (("E785", "Hyperlipidemia, unspecified"),
         ("K219", "Gastro-esophageal reflux disease without esophagitis"),
         ("F329", "Major depressive disorder, single episode, unspecified"),
         ("Z87891", "Personal history of nicotine dependence"),
         ("E039", "Hypothyroidism, unspecified"),
         ("G4733", "Obstructive sleep apnea (adult) (pediatric)"),
         ("J189", "Pneumonia, unspecified organism"),
         ("N390", "Urinary tract infection, site not specified"),
         ("R079", "Chest pain, unspecified")),
    9: (("2724", "Other and unspecified hyperlipidemia"),
        ("53081", "Esophageal reflux"),
        ("311", "Depressive disorder, not elsewhere classified"),
        ("V1582", "Personal history of tobacco use"),
        ("2449", "Unspecified acquired hypothyroidism"),
        ("32723", "Obstructive sleep apnea (adult)(pediatric)"),
        ("486", "Pneumonia, organism unspecified"),
        ("5990", "Urinary tract infection, site not specified"),
        ("78650", "Chest pain, unspecified")),
}


def icd_dictionary(used: pd.DataFrame | None = None) -> pd.DataFrame:
    """``d_icd_diagnoses`` rows (icd_code, icd_version, long_title) of the twin's codes, or of
    the codes in ``used`` (a ``diagnoses_icd`` frame) only."""
    rows = [(code, version, title)
            for by_version in [*CONDITION_CODES.values(), FILLER_CODES]
            for version, codes in by_version.items() for code, title in codes]
    frame = pd.DataFrame(rows, columns=["icd_code", "icd_version", "long_title"])
    if used is not None:
        keys = set(zip(used["icd_code"], used["icd_version"], strict=True))
        frame = frame[[key in keys for key in zip(frame["icd_code"], frame["icd_version"],
                                                  strict=True)]]
    return frame.sort_values(["icd_version", "icd_code"], kind="stable").reset_index(drop=True)
