"""Real hospital data as it comes: no labs, no ECG times, SNOMED or statement codes, labels a
site does not record (unknown, never negative). Uses the 50 real PhysioNet Challenge 2021
records in ../shared/data (read in place) and small generic sites built in tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from builders.raw_sites import make_challenge_site, make_generic_site

from fedecg.config.data import CohortConfig, PrepareConfig
from fedecg.data.cohort import build_cohort
from fedecg.data.diagnoses import (
    DEFAULT_DIAGNOSIS_LABELS,
    ECG_DIAGNOSIS_LABELS,
    recorded_labels,
)
from fedecg.data.prepare import SiteInput, load_input
from fedecg.data.tables import Rejects
from fedecg.errors import ConfigError, TableError
from fedecg.run_folder import RunFolder

CHALLENGE = "physionet-challenge-2021-sample"


def _cohort(site: Path, **cohort: object) -> pd.DataFrame:
    loaded = load_input(SiteInput(site), PrepareConfig(cohort=CohortConfig(**cohort)),
                        Rejects("raise"))
    return build_cohort(loaded.ecgs, loaded.tables, loaded.config.cohort).set_index("study_id")


def _header_codes(records: Path) -> dict[str, set[str]]:
    codes = {}
    for header in records.glob("*.hea"):
        line = next(ln for ln in header.read_text().splitlines() if ln.startswith("# Dx:"))
        codes[header.stem] = {c.strip() for c in line.split(":", 1)[1].split(",")}
    return codes


def test_challenge_headers_give_snomed_labels_per_ecg(tmp_path: Path, shared_data: Path) -> None:
    records = shared_data / CHALLENGE
    cohort = _cohort(make_challenge_site(tmp_path, records))
    codes = _header_codes(records)
    assert len(cohort) == 50 and cohort["ecg_time"].isna().all()
    for label in ECG_DIAGNOSIS_LABELS:  # every ECG: 1 exactly when its header has a code
        expected = pd.Series({k: float(bool(v & set(label.snomed))) for k, v in codes.items()})
        assert np.array_equal(cohort[f"dx_{label.name}"],
                              expected.reindex(cohort.index)), label.name
    assert cohort["dx_sinus_tachycardia"].sum() == 23  # 427084000, counted in the README
    assert cohort.loc["E07500", "dx_atrial_enlargement"] == 1  # 67741000119109
    assert cohort.loc["E07500", "age"] == 78 and cohort.loc["E07500", "sex_male"] == 1
    assert set(cohort["source"]) == {"georgia", "ptb-xl", "chapman-ningbo"}
    assert cohort.filter(like="abn_").isna().all().all()  # no labs: unknown, not negative


def test_labels_without_codes_in_the_sites_vocabulary_are_unknown(
        tmp_path: Path, shared_data: Path) -> None:
    site = make_challenge_site(tmp_path, shared_data / CHALLENGE)
    (site / "site.yaml").write_text("header_diagnoses: snomed\n")  # default (clinical) labels
    cohort = _cohort(site)
    known = [c for c in cohort.filter(like="dx_") if cohort[c].notna().any()]
    assert known == ["dx_atrial_fibrillation", "dx_conduction_disease"]
    assert cohort["dx_heart_failure"].isna().all() and cohort["dx_ckd"].isna().all()
    conduction = set(DEFAULT_DIAGNOSIS_LABELS[5].snomed)
    assert cohort["dx_conduction_disease"].sum() == sum(
        bool(codes & conduction) for codes in _header_codes(shared_data / CHALLENGE).values())
    assert cohort["dx_conduction_disease"].sum() == 3  # 59118001 x2, 713426002 x1
    declared = _cohort(site, recorded_labels=["atrial_fibrillation"])
    assert declared["dx_conduction_disease"].isna().all()
    assert (declared["dx_atrial_fibrillation"] == 0).all()
    with pytest.raises(ConfigError, match=r"recorded_labels: \['afib'\] are not labels"):
        _cohort(site, recorded_labels=["afib"])


def test_recorded_labels_by_vocabulary() -> None:
    assert "lvh" not in recorded_labels(ECG_DIAGNOSIS_LABELS, {"icd10", "icd9"})
    assert "lvh" in recorded_labels(ECG_DIAGNOSIS_LABELS, {"snomed"})
    assert "axis_deviation" not in recorded_labels(ECG_DIAGNOSIS_LABELS, {"statement"})


def test_encounter_rules_without_times(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No encounter → unknown; an encounter listed without codes → negative; the ECG's own
    statements come first, then the encounter its row names."""
    site = make_generic_site(tmp_path)
    (site / "labs.csv").unlink()
    (site / "vitals.csv").unlink()
    (site / "ecgs.csv").write_text("ecg_id,patient_id,record_path,encounter_id\n"
                                   "E1,P1,ecg/e1,V1\nE2,P1,ecg/e2,V9\nE3,P2,ecg/e3,V2\n")
    (site / "diagnoses.csv").write_text(
        "patient_id,encounter_id,ecg_id,code,code_system\n"
        "P1,V1,,I48.0,icd10\n"          # E1's encounter: AF by ICD-10
        "P1,V9,,,icd10\n"               # E2's encounter, listed without codes: all negative
        "P2,V2,,I50.9,icd10\n"          # E3's encounter ...
        "P2,,E3,afib,statement\n")      # ... but E3's own statements come first
    (site / "site.yaml").write_text("diagnosis_labels: ecg\n")
    with caplog.at_level(logging.WARNING, logger="fedecg"):
        cohort = _cohort(site)
    assert caplog.text.count("3 of 3 ECGs have no time: lab and vital linkage is off") == 1
    assert cohort.loc["E1", "dx_atrial_fibrillation"] == 1
    assert cohort.loc["E2"].filter(like="dx_").dropna().eq(0).all()
    assert cohort.loc["E3", "dx_atrial_fibrillation"] == 1
    assert cohort.loc["E3", "stay_kind"] == "ecg"
    assert np.isnan(cohort.loc["E1", "dx_axis_deviation"])  # no ICD or statement code: unknown
    assert cohort.loc["E1", "dx_sinus_rhythm"] == 0  # statements are used at this site
    (site / "ecgs.csv").write_text("ecg_id,patient_id,record_path\nE1,P1,ecg/e1\n")
    assert cohort.index.size == 3 and _cohort(site).filter(like="dx_").isna().all().all()


