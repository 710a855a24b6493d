"""``simulation/privacy_utility``: its config validates, its table reads finished studies, and
the public arm draws its twin and trains its encoder as documented."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from fedecg.config.base import load_config
from fedecg.config.federated import StudyConfig
from fedecg.errors import ConfigError
from fedecg.privacy.sweep import budget_config, kept_share
from fedecg.run_folder import RunFolder

STUDY = Path(__file__).resolve().parents[2] / "simulation" / "privacy_utility"
DX = {"inf": [0.60, 0.58], "8": [0.55, 0.52]}  # transfer's dx AUROC, seeds 0 and 1


def study_module(name: str = "run"):
    """The study's script ``name``.py, imported from its file."""
    spec = importlib.util.spec_from_file_location(f"privacy_utility_{name}",
                                                  STUDY / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kept_share_is_the_share_of_auroc_above_chance():
    assert kept_share(0.6, 0.7) == pytest.approx(0.5)
    assert kept_share(0.45, 0.7) == pytest.approx(-0.25)  # below chance: a negative share
    assert kept_share(0.6, 0.5) is None and kept_share(None, 0.7) is None


def test_study_config_is_the_quickstart_with_dp_at_every_budget():
    config = load_config(StudyConfig, STUDY / "config.yaml", [])
    assert config.privacy.mode == "sample" and len(config.seeds) >= 2
    private = budget_config(config, 8.0)
    assert private.train.models == ["signal-only", "transfer", "multimodal"]
    assert private.privacy.target_epsilon == 8.0 and private.privacy.enabled
    assert not budget_config(config, float("inf")).privacy.enabled


def test_results_table_gives_each_seed_and_its_share_kept(tmp_path):
    for label, values in DX.items():
        by_seed = {str(seed): {"federated": {"transfer": {"diagnosis_macro_auroc": value}}}
                   for seed, value in enumerate(values)}
        folder = tmp_path / f"epsilon-{label}"
        folder.mkdir()
        RunFolder(folder).summary.write_text(json.dumps({"seeds": [0, 1], "by_seed": by_seed}))
    row = {"epsilon": "8", "model": "transfer", "diagnosis_macro_auroc": 0.535,
           "diagnosis_macro_auroc_low": 0.49, "diagnosis_macro_auroc_high": 0.58,
           "lab_macro_auroc": 0.51, "dx_auroc_kept": kept_share(0.535, 0.59),
           "max_site_epsilon": 7.9991, "delta": 1e-4}
    table = study_module().results_table([row], tmp_path)
    assert table.splitlines()[-1] == ("| 8 | transfer | 0.535 [0.490, 0.580] | 0.510 | "
                                      "0.550, 0.520 | 50%, 25% | 39% | 7.999 (0.0001) |")


def test_the_public_twin_draws_other_patients_and_pretrains_only_with_the_study_encoder():
    module = study_module("public_twin")
    config = load_config(StudyConfig, STUDY / "config.yaml", [])
    data = module.public_data(config, 1000, seed=1)
    assert data.synthesize.seed == 1 and data.synthesize.patients == 1000
    assert data.synthesize.sites == config.data.synthesize.sites
    assert data.synthesize.fs == config.data.synthesize.fs
    with pytest.raises(ConfigError, match="the sites' own patients"):
        module.public_data(config, 1000, seed=config.data.synthesize.seed)
    train = module.public_train_config(config, [])
    assert train.models == ["transfer"] and train.encoder == config.train.encoder
    assert (train.pretrain.epochs, train.pretrain.lr, train.batch_size) == (20, 0.001, 64)
    assert train.pretrain.epochs > 0 and train.lab.epochs == 0 and train.diagnosis.epochs == 0
    assert module.public_train_config(config, ["lab.epochs=4"]).lab.epochs == 4
    arm = load_config(StudyConfig, STUDY / "config.yaml",
                      module.arm_overrides(Path("/runs/public-encoder")))
    assert arm.train.encoder_from == "/runs/public-encoder"
    assert arm.federation.rounds.pretrain == 0
