"""The server's checks on a site's reply, with hand-computed cases."""

from __future__ import annotations

import math

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedecg.federated import keys
from fedecg.federated.screening import (
    declared_ecgs,
    norm_outliers,
    redact_paths,
    screen_examples,
    screen_final,
    screen_scores,
)


@pytest.fixture(autouse=True)
def _identity(monkeypatch):
    """Flower builds a Message only inside a run: give it one, as a SuperNode would."""
    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def reply(metrics: dict, ecgs: int | None = 100) -> Message:
    site = {keys.SITE_NAME: "a", keys.SITE_INDEX: 0}
    if ecgs is not None:
        site[keys.SITE_ECGS] = ecgs
    content = RecordDict({keys.METRICS: MetricRecord(metrics), keys.SITE: ConfigRecord(site)})
    return Message(content, dst_node_id=1, message_type="train")


@pytest.mark.parametrize(("text", "expected"), [
    ("/data/hospital-a/store/manifest.json: unreadable", "…/manifest.json: unreadable"),
    ("site a: data-dir /srv/ecg/site-a/ has no store", "site a: data-dir …/site-a has no store"),
    ("C:\\Users\\dm\\store\\cohort.parquet: bad column", "…/cohort.parquet: bad column"),
    ("fs: 100.0 vs 250.0\n  (prepare again)", "fs: 100.0 vs 250.0 (prepare again)"),
    ("no path here", "no path here")])
def test_site_errors_travel_as_one_line_without_paths(text, expected):
    assert redact_paths(text) == expected


def test_updates_far_above_the_round_median_are_named():
    distances = {1: 1.0, 2: 1.2, 3: 50.0}  # median 1.2; 50 > 10 × 1.2
    outliers = norm_outliers(distances, 10.0)
    assert list(outliers) == [3]
    assert "41.7× the round's median 1.2" in outliers[3]
    assert norm_outliers(distances, 50.0) == {}  # 50 < 50 × 1.2
    assert norm_outliers(distances, None) == {}
    assert norm_outliers({1: 1.0, 2: 1e6}, 2.5) == {}  # two updates: max/median < 2


@pytest.mark.parametrize(("examples", "ecgs", "problem"), [
    (50.0, 100, None), (0.0, 100, None), (100.0, 100, None),
    (101.0, 100, "more than the 100 ECGs"), (2.5, 100, "whole count"),
    (math.nan, 100, "whole count"), (-1.0, 100, "whole count"), (math.inf, 100, "whole count"),
    (5.0, None, "declares no number of ECGs")])
def test_example_counts_are_capped_by_what_the_site_declared(examples, ecgs, problem):
    message = reply({keys.NUM_EXAMPLES: examples}, ecgs)
    found = screen_examples(message, declared_ecgs(message))
    assert found is None if problem is None else problem in found


@pytest.mark.parametrize(("metrics", "problem"), [
    ({keys.DIAGNOSIS_AUROC: 0.7, keys.LAB_AUROC: math.nan, keys.LOSS: 0.3}, None),
    ({keys.DIAGNOSIS_AUROC: 1.5}, "diagnosis-auroc is 1.5"),
    ({keys.LOSS: -2.0}, "loss is -2.0")])
def test_evaluate_scores_must_be_possible(metrics, problem):
    found = screen_scores(reply({keys.NUM_EXAMPLES: 1.0, **metrics}))
    assert found is None if problem is None else problem in found


@pytest.mark.parametrize(("metrics", "problem"), [
    ({"n_test": 20.0, "n_train": 60.0, "diagnosis_macro_auroc": 0.7,
      "diagnosis_macro_auroc_ci.low": 0.6, "naive:diagnosis_auroc/af": math.nan}, None),
    ({"n_test": 1e9}, "n_test is 1000000000.0"),
    ({"n_test": 10.0, "diagnosis_auroc/af": 7.0}, "expected a score in [0, 1]"),
    ({"n_test": 10.0, "diagnosis_macro_auroc_ci.high": -0.1}, "expected a score")])
def test_a_final_report_cannot_claim_more_test_ecgs_or_impossible_scores(metrics, problem):
    found = screen_final(metrics, 100, ("n_test", "n_train"))
    assert found is None if problem is None else problem in found
