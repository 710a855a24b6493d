"""Generator version 2: the literature's ECG effects of nine conditions, at their stated sizes,
while version 1 stays byte for byte what it was."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.federated import SynthesizeConfig
from fedecg.data.synth import GENERATOR_VERSIONS, TRUTH_FILE, generate_twin
from fedecg.data.synth.assemble import build_world
from fedecg.data.synth.literature_effects import (
    LITERATURE_COLUMNS,
    apply_literature_effects,
)
from fedecg.data.synth.morphology import MORPHOLOGY_COLUMNS
from fedecg.data.synth.sites import make_sites
from fedecg.data.synth.waveform import synthesize_record

runner = CliRunner()
NINE = ("chronic_ischemic", "hypertension", "cardiomyopathy", "ckd", "aki", "hyponatremia",
        "diabetes", "anemia", "pulmonary_embolism")
# sha256 of every file but the parquet truth (its bytes name the pyarrow version) of
# generate_twin(patients=6, sites=2, seed=3, generator_version=1), written by the generator as it
# was before version 2 existed: WFDB records, tables and README.txt.
V1_FILES_SHA256 = "dad7eb320c43334218a100cf46a95147bee84db8b99760438a1c455d1f32c829"


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix != ".parquet"):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_version_1_writes_the_same_bytes_as_before_version_2(tmp_path: Path):
    generate_twin(tmp_path / "v1", patients=6, sites=2, seed=3, generator_version=1)
    assert _digest(tmp_path / "v1") == V1_FILES_SHA256
    assert "generator version 1," in (tmp_path / "v1" / "README.txt").read_text()


@pytest.fixture(scope="module")
def world():
    """A version 1 world of a few thousand ECGs; effects are applied to copies of its ECGs."""
    return build_world(1500, make_sites(3, 11), 11, generator_version=1)


def _effects(world, **changes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Morphology before and after the effects, every ECG given the nine conditions False
    (and hemoglobin 14 g/dL) except ``changes`` (column values)."""
    frame = world.ecgs.assign(**{name: False for name in NINE}, lvh=False, hemoglobin=14.0)
    frame = frame.assign(**changes)
    before = frame[list(MORPHOLOGY_COLUMNS)]
    return before, apply_literature_effects(np.random.default_rng(0), frame, before)


def _share(flags: np.ndarray) -> float:
    return float(np.mean(flags))


def test_hypertension_keeps_half_of_v1_lvh_and_strain_in_11_percent_of_it(world):
    before, after = _effects(world, hypertension=True, lvh=True)
    kept = np.isclose(after["qrs_scale"], before["qrs_scale"])
    assert 0.43 < _share(kept) < 0.57
    assert np.allclose(after["qrs_scale"][~kept], before["qrs_scale"][~kept] / 1.45)
    strain = after["lateral_stt_mv"].to_numpy() < 0
    assert not strain[~kept].any() and 0.06 < _share(strain[kept]) < 0.16
    assert after["lateral_stt_mv"][strain].between(-0.30, -0.10).all()


def test_ckd_gives_lvh_in_15_percent_and_qtc_10_ms_longer(world):
    before, after = _effects(world, ckd=True)
    assert 0.11 < _share(after["qrs_scale"] > before["qrs_scale"] * 1.4) < 0.19
    assert (after["qtc_ms"] - before["qtc_ms"]).median() == pytest.approx(10.0)


def test_chronic_ischemia_gives_lateral_st_t_in_a_fifth(world):
    _, after = _effects(world, chronic_ischemic=True)
    depth = after["lateral_stt_mv"]
    assert 0.15 < _share(depth < 0) < 0.25 and depth[depth < 0].between(-0.20, -0.05).all()


def test_cardiomyopathy_gives_lbbb_in_a_quarter(world):
    before, after = _effects(world, cardiomyopathy=True)
    free = (before["bbb"] == "none").to_numpy()
    new = after["bbb"].to_numpy()[free] == "lbbb"
    assert 0.2 < _share(new) < 0.3
    assert (after["qrs_ms"].to_numpy()[free][new] - before["qrs_ms"].to_numpy()[free][new]
            ).min() >= 37.9


def test_diabetes_lengthens_qtc_and_a_fifth_have_autonomic_neuropathy(world):
    before, after = _effects(world, diabetes=True)
    assert (after["qtc_ms"] - before["qtc_ms"]).median() == pytest.approx(8.0)
    faster = (after["hr_bpm"] - before["hr_bpm"]).to_numpy() > 10
    assert 0.15 < _share(faster) < 0.25
    sinus = (before["rhythm"] == "sinus").to_numpy() & faster
    assert np.allclose(after["rr_cv"][sinus], 0.4 * before["rr_cv"][sinus])


