"""ECG effects of nine weakly visible conditions, from the clinical literature (generator v2).

Decided from the literature BEFORE any measurement of the twin and never tuned to a result.
Version 1 gave these labels almost no ECG signature. Every effect is partial (a fraction of the
patients with the condition), noisy, and shared with other conditions, as on real ECGs: none
reveals its label. "Judgement" marks a size chosen by us within the cited range.

=================== ====================================================== ====================
label               effect in v2 (size; prevalence among the condition)    source
=================== ====================================================== ====================
hypertension        ECG-LVH voltage (QRS x1.45, axis -15 deg, as v1) in    Pewsner D et al.,
                    15% of hypertensives (v1: 30%). Median Sokolow-Lyon    BMJ 2007;335:711
                    sensitivity 21% for echo-LVH, which ~36% of            (sens.); Cuspidi C
                    hypertensives have; 15% is our judgement from both.    et al., J Hum
                    LV strain (lateral ST depression + asymmetric T        Hypertens 2012;26:
                    inversion, T -0.10..-0.30 mV, ST 40% of it) in 11% of  343 (echo-LVH);
                    those with ECG-LVH.                                    Okin PM et al.,
                                                                           Circulation 2006;
                                                                           113:67 (strain
                                                                           10.6% of ECG-LVH)
chronic_ischemic    Q waves in a territory in 50% (v1, kept). Ischemic     Gibbons RJ et al.,
                    ST-T (lateral T inversion -0.05..-0.20 mV, ST 40% of   ACC/AHA chronic
                    it) in 20%, so ~40% have a normal ECG. The guideline   stable angina
                    says the resting ECG is normal in about half; 20% is   guideline, JACC
                    our judgement.                                         1999;33:2092
cardiomyopathy      Left bundle branch block in 25% (QRS +38..60 ms, as    Baldasseroni S et
                    v1's LBBB). v1's QRS +12 ms and BNP-driven low         al., Am Heart J
                    voltage kept.                                          2002;143:398 (LBBB
                                                                           25.2% of 5,517 HF
                                                                           outpatients, 36%
                                                                           with dilated CM)
ckd                 ECG-LVH (as above, with strain in 11% of it) in 15%;   Covic AC et al.,
                    QTc +10 ms in all. LVH by ECG 13-42% by criterion in   Ann Noninvasive
                    dialysis patients, less in earlier stages (15% is our  Electrocardiol
                    judgement); QT lengthens as renal function falls (the  2013;18:188;
                    size is our judgement).                                Stewart GA et al.,
                                                                           Kidney Int 2005;
                                                                           67:217
aki                 None beyond v1's potassium-driven T, QRS and P         Montague BT et al.,
                    changes. The ECG is insensitive to hyperkalemia (any   Clin J Am Soc
                    change in 52% of K >= 6, strict criteria 18%);         Nephrol 2008;3:324
                    nothing specific to AKI is reported.
hyponatremia        None added: the literature reports no consistent ECG   (none)
                    sign of hyponatremia. v1's small sodium-driven rate
                    and T nudges are kept for version 1's sake.
diabetes            QTc +8 ms in all (QTc > 440 ms in 25.8% of type 2      Veglio M et al.,
                    diabetics by Bazett; 3.0% > 450 ms with a linear       J Intern Med 2002;
                    correction: +8 ms is our judgement between them).      251:317; Cox AJ et
                    Cardiac autonomic neuropathy in 20% (reported ~17%;    al., Diabetes Care
                    20% our judgement): resting rate +15 bpm (90-100 bpm   2014;37:1454;
                    reported) and sinus arrhythmia (RR variation) x0.4     Vinik AI et al.,
                    (its loss is reported; x0.4 is our judgement).
                                                                           Diabetes Care 2003;
                                                                           26:1553; Ziegler D
                                                                           et al., Diabet Med
                                                                           1992;9:806 (CAN
                                                                           ~17%)
anemia              v1's rate rise (+2.2 bpm per g/dL below 13.5) kept.    J Clin Diagn Res
                    ST depression / T changes (lateral, T -0.05..-0.15 mV) 2014;8(4):CC04,
                    in 25% per g/dL below 7 g/dL, at most 75% (50-75% at   doi 10.7860/JCDR/
                    Hb < 5 g/dL, none at 7-8 g/dL).                        2014/8966.4202
pulmonary_embolism  v1's +15 bpm kept (tachycardia > 100 bpm in 28.8% of   Marchick MR et al.,
                    PE vs 15.7% without). S1Q3T3 in 8.5% (with axis +30    Ann Emerg Med 2010;
                    deg, our judgement); T inversion V1-V3 (-0.10..-0.35   55:331 (6,049 ED
                    mV) in 10.5%; incomplete RBBB in 4.8% (drawn as the    patients, 354 PE)
                    twin's RBBB pattern: QRS +38..60 ms).
=================== ====================================================== ====================

Chronic effects are traits of the patient (the same on each of their ECGs); PE's are drawn per
ECG. The draws come from their own random stream, so version 1's streams are untouched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedecg.data.synth.morphology import flags, qt_ms

EFFECTS_VERSION = 2
"""The first generator version with these effects."""
LITERATURE_STREAM = 5
LITERATURE_COLUMNS = ("lateral_stt_mv", "rv_strain_mv", "s1q3t3")
"""Morphology the effects add: lateral ST-T depth (mV, <= 0: T inversion, ST depression 40% of
it), right precordial T inversion depth (mV, <= 0), and the S1Q3T3 pattern."""
LVH_KEPT = 0.5          # of v1's ECG-LVH (30% of hypertensives): 15%
CKD_LVH = 0.15
STRAIN_OF_LVH = 0.11
ISCHEMIC_STT = 0.20
CARDIOMYOPATHY_LBBB = 0.25
DIABETES_QTC_MS = 8.0
CKD_QTC_MS = 10.0
AUTONOMIC_NEUROPATHY = 0.20
PE_S1Q3T3 = 0.085
PE_RV_STRAIN = 0.105
PE_RBBB = 0.048


def _per_patient(rng: np.random.Generator, patient: np.ndarray, k: int) -> np.ndarray:
    """``k`` uniform draws per patient, repeated on each of their ECGs (ECGs x k)."""
    return rng.random((int(patient.max()) + 1 if len(patient) else 0, k))[patient]


def _lvh_and_repolarization(f: pd.DataFrame, m: pd.DataFrame, p: np.ndarray,
                            e: np.ndarray) -> np.ndarray:
    """ECG-LVH by the table (in place on ``m``); returns the lateral ST-T depth per ECG."""
    old_lvh = flags(f, "lvh")
    lvh = (old_lvh & (p[:, 0] < LVH_KEPT)) | (flags(f, "ckd") & (p[:, 1] < CKD_LVH))
    m["qrs_scale"] *= np.where(lvh, 1.45, 1.0) / np.where(old_lvh, 1.45, 1.0)
    m["axis_deg"] = np.clip(m["axis_deg"] - 15.0 * (lvh.astype(float) - old_lvh), -90, 150)
    lateral = np.where(lvh & (p[:, 2] < STRAIN_OF_LVH), -(0.10 + 0.20 * p[:, 3]), 0.0)
    ischemic = flags(f, "chronic_ischemic") & (p[:, 4] < ISCHEMIC_STT)
    lateral = np.minimum(lateral, np.where(ischemic, -(0.05 + 0.15 * p[:, 5]), 0.0))
    severe_anemia = e[:, 0] < np.clip(0.25 * (7.0 - f["hemoglobin"].to_numpy()), 0.0, 0.75)
    return np.minimum(lateral, np.where(severe_anemia, -(0.05 + 0.10 * e[:, 4]), 0.0))


def _new_blocks(f: pd.DataFrame, m: pd.DataFrame, p: np.ndarray, e: np.ndarray) -> None:
    """Cardiomyopathy's LBBB and PE's RBBB where no block was drawn (in place on ``m``)."""
    free = m["bbb"].to_numpy() == "none"
    lbbb = free & flags(f, "cardiomyopathy") & (p[:, 6] < CARDIOMYOPATHY_LBBB)
    rbbb = free & ~lbbb & flags(f, "pulmonary_embolism") & (e[:, 3] < PE_RBBB)
    old_qrs = m["qrs_ms"].to_numpy()
    qrs = np.clip(old_qrs + np.where(lbbb | rbbb, 38.0 + 22.0 * e[:, 5], 0.0), 60.0, 210.0)
    m["qtc_ms"] += 0.35 * (np.maximum(0.0, qrs - 100.0) - np.maximum(0.0, old_qrs - 100.0))
    m["qrs_ms"] = qrs
    m["bbb"] = np.where(lbbb, "lbbb", np.where(rbbb, "rbbb", m["bbb"].to_numpy()))


def apply_literature_effects(rng: np.random.Generator, f: pd.DataFrame,
                             morphology: pd.DataFrame) -> pd.DataFrame:
    """``morphology`` (``compute_morphology`` of ``f``) with the table's effects and the
    ``LITERATURE_COLUMNS`` added; ``f`` holds conditions, latent labs and ``patient``."""
    m = morphology.copy()
    p = _per_patient(rng, f["patient"].to_numpy(), 8)
    e = rng.random((len(f), 7))
    m["lateral_stt_mv"] = _lvh_and_repolarization(f, m, p, e)
    _new_blocks(f, m, p, e)
    diabetes = flags(f, "diabetes")
    neuropathy = diabetes & (p[:, 7] < AUTONOMIC_NEUROPATHY)
    m["qtc_ms"] = np.clip(m["qtc_ms"] + DIABETES_QTC_MS * diabetes + CKD_QTC_MS * flags(f, "ckd"),
                          320.0, 620.0)
    m["hr_bpm"] = np.clip(m["hr_bpm"] + 15.0 * neuropathy, 38.0, 165.0)
    sinus = m["rhythm"].to_numpy() == "sinus"
    m["rr_cv"] = np.where(neuropathy & sinus, 0.4 * m["rr_cv"], m["rr_cv"])
    m["qt_ms"] = qt_ms(m["qtc_ms"].to_numpy(), m["hr_bpm"].to_numpy())
    pe = flags(f, "pulmonary_embolism")
    m["s1q3t3"] = pe & (e[:, 1] < PE_S1Q3T3)
    m["axis_deg"] = np.clip(m["axis_deg"] + 30.0 * m["s1q3t3"], -90, 150)
    m["rv_strain_mv"] = np.where(pe & (e[:, 2] < PE_RV_STRAIN), -(0.10 + 0.25 * e[:, 6]), 0.0)
    return m
