"""Model selection within a stage: the best epoch by validation loss is kept; a stalled stage
stops."""

from __future__ import annotations

import math

import pytest
import torch
from builders.run_history import metrics_history
from builders.site_store import make_store
from builders.tiny import tiny_overrides

from fedecg.config.base import load_config
from fedecg.config.train import EarlyStoppingConfig, TrainConfig
from fedecg.run_folder import RunFolder
from fedecg.training import runner
from fedecg.training.checkpoint import load_checkpoint
from fedecg.training.pipeline import train_models
from fedecg.training.selection import BestSoFar, patience_in_rounds, stage_score


def _weights(value: float):
    return lambda: {"w": torch.tensor([value])}


def test_the_lowest_loss_is_kept_and_the_stage_stalls_after_patience():
    config = EarlyStoppingConfig(patience=2, min_delta=0.05)
    best = BestSoFar()
    assert not best.stalled(3, 2)  # no finite loss yet: never stalls
    assert best.observe(1, 1.0, _weights(1.0), config)
    assert not best.observe(2, 0.97, _weights(2.0), config)  # within min_delta
    assert best.observe(3, 0.5, _weights(3.0), config)
    assert not best.observe(4, math.nan, _weights(4.0), config)
    assert not best.observe(5, None, _weights(5.0), config)
    assert not best.stalled(4, 2) and best.stalled(5, 2)
    assert best.best_weights(5)["w"].item() == 3.0
    assert best.best_weights(3) is None  # the last step is the best: nothing to restore
    again = BestSoFar.restore(best.meta(), best.state)
    assert (again.step, again.loss, again.state["w"].item()) == (3, 0.5, 3.0)
    assert BestSoFar.restore(None, None).step == 0


def test_each_stage_is_scored_by_its_monitor():
    """Defaults: the lab stage by its head's AUROC, diagnosis and pretraining by their loss."""
    default = TrainConfig()
    auroc = load_config(TrainConfig, None, ["diagnosis.monitor=auroc", "lab.monitor=loss"])
    assert stage_score("pretrain", default, 4.1, None, None) == 4.1
    assert stage_score("lab", default, 0.3, 0.62, 0.7) == -0.62
    assert stage_score("diagnosis", default, 0.3, 0.62, 0.7) == 0.3
    assert stage_score("diagnosis", auroc, 0.3, 0.62, 0.7) == -0.7
    assert stage_score("diagnosis", auroc, 0.3, 0.62, None) is None
    assert stage_score("lab", auroc, 0.3, 0.62, 0.7) == 0.3


def test_without_keep_best_no_weights_are_copied():
    best = BestSoFar()
    assert best.observe(1, 1.0, _weights(1.0), EarlyStoppingConfig(keep_best=False))
    assert best.best_weights(2) is None


@pytest.mark.parametrize(("patience", "local_epochs", "rounds"),
                         [(None, 1, None), (3, 1, 3), (3, 2, 2), (1, 4, 1)])
def test_patience_counts_epochs_so_a_round_of_several_epochs_counts_for_them(
        patience, local_epochs, rounds):
    config = EarlyStoppingConfig(patience=patience)
    assert patience_in_rounds(config, local_epochs) == rounds


def test_training_keeps_the_best_epoch_and_stops_when_validation_stalls(tmp_path, monkeypatch):
    """Scripted validation losses 1.0, 0.8, 0.9, 0.95 (then 0.1, never reached): with patience
    2 the lab stage stops after epoch 4 and ends with epoch 2's weights."""
    store = make_store(tmp_path / "store", 60, ecgs_per_patient=1, separable=True)
    losses = iter([1.0, 0.8, 0.9, 0.95, 0.1, 0.1])
    seen: list[dict[str, torch.Tensor]] = []
    real = runner.validate

    def scripted(model, stage, dataset, names, batch_size=256):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {**real(model, stage, dataset, names, batch_size), "val_loss": next(losses)}

    monkeypatch.setattr(runner, "validate", scripted)
    config = load_config(TrainConfig, None, tiny_overrides(
        "models=[signal-only]", "lab.epochs=6", "diagnosis.epochs=0",
        "early_stopping.patience=2", "lab.monitor=loss", "eval.bootstrap=0"))
    train_models([store], config, tmp_path / "run")
    records = metrics_history(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert [r["best_epoch"] for r in records] == [1, 2, 2, 2]
    saved = load_checkpoint(RunFolder(tmp_path / "run").checkpoints / "signal-only.pt")
    assert saved["position"].done
    for key, value in saved["model"].items():
        assert torch.equal(value, seen[1][key]), key


def test_the_lab_stage_keeps_its_best_auroc_while_its_loss_has_stalled(tmp_path, monkeypatch):
    """Validation loss flat after epoch 2 while the lab AUROC still climbs (as measured in the
    main job's lab stage): ``monitor: auroc`` trains on and keeps the last epoch."""
    store = make_store(tmp_path / "store", 60, ecgs_per_patient=1, separable=True)
    scores = iter([(1.0, 0.50), (0.8, 0.55), (0.81, 0.60), (0.82, 0.62), (0.83, 0.64)])
    real = runner.validate

    def scripted(model, stage, dataset, names, batch_size=256):
        loss, auroc = next(scores)
        return {**real(model, stage, dataset, names, batch_size), "val_loss": loss,
                "val_lab_macro_auroc": auroc}

    monkeypatch.setattr(runner, "validate", scripted)
    config = load_config(TrainConfig, None, tiny_overrides(
        "models=[signal-only]", "lab.epochs=5", "diagnosis.epochs=0",
        "early_stopping.patience=2", "eval.bootstrap=0"))
    train_models([store], config, tmp_path / "run")
    records = metrics_history(tmp_path / "run")
    assert [r["best_epoch"] for r in records] == [1, 2, 3, 4, 5]
