"""Mixed precision and compilation (``train.precision``, ``train.compile``), and the paper-scale
preset ``configs/paper.yaml``: one real training step of each stage on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN

from fedecg.config.base import load_config
from fedecg.config.federated import StudyConfig
from fedecg.config.train import TrainConfig
from fedecg.errors import ConfigError
from fedecg.models.build import build_model
from fedecg.training.data import epoch_loader
from fedecg.training.pipeline import open_stores
from fedecg.training.stages import build_stages
from fedecg.training.trainer import activate, autocast, make_optimizer, train_epoch

PAPER = Path(__file__).resolve().parents[2] / "configs" / "paper.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("paper") / "site", 12, ecgs_per_patient=1)


def test_paper_preset_trains_one_step_of_each_stage_on_cpu_in_bf16(store):
    """The real-size encoder (millions of parameters) at the preset's bf16: each stage's step
    runs the encoder in bf16, gives a finite loss and moves the weights it trains."""
    config = load_config(TrainConfig, PAPER, ["device=cpu", "compile=false", "batch_size=4",
                                              "num_workers=0"])
    assert config.precision == "bf16"
    data = open_stores([store])
    model = build_model("transfer", config, data.manifest, data.train_clinical())
    encoder = model.classifier.encoder
    assert sum(p.numel() for p in encoder.parameters()) > 1_000_000
    seen: list[torch.dtype] = []
    encoder.stages.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    for stage in build_stages(config, pretrained=True):
        train = data.dataset("train", stage.targets, config.crop_samples, True, config, seed=0)
        params = activate(model, stage)
        before = [p.detach().clone() for p in params]
        logs = train_epoch(model, stage, epoch_loader(train, 4, 0, True, seed=0),
                           make_optimizer(params, 1e-3), max_steps=1,
                           precision=config.precision)
        assert logs["steps"] == 1 and torch.isfinite(torch.tensor(logs["loss"]))
        assert any(not torch.equal(b, p) for b, p in zip(before, params, strict=True)), stage.name
    assert seen and set(seen) == {torch.bfloat16}


def test_fp16_needs_cuda():
    with pytest.raises(ConfigError, match=r"fp16.*CUDA"):
        autocast(torch.device("cpu"), "fp16")


def test_compile_wraps_the_encoder_layers_in_place(store):
    data = open_stores([store])
    plain = build_model("signal-only", load_config(TrainConfig, None, []), data.manifest)
    compiled = build_model("signal-only", load_config(TrainConfig, None, ["compile=true"]),
                           data.manifest)
    for part in ("stem", "stages"):
        assert getattr(compiled.classifier.encoder, part)._compiled_call_impl is not None
        assert getattr(plain.classifier.encoder, part)._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_sample_dp_refuses_mixed_precision():
    study = {"train": {**TINY_TRAIN, "precision": "bf16"},
             "privacy": {"mode": "sample", "target_epsilon": 8.0}}
    with pytest.raises(ValueError, match=r"train\.precision 'bf16'"):
        StudyConfig.model_validate(study)
