"""The final federated evaluation's wire format and how the server combines the sites."""

from __future__ import annotations

import math

import pytest

from fedecg.federated.site_test_metrics import combine_sites, decode_entry, encode_entry

ENTRY = {"diagnosis_macro_auroc": 0.7, "diagnosis_macro_auroc_ci": [0.6, 0.8],
         "diagnosis_auroc": {"af": 0.7, "ckd": None}, "diagnosis_skipped": ["ckd"],
         "lab_macro_auroc": None, "lab_macro_auroc_ci": None, "lab_auroc": {},
         "lab_skipped": [], "n_test": 12}


def test_a_site_entry_travels_as_scalars_and_comes_back_whole():
    metrics = encode_entry(ENTRY)
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["diagnosis_macro_auroc_ci.low"] == 0.6
    assert math.isnan(metrics["diagnosis_auroc/ckd"]) and math.isnan(metrics["lab_macro_auroc"])
    back = decode_entry(metrics)
    assert back["diagnosis_auroc"] == {"af": 0.7, "ckd": None}
    assert back["diagnosis_skipped"] == ["ckd"] and back["lab_macro_auroc_ci"] is None
    assert {k: v for k, v in back.items() if k != "lab_auroc"} == {
        k: v for k, v in ENTRY.items() if k not in ("lab_auroc", "lab_skipped")}
    assert decode_entry(encode_entry(ENTRY, "naive:") | metrics, "naive:")["n_test"] == 12


def test_sites_combine_by_test_examples_with_a_normal_ci_of_the_mean():
    sites = {"a": {"diagnosis_macro_auroc": 0.6, "diagnosis_macro_auroc_ci": [0.5, 0.7],
                   "diagnosis_auroc": {"af": 0.6, "ckd": None}, "n_test": 10},
             "b": {"diagnosis_macro_auroc": 0.8, "diagnosis_macro_auroc_ci": [0.7, 0.9],
                   "diagnosis_auroc": {"af": 0.8, "ckd": 0.9}, "n_test": 30},
             "empty": {"n_test": 0}}
    combined = combine_sites(sites, ci=0.95)
    assert combined["diagnosis_macro_auroc"] == pytest.approx(0.75)
    half = math.hypot(0.25 * 0.1, 0.75 * 0.1)  # z·se: each site's half-width is z·se_i
    assert combined["diagnosis_macro_auroc_ci"] == pytest.approx([0.75 - half, 0.75 + half])
    assert combined["diagnosis_auroc"] == pytest.approx({"af": 0.75, "ckd": 0.9})
    assert combined["n_test"] == 40 and combined["sites_scored"] == 2
    assert combined["diagnosis_skipped"] == []
