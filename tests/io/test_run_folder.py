"""The run folder: its summary read back as written, bad summaries as one line, its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedecg.deploy.submit import rounds_done
from fedecg.errors import InputFileError, TableError
from fedecg.run_folder import RunFolder

ENTRY = {"diagnosis_macro_auroc": 0.71, "diagnosis_macro_auroc_ci": [0.6, 0.8],
         "lab_macro_auroc": None, "lab_macro_auroc_ci": None, "n_test": 30,
         "diagnosis_auroc": {"atrial_fibrillation": 0.71}, "diagnosis_skipped": ["ckd"]}
TRAINED = {"transfer": {**ENTRY, "per_store": {"site-a": ENTRY}},
           "naive": {**ENTRY, "diagnosis_macro_auroc": 0.5, "per_store": {"site-a": ENTRY}},
           "seed": 3, "models": ["transfer"], "stores": [{"path": "/s/a", "site": "site-a"}]}
SEED = {"federated": {"transfer": ENTRY}, "sites": {"transfer": {"site0": ENTRY, "site1": None}},
        "pooled": {"transfer": {**ENTRY, "per_store": {"site0": ENTRY}}},
        "local_only": {"transfer": {"sites": {"site0": ENTRY, "site1": None},
                                    "diagnosis_macro_auroc": 0.6,
                                    "diagnosis_macro_auroc_own_site": 0.65}},
        "naive": ENTRY}
STUDY = {**SEED, "seeds": [0, 1], "model_names": ["transfer"], "by_seed": {"0": SEED, "1": SEED},
         "models": {"transfer · federated": ENTRY, "naive": ENTRY},
         "partition": {"method": "iid", "sites": {"site0": {"patients": 3}}}}


@pytest.mark.parametrize("written", [TRAINED, STUDY], ids=["train", "study"])
def test_a_summary_reads_back_exactly_as_written(tmp_path: Path, written: dict):
    folder = RunFolder(tmp_path)
    folder.write_summary(written)
    assert folder.summary.read_text() == json.dumps(written, indent=2) + "\n"  # as before
    assert folder.summary.stat().st_mode & 0o777 == 0o640
    summary = folder.read_summary()
    assert summary.as_dict() == written
    assert summary.is_study == (written is STUDY)
    expected = ["transfer · federated", "naive"] if written is STUDY else ["transfer", "naive"]
    assert list(summary.model_entries()) == expected


@pytest.mark.parametrize(("content", "message"), [
    ("{oops", r"summary\.json: not valid JSON"),
    ("[1, 2]", r"summary\.json: holds a list; expected an object"),
    (json.dumps({**TRAINED, "transfer": {"diagnosis_macro_auroc": "high"}}),
     r"summary\.json: field transfer\.diagnosis_macro_auroc: .*\(found \"high\"\)"),
    (json.dumps({**STUDY, "by_seed": {"0": {"sites": {}}}}),
     r"summary\.json: field by_seed\.0\.federated: Field required"),
])
def test_a_summary_that_is_not_one_is_one_line_naming_file_and_field(tmp_path: Path,
                                                                     content: str, message: str):
    folder = RunFolder(tmp_path)
    folder.summary.write_text(content)
    with pytest.raises(TableError, match=message) as caught:
        folder.read_summary()
    assert "\n" not in str(caught.value)


def test_a_missing_summary_and_an_invalid_one_to_write(tmp_path: Path):
    folder = RunFolder(tmp_path)
    with pytest.raises(InputFileError, match=r"summary\.json not found"):
        folder.read_summary()
    with pytest.raises(TableError, match=r"field seeds\.0"):
        folder.write_summary({**STUDY, "seeds": ["first"]})
    assert not folder.summary.exists()


def test_federated_runs_are_found_by_seed_and_model_and_rounds_counted(tmp_path: Path):
    study = RunFolder(tmp_path)
    done = {"kind": "evaluate", "site": "all", "round": 1}
    for seed, model, rounds in ((0, "transfer", 2), (1, "transfer", 1), (0, "signal-only", 0)):
        run = study.federated_run(seed, model)
        run.path.mkdir(parents=True)
        lines = [{**done, "round": r + 1} for r in range(rounds)] + [{"kind": "train"}]
        run.metrics.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "seed-x" / "transfer" / "federated").mkdir(parents=True)  # not a seed
    assert list(study.federated_runs()) == [(0, "signal-only"), (0, "transfer"), (1, "transfer")]
    assert rounds_done(tmp_path) == 3