def test_severe_anemia_brings_st_t_changes_mild_anemia_none(world):
    _, severe = _effects(world, anemia=True, hemoglobin=5.0)
    _, mild = _effects(world, anemia=True, hemoglobin=7.5)
    assert 0.45 < _share(severe["lateral_stt_mv"] < 0) < 0.55
    assert not (mild["lateral_stt_mv"] < 0).any()


def test_pulmonary_embolism_s1q3t3_right_strain_and_rbbb_at_marchick_rates(world):
    before, after = _effects(world, pulmonary_embolism=True)
    s1q3t3 = after["s1q3t3"].to_numpy()
    assert 0.06 < _share(s1q3t3) < 0.11
    assert 0.08 < _share(after["rv_strain_mv"] < 0) < 0.13
    free = (before["bbb"] == "none").to_numpy()
    assert 0.03 < _share(after["bbb"].to_numpy()[free] == "rbbb") < 0.07
    turned = (after["axis_deg"] - before["axis_deg"]).to_numpy()[s1q3t3 & (before["axis_deg"]
                                                                          < 120).to_numpy()]
    assert np.allclose(turned, 30.0)


@pytest.mark.parametrize("condition", ["aki", "hyponatremia"])
def test_aki_and_hyponatremia_get_no_effect_of_their_own(world, condition):
    before, after = _effects(world, **{condition: True})
    assert after[list(MORPHOLOGY_COLUMNS)].equals(before)
    assert not (after[list(LITERATURE_COLUMNS)].astype(float) != 0).any().any()


def test_version_2_changes_only_the_ecg_parameters(world):
    other = build_world(1500, make_sites(3, 11), 11, generator_version=2)
    same = [c for c in world.ecgs if c not in MORPHOLOGY_COLUMNS]
    assert other.ecgs[same].equals(world.ecgs[same])
    assert not other.ecgs[list(MORPHOLOGY_COLUMNS)].equals(world.ecgs[list(MORPHOLOGY_COLUMNS)])
    assert set(LITERATURE_COLUMNS) <= set(other.ecgs) and not set(LITERATURE_COLUMNS) & set(
        world.ecgs)


def test_effects_reach_the_waveform(world):
    row = dict(world.ecgs[list(MORPHOLOGY_COLUMNS)].iloc[0]) | {
        "precordial_gain": 1.0, "rhythm": "sinus", "bbb": "none", "st_mv": 0.0,
        "q_territory": "none"}
    site = make_sites(1, 0)[0]

    def leads(**extra) -> np.ndarray:
        return synthesize_record(row | extra, site, np.random.default_rng(0), nan_runs=False)[0]

    plain = leads()
    assert np.array_equal(plain, leads(lateral_stt_mv=0.0, rv_strain_mv=0.0, s1q3t3=False))
    lateral = leads(lateral_stt_mv=-0.3) - plain
    right = leads(rv_strain_mv=-0.3) - plain
    s1q3t3 = leads(s1q3t3=True) - plain
    v1, v6, lead_iii = 6, 11, 2
    assert lateral[v6].min() < -0.2 and lateral[v1].max() > 0.03
    assert right[v1].min() < -0.2 and abs(right[v6]).max() < abs(right[v1]).max()
    assert s1q3t3[lead_iii].min() < -0.1 and s1q3t3[0].min() < -0.1


def test_twin_v2_truth_and_readme_name_the_new_parameters(tmp_path: Path):
    generate_twin(tmp_path / "v2", patients=8, sites=2, seed=1, tables_only=True)
    truth = pd.read_parquet(tmp_path / "v2" / TRUTH_FILE)
    assert set(LITERATURE_COLUMNS) <= set(truth.columns)
    assert "generator version 2," in (tmp_path / "v2" / "README.txt").read_text()


def test_unknown_generator_version_is_one_clear_line(tmp_path: Path):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "t"), "--patients", "5",
                                 "--generator-version", "3"])
    assert result.exit_code == 1 and not (tmp_path / "t").exists()
    assert "generator version 3; expected one of 1, 2" in " ".join(result.output.split())
    with pytest.raises(ValueError, match="generator_version"):
        SynthesizeConfig(generator_version=3)
    assert get_args(SynthesizeConfig.model_fields["generator_version"].annotation) == \
        GENERATOR_VERSIONS
