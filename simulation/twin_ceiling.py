"""The twin's ceiling: how well each label can be told from the exact latent ECG parameters.

A gradient-boosted classifier (scikit-learn's HistGradientBoostingClassifier) is fitted per
label on the morphology columns of ``latent/ecg_truth.parquet`` (the parameters every waveform
was drawn from, before noise and filtering) of the train split, and scored on the test split.
Labels and splits are the store's: read from ``--store``, or built from the twin's tables by the
cohort code ``fedecg prepare`` runs (no waveform is needed, so the twin may be tables-only).
No model is trained on signals here.

    python simulation/twin_ceiling.py --patients 2000 --seed 0 --out ceiling.json
    python simulation/twin_ceiling.py --twin runs/twin --store runs/store --out ceiling.json
    python simulation/twin_ceiling.py --table before.json after.json   # markdown side by side
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from fedecg.config.data import PrepareConfig
from fedecg.data.cohort import build_cohort
from fedecg.data.prepare import MimicInput, load_input
from fedecg.data.store import COHORT_FILE, DIAGNOSIS_PREFIX, LAB_LABEL_PREFIX
from fedecg.data.synth import TRUTH_FILE, generate_twin
from fedecg.data.tables import Rejects

MIN_TEST_POSITIVES = 5
NOT_ECG = ("study_id", "subject_id", "hospital", "hospital_name", "hadm_id", "ecg_time", "age",
           "gender", "cart_id", "in_admission", "nan_runs")
"""Truth columns that are no ECG parameter; so are ``cond_``, ``coded_`` and ``latent_`` ones."""
WEAK_LABELS = ("chronic_ischemic", "hypertension", "cardiomyopathy", "ckd", "aki",
               "hyponatremia", "diabetes", "anemia", "pulmonary_embolism")
"""The nine labels with almost no ECG signature in generator version 1."""


def twin_labels(twin: Path, store: Path | None) -> pd.DataFrame:
    """Per ECG: ``study_id``, ``split`` and the ``dx_``/``abn_`` labels (NaN: unknown)."""
    if store is not None:
        return pd.read_parquet(store / COHORT_FILE)
    config = PrepareConfig()
    loaded = load_input(MimicInput(twin, twin), config, Rejects("raise"))
    return build_cohort(loaded.ecgs, loaded.tables, loaded.config.cohort)


def latent_features(twin: Path) -> pd.DataFrame:
    """The exact latent ECG parameters per ``study_id`` (categories as integer codes)."""
    truth = pd.read_parquet(twin / TRUTH_FILE)
    columns = [c for c in truth.columns
               if c not in NOT_ECG and not c.startswith(("cond_", "coded_", "latent_"))]
    features = truth[["study_id", *columns]].copy()
    for column in columns:
        kind = features[column].dtype
        if pd.api.types.is_bool_dtype(kind) or not pd.api.types.is_numeric_dtype(kind):
            features[column] = pd.Categorical(features[column]).codes
    return features


def label_auroc(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, seed: int) -> float | None:
    """Test AUROC of one label, or None when either split lacks a class (or test positives)."""
    if len(np.unique(y_train)) < 2 or min(y_test.sum(), len(y_test) - y_test.sum()) < \
            MIN_TEST_POSITIVES:
        return None
    model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05,
                                           early_stopping=False, random_state=seed)
    model.fit(x_train, y_train)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def true_conditions(twin: Path, cohort: pd.DataFrame) -> pd.DataFrame:
    """``cohort`` with each ``dx_`` label replaced by the twin's true condition at the ECG
    (``cond_``, known for every ECG): the ECG's signal without the coding's noise."""
    truth = pd.read_parquet(twin / TRUTH_FILE).set_index("study_id")
    dx = [c for c in cohort if c.startswith(DIAGNOSIS_PREFIX)]
    true = truth.reindex(cohort["study_id"])
    return cohort.assign(**{c: true[f"cond_{c.removeprefix(DIAGNOSIS_PREFIX)}"].to_numpy(float)
                            for c in dx})


def ceiling(twin: Path, store: Path | None = None, seed: int = 0,
            true_dx: bool = False) -> dict:
    """Per-label test AUROC on the latent parameters, with dx and lab macro AUROC; against the
    true conditions instead of the coded diagnoses with ``true_dx``."""
    cohort = twin_labels(twin, store)
    if true_dx:
        cohort = true_conditions(twin, cohort)
    features = latent_features(twin)
    table = cohort.merge(features, on="study_id", how="inner")
    names = [c for c in features.columns if c != "study_id"]
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    result: dict = {"twin": str(twin), "ecgs": len(table), "train": len(train),
                    "test": len(test), "features": names, "labels": {}}
    for column in [c for c in table if c.startswith((DIAGNOSIS_PREFIX, LAB_LABEL_PREFIX))]:
        tr, te = train[train[column].notna()], test[test[column].notna()]
        y_test = te[column].to_numpy(dtype=int)
        result["labels"][column] = {
            "auroc": label_auroc(tr[names].to_numpy(float), tr[column].to_numpy(dtype=int),
                                 te[names].to_numpy(float), y_test, seed),
            "test_positives": int(y_test.sum()), "test_known": len(y_test)}
    for kind, prefix, chosen in (("dx", DIAGNOSIS_PREFIX, None),
                                 ("dx_weak9", DIAGNOSIS_PREFIX, WEAK_LABELS),
                                 ("lab", LAB_LABEL_PREFIX, None)):
        scores = [v["auroc"] for k, v in result["labels"].items() if k.startswith(prefix)
                  and v["auroc"] is not None
                  and (chosen is None or k.removeprefix(prefix) in chosen)]
        result[f"{kind}_macro_auroc"] = float(np.mean(scores)) if scores else None
        result[f"{kind}_scored_labels"] = len(scores)
    return result


def markdown(results: dict[str, dict]) -> str:
    """A per-label table, one AUROC column per result (e.g. generator versions)."""
    heads = list(results)
    labels = list(dict.fromkeys(k for r in results.values() for k in r["labels"]))
    cell = lambda r, k: ("–" if r["labels"].get(k, {}).get("auroc") is None  # noqa: E731
                         else f"{r['labels'][k]['auroc']:.3f}")
    lines = [f"| label | {' | '.join(heads)} |", f"|---|{'---|' * len(heads)}"]
    lines += [f"| {k} | {' | '.join(cell(results[h], k) for h in heads)} |" for k in labels]
    for kind in ("dx", "dx_weak9", "lab"):
        values = [results[h][f"{kind}_macro_auroc"] for h in heads]
        lines.append(f"| **{kind} macro** | "
                     f"{' | '.join('–' if v is None else f'{v:.3f}' for v in values)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--twin", type=Path, help="a twin folder from `fedecg synth`")
    parser.add_argument("--store", type=Path, help="a store prepared from --twin (optional)")
    parser.add_argument("--patients", type=int, default=2000, help="without --twin: make one")
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--generator-version", type=int, help="without --twin (default: "
                        "the newest)")
    parser.add_argument("--true-dx", action="store_true", help="score the dx labels against "
                        "the twin's true conditions (cond_) instead of the coded diagnoses")
    parser.add_argument("--out", type=Path, help="JSON to write")
    parser.add_argument("--table", type=Path, nargs="+", help="only print the markdown table "
                        "of these result JSONs side by side (e.g. before and after)")
    args = parser.parse_args()
    if args.table:
        print(markdown({p.stem: json.loads(p.read_text()) for p in args.table}))
        return
    if args.out is None:
        parser.error("--out is required unless --table is given")
    if args.store is not None and args.twin is None:
        parser.error("--store needs the --twin it was prepared from")
    with tempfile.TemporaryDirectory() as scratch:
        twin = args.twin
        if twin is None:
            twin = Path(scratch) / "twin"
            version = {} if args.generator_version is None else {
                "generator_version": args.generator_version}
            generate_twin(twin, patients=args.patients, sites=args.sites, seed=args.seed,
                          tables_only=True, **version)
        result = ceiling(twin, args.store, args.seed, args.true_dx)
        readme = (twin / "README.txt").read_text()
    result |= {"patients": args.patients if args.twin is None else None, "seed": args.seed,
               "dx_labels": "true conditions" if args.true_dx else "coded diagnoses",
               "generator": readme.split("(generator version ")[1].split(",")[0]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown({args.out.stem: result}))


if __name__ == "__main__":
    main()