def test_an_empty_lab_panel_is_refused_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cohort\.lab_panel is empty.*leave it null"):
        _cohort(make_generic_site(tmp_path), lab_panel=[])


def test_site_declaration_rejects_unknown_keys(tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    (site / "site.yaml").write_text("labels: ecg\n")
    with pytest.raises(ConfigError, match=r"site.yaml: unknown key\(s\) \['labels'\]"):
        _cohort(site)
    (site / "site.yaml").write_text("diagnosis_labels: ecg\n")
    assert "dx_lvh" in _cohort(site) and "dx_lvh" not in _cohort(site, diagnosis_labels="clinical")


@pytest.mark.slow
def test_challenge_site_end_to_end(tmp_path: Path, shared_data: Path) -> None:
    """validate → prepare → train → predict → explain → simulate (3 natural sites) on the 50
    Challenge records, without labs or times; tiny settings (the defaults differ only in size)."""
    from typer.testing import CliRunner

    from fedecg.cli import app

    runner = CliRunner()
    site = make_challenge_site(tmp_path, shared_data / CHALLENGE)
    store, run = tmp_path / "store", tmp_path / "run"
    checked = runner.invoke(app, ["validate", str(site)])
    assert checked.exit_code == 0 and "warning: no labs" in checked.output
    assert runner.invoke(app, ["prepare", "--site-dir", str(site), "--out", str(store)]
                         ).exit_code == 0
    tiny = {"crop_samples": 100, "batch_size": 16, "threads": 1,
            "encoder": {"stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "groups": 4},
            "clinical": {"hidden": 16, "embedding_dim": 16},
            "pretrain": {"projection_dim": 16, "epochs": 1}, "lab": {"epochs": 1},
            "diagnosis": {"epochs": 2}, "eval": {"crops": 1, "bootstrap": 0}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({**tiny, "models": ["transfer"]}))
    trained = runner.invoke(app, ["train", "--store", str(store), "--out", str(run),
                                  "--config", str(tmp_path / "train.yaml")])
    assert trained.exit_code == 0, trained.output
    record = str(shared_data / CHALLENGE / "HR06000")
    model = str(RunFolder(run).model)
    predicted = runner.invoke(app, ["predict", "--model", model, "--wfdb", record])
    payload = json.loads(predicted.output)
    assert payload["lab_abnormalities"] == {} and len(payload["not_learned"]["lab"]) == 33
    assert "sinus_tachycardia" in payload["diagnoses"]
    explained = runner.invoke(app, ["explain", "--model", model, "--wfdb", record,
                                    "--out", str(tmp_path / "why")])
    assert explained.exit_code == 0, explained.output
    study = {"data": {"store": str(store)}, "train": tiny,
             "partition": {"method": "natural", "column": "source", "num_sites": 3},
             "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    simulated = runner.invoke(app, ["simulate", "--config", str(tmp_path / "study.yaml"),
                                    "--out", str(tmp_path / "sim")])
    assert simulated.exit_code == 0, simulated.output
    assert "the lab stage is skipped" in " ".join(simulated.output.split())
    lines = [json.loads(x) for x in RunFolder(tmp_path / "sim").metrics.read_text().splitlines()]
    assert {x["site"] for x in lines if x["kind"] == "train"} == {"site0", "site1", "site2"}
    assert "lab" not in {x["stage"] for x in lines}


def test_clinical_encoder_masks_groups_missing_for_every_row() -> None:
    """A site without labs or vitals: those columns are NaN in every training row; they get
    mean 0 / std 1, their mask bits are all 1, and embeddings stay finite and depend only on
    what is known (age, sex)."""
    import torch

    from fedecg.models.clinical import ClinicalEncoder

    rng = np.random.default_rng(0)
    features = np.full((40, 6), np.nan)  # age, sex_male, then four never-measured columns
    features[:, 0] = rng.normal(60, 10, 40)
    features[:, 1] = rng.integers(0, 2, 40)
    encoder = ClinicalEncoder(6, hidden=8, layers=1, embedding_dim=4).eval()
    encoder.fit_normalization(features)
    assert encoder.mean[2:].eq(0).all() and encoder.std[2:].eq(1).all()
    inputs = encoder.inputs(torch.tensor(features, dtype=torch.float32))
    assert torch.isfinite(inputs).all() and inputs[:, 8:].eq(1).all()
    same = torch.tensor(features[:2], dtype=torch.float32)
    same[1, :2] = same[0, :2]
    embedded = encoder(same)
    assert torch.isfinite(embedded).all() and torch.equal(embedded[0], embedded[1])
    assert torch.isfinite(encoder(torch.full((1, 6), float("nan")))).all()


def test_the_client_readme_example_site(tmp_path: Path) -> None:
    """client/example_site: the runnable example of client/README.md, labels as it says."""
    site = Path(__file__).resolve().parents[2] / "client" / "example_site"
    cohort = _cohort(site)
    assert cohort["dx_atrial_fibrillation"].to_dict() == {
        "E01": 0, "E02": 1, "E03": 0, "E04": 0, "E05": 1, "E06": 0, "E07": 0, "E08": 1,
        "E09": 0, "E10": 1, "E11": 0, "E12": 0}
    assert cohort.loc["E07", "dx_sinus_tachycardia"] == 1  # R00.0
    assert cohort.loc["E03", "dx_sinus_tachycardia"] == 1  # statement STACH
    assert cohort.loc["E04"].filter(like="dx_").dropna().eq(0).all()  # listed without codes
    assert cohort.loc[["E09", "E10", "E11", "E12"], "stay_kind"].eq("ecg").all()
    assert cohort.filter(like="abn_").isna().all().all() and cohort["ecg_time"].isna().all()


def test_diagnosis_rows_that_link_nothing_or_name_no_vocabulary_are_bad_rows(
        tmp_path: Path) -> None:
    site = make_generic_site(tmp_path)
    (site / "diagnoses.csv").write_text("patient_id,encounter_id,code,code_system\n"
                                        "P1,V1,I50.9,icd10\nP1,,I48.0,icd10\nP2,V2,X,loinc\n")
    with pytest.raises(TableError, match=r"line 4, column 'code_system': 'loinc' is not icd9, "
                                         r"icd10, snomed or statement"):
        _cohort(site)
    (site / "diagnoses.csv").write_text("patient_id,encounter_id,code,code_system\n"
                                        "P1,V1,I50.9,icd10\nP1,,I48.0,icd10\n")
    with pytest.raises(TableError, match=r"line 3, column 'ecg_id': empty is not an ecg_id, an "
                                         r"encounter_id, or start_time and end_time"):
        _cohort(site)
    (site / "diagnoses.csv").write_text("patient_id,encounter_id,diagnosis\nP1,V1,I50.9\n")
    with pytest.raises(TableError, match="no code column; expected 'code'"):
        _cohort(site)
