"""Metrics against hand-computed values and scikit-learn; bootstrap CIs; the naive baseline."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fedecg.errors import TrainingError
from fedecg.training.metrics import (
    bootstrap_macro,
    bootstrap_resamples,
    fast_auprc,
    fast_auroc,
    label_metrics,
    naive_scores,
)

NAN = np.nan


def test_auroc_and_auprc_of_a_small_case_match_hand_values():
    y = np.array([[1.0], [0.0], [1.0], [0.0]])
    s = np.array([[0.9], [0.1], [0.4], [0.6]])
    result = label_metrics(y, s, ["a"])
    # positive-negative pairs ranked right: (.9>.1), (.9>.6), (.4>.1), not (.4>.6) → 3/4
    assert result["auroc"]["a"] == pytest.approx(0.75)
    # ranked .9(+) .6(-) .4(+) .1(-): AP = 0.5·1 + 0.5·(2/3)
    assert result["auprc"]["a"] == pytest.approx(0.5 + 1 / 3)
    assert result["macro_auroc"] == pytest.approx(0.75)


def test_unknown_labels_are_left_out_and_single_class_labels_skipped():
    y = np.array([[1, 1], [0, 1], [NAN, NAN], [1, 1], [0, NAN]], dtype=float)
    s = np.array([[0.8, 0.3], [0.2, 0.4], [0.0, 0.0], [0.7, 0.9], [0.1, 0.1]])
    result = label_metrics(y, s, ["a", "b"])
    assert result["auroc"] == {"a": 1.0}
    assert result["skipped"] == ["b"]
    assert result["macro_auroc"] == 1.0


def test_no_scorable_label_gives_no_macro():
    result = label_metrics(np.array([[1.0], [1.0]]), np.array([[0.2], [0.3]]), ["a"])
    assert result["macro_auroc"] is None and result["skipped"] == ["a"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_metrics_equal_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(200) < 0.3).astype(float)
    score = np.round(rng.random(200) + 0.3 * y, 1)  # many ties
    assert fast_auroc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert fast_auprc(y, score) == pytest.approx(average_precision_score(y, score), abs=1e-12)


@pytest.mark.parametrize("tied", [False, True])
def test_label_metrics_equal_scikit_learn_per_label_with_unknowns(tied):
    rng = np.random.default_rng(7)
    y = (rng.random((300, 4)) < [0.05, 0.2, 0.5, 0.8]).astype(float)
    y[rng.random((300, 4)) < 0.3] = NAN
    score = rng.random((300, 4)) + 0.4 * np.nan_to_num(y)
    if tied:
        score = np.round(score, 1)
    result = label_metrics(y, score, list("abcd"))
    for j, name in enumerate("abcd"):
        known = ~np.isnan(y[:, j])
        assert result["auroc"][name] == pytest.approx(
            roc_auc_score(y[known, j], score[known, j]), abs=1e-12)
        assert result["auprc"][name] == pytest.approx(
            average_precision_score(y[known, j], score[known, j]), abs=1e-12)
    assert result["macro_auroc"] == pytest.approx(np.mean(list(result["auroc"].values())))


def test_non_finite_scores_name_the_label():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(TrainingError, match=r"\['b'\].*diverged"):
        label_metrics(y, np.array([[0.2, NAN], [0.1, 0.3]]), ["a", "b"])


def test_bootstrap_keeps_only_resamples_with_both_classes():
    # One positive among 20, perfectly ranked: every valid resample has AUROC 1 exactly.
    y = np.zeros((20, 1))
    y[7] = 1
    s = np.linspace(0, 1, 20)[:, None] * 0.1
    s[7] = 1.0
    cis = bootstrap_macro(y, s, resamples=50, seed=0)
    assert cis["auroc"] == [1.0, 1.0]
    assert cis["auprc"] == [1.0, 1.0]


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    y = (rng.random((300, 3)) < 0.4).astype(float)
    s = y * 0.5 + rng.random((300, 3))
    point = label_metrics(y, s, ["a", "b", "c"])["macro_auroc"]
    first = bootstrap_macro(y, s, 100, 0.95, seed=3)
    assert first["auroc"][0] < point < first["auroc"][1]
    assert first == bootstrap_macro(y, s, 100, 0.95, seed=3)
    assert first != bootstrap_macro(y, s, 100, 0.95, seed=4)


def test_ci_contains_the_estimate_where_the_percentile_interval_did_not():
    """27 test ECGs, 33 rare labels, random scores: the resamples' AUPRC is biased upward."""
    rng = np.random.default_rng(1)
    y = (rng.random((27, 33)) < rng.uniform(0.02, 0.15, 33)).astype(float)
    y[rng.random((27, 33)) < 0.5] = np.nan
    s = rng.random((27, 33))
    point = label_metrics(y, s, [str(j) for j in range(33)])["macro_auprc"]
    values = bootstrap_resamples(y, s, 200, seed=0)[:, 1]
    plain = np.percentile(values, [2.5, 97.5])
    assert point == pytest.approx(0.184, abs=1e-3) and plain[0] > point + 0.02  # excluded
    low, high = bootstrap_macro(y, s, 200, 0.95, seed=0)["auprc"]
    assert low <= point <= high
    assert high - low == pytest.approx(plain[1] - plain[0])  # the bootstrap's own spread
    assert point - low == pytest.approx(np.median(values) - plain[0])


def test_no_resamples_means_no_ci():
    y = np.array([[1.0], [0.0]])
    assert bootstrap_macro(y, y, 0) == {"auroc": None, "auprc": None}


def test_naive_baseline_scores_training_prevalence():
    train = np.array([[1, NAN], [0, 1], [1, 0], [0, NAN]], dtype=float)
    scores = naive_scores(train, 3)
    assert scores.shape == (3, 2)
    assert scores[0].tolist() == [0.5, 0.5]
    test_y = np.array([[1, 0], [0, 0], [0, 1]], dtype=float)
    result = label_metrics(test_y, scores, ["a", "b"])
    assert result["macro_auroc"] == 0.5
    assert result["auprc"]["a"] == pytest.approx(1 / 3)  # constant score: AP = prevalence
