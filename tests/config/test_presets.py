"""The YAML presets in ``configs/`` validate against the config model of the command they serve."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from fedecg.config.base import load_config
from fedecg.config.data import PrepareConfig
from fedecg.config.federated import StudyConfig
from fedecg.config.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
PRESETS = {"quickstart.yaml": StudyConfig, "deploy-study.yaml": StudyConfig,
           "train-quickstart.yaml": TrainConfig,
           "paper.yaml": TrainConfig, "prepare.yaml": PrepareConfig}


def test_every_preset_is_listed_here():
    assert sorted(p.name for p in (ROOT / "configs").glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_validates(name: str):
    model: type[BaseModel] = PRESETS[name]
    assert isinstance(load_config(model, ROOT / "configs" / name, []), model)


def test_main_job_preset_is_the_flower_apps_default_and_a_full_study():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"]["config"] == "configs/quickstart.yaml"
    study = load_config(StudyConfig, ROOT / "configs/quickstart.yaml", [])
    assert study.baselines and study.data.synthesize is not None
    assert list(study.train.models) == ["signal-only", "transfer", "multimodal"]
