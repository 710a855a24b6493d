"""Training: the stage protocol, the loop, learning on a separable store, resume, divergence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builders.run_history import metrics_history
from builders.site_store import make_store
from builders.tiny import tiny_joint_model, tiny_overrides

from fedecg.config.base import load_config
from fedecg.config.train import TrainConfig
from fedecg.errors import StoreError, TrainingError
from fedecg.run_folder import RunFolder
from fedecg.training import runner, trainer
from fedecg.training.checkpoint import Position, load_checkpoint, save_checkpoint
from fedecg.training.data import CropDataset, epoch_loader
from fedecg.training.losses import siglip
from fedecg.training.pipeline import open_stores, train_models
from fedecg.training.stages import DiagnosisStage, LabHeadStage, PretrainStage, build_stages
from fedecg.training.trainer import activate, make_optimizer, train_epoch


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("stores") / "site-a", 250, ecgs_per_patient=1,
                       separable=True)


def _config(*extra: str) -> TrainConfig:
    return load_config(TrainConfig, None, tiny_overrides(*extra))


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"ecg": torch.randn(n, 12, 100), "clinical": torch.randn(n, 3),
            "lab": (torch.rand(n, 3) < 0.5).float(), "dx": (torch.rand(n, 2) < 0.5).float()}


def test_stages_share_the_encoder_and_keep_buffers_local():
    model = tiny_joint_model(3, 2, 3)
    pretrain = PretrainStage().shared_keys(model)
    assert any(k.startswith("classifier.encoder.") for k in pretrain)
    assert any(k.startswith("clinical.mlp.") for k in pretrain)
    assert "temperature.log_scale" in pretrain
    assert "clinical.mean" not in pretrain and "clinical.std" not in pretrain
    assert not any("head." in k and k.startswith("classifier.") for k in pretrain)
    personal = LabHeadStage(share_heads=False).shared_keys(model)
    assert all(k.startswith("classifier.encoder.") for k in personal)
    assert "classifier.lab_head.weight" in LabHeadStage().shared_keys(model)


def test_pretrain_loss_options_and_feature_dropout():
    model = tiny_joint_model(3, 2, 3, clinical={"dropout": 0.0})
    batch = _batch()
    z_ecg, z_clin = model.joint_embeddings(batch["ecg"], batch["clinical"])
    scale, bias = model.temperature.scale(), model.temperature.bias
    loss, logs = PretrainStage(loss_name="siglip").loss(model, batch)
    assert loss.item() == pytest.approx(siglip(z_ecg, z_clin, scale, bias).item(), rel=1e-6)
    assert 0.0 <= logs["retrieval_top1"] <= 1.0
    hidden = {**batch, "clinical": torch.full_like(batch["clinical"], float("nan"))}
    torch.manual_seed(0)
    dropped, _ = PretrainStage(feature_dropout=0.999).loss(model.train(), batch)
    assert dropped.item() == pytest.approx(PretrainStage().loss(model, hidden)[0].item())
    model.eval()  # no feature dropout at evaluation
    kept, _ = PretrainStage(feature_dropout=0.999).loss(model, batch)
    assert kept.item() == pytest.approx(PretrainStage().loss(model, batch)[0].item())


def test_activate_freezes_everything_the_stage_does_not_train():
    model = tiny_joint_model(3, 2, 3)
    params = activate(model, LabHeadStage(freeze_encoder=True))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"classifier.lab_head.weight", "classifier.lab_head.bias"}
    assert len(params) == 2
    activate(model, DiagnosisStage(lab_loss_weight=0.0))
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.dx_head.weight" in names and "classifier.lab_head.weight" not in names
    assert any(n.startswith("classifier.encoder.") for n in names)


def test_frozen_encoder_is_unchanged_by_a_head_stage():
    model = tiny_joint_model(3, 2, 3)
    stage = LabHeadStage(freeze_encoder=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_epoch(model, stage, [_batch()] * 3, make_optimizer(activate(model, stage), 1e-2))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "encoder" in k)
    head = "classifier.lab_head.weight"
    assert not torch.equal(before[head], after[head])


def test_extra_loss_is_added_to_every_step():
    """A strong proximal term (FedProx) keeps the weights near their start."""
    def drift(mu: float) -> float:
        model = tiny_joint_model(3, 2, 3)
        stage = LabHeadStage()
        params = activate(model, stage)
        anchor = [p.detach().clone() for p in params]

        def proximal(_: torch.nn.Module) -> torch.Tensor:
            return 0.5 * mu * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))

        train_epoch(model, stage, [_batch()] * 5, make_optimizer(params, 1e-2), extra_loss=proximal)
        with torch.no_grad():
            return float(sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True)))

    assert drift(1e4) < 0.1 * drift(0.0)


def test_non_finite_loss_raises_before_the_weights_change():
    model = tiny_joint_model(3, 2, 3)
    stage = LabHeadStage()
    params = activate(model, stage)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingError, match="diverged"):
        train_epoch(model, stage, [_batch()], make_optimizer(params, 1e-2),
                    extra_loss=lambda m: torch.tensor(float("nan")))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_crops_depend_on_seed_epoch_and_item_only(store):
    data = open_stores([store])
    config = _config()
    dataset = data.dataset("train", ("lab",), 100, True, config, seed=5)
    first = dataset[3]["ecg"]
    dataset.set_epoch(1)
    assert not torch.equal(first, dataset[3]["ecg"])
    dataset.set_epoch(0)
    assert torch.equal(first, dataset[3]["ecg"])
    assert first.shape == (12, 100)
    one = [b["ecg"] for b in epoch_loader(dataset, 16, 2, True, seed=5)]
    two = [b["ecg"] for b in epoch_loader(dataset, 16, 2, True, seed=5, num_workers=0)]
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    whole = CropDataset([(data.stores[0], np.arange(4))], None, False)
    assert whole[0]["ecg"].shape == (12, 200)


def test_build_stages_never_freezes_a_random_encoder():
    config = _config("lab.freeze_encoder=true", "diagnosis.freeze_encoder=true")
    scratch = build_stages(config, pretrained=False)
    assert [s.name for s in scratch] == ["lab", "diagnosis"]
    assert not any(s.freeze_encoder for s in scratch)
    assert [s.freeze_encoder for s in build_stages(config, True)[1:]] == [True, True]


def test_training_on_a_separable_store_learns(store, tmp_path):
    config = _config("models=[signal-only,multimodal]", "lab.epochs=15", "diagnosis.epochs=8",
                     "lab.lr=3e-3", "diagnosis.lr=3e-3")
    summary = train_models([store], config, tmp_path / "run")
    assert summary["signal-only"]["diagnosis_auroc"]["atrial_fibrillation"] > 0.9
    assert summary["signal-only"]["lab_auroc"]["potassium_high"] > 0.9
    assert summary["multimodal"]["lab_auroc"]["hemoglobin_low"] > 0.9  # seen only as a feature
    assert summary["naive"]["diagnosis_macro_auroc"] == 0.5
    entry = summary["signal-only"]
    for key in ("diagnosis_macro_auroc", "lab_macro_auroc", "diagnosis_macro_auprc",
                "lab_macro_auprc"):
        low, high = entry[f"{key}_ci"]
        assert low <= entry[key] <= high
    assert set(entry["per_store"]) == {"site-a"}
    lines = RunFolder(tmp_path / "run").metrics.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2 * (15 + 8)
    assert (RunFolder(tmp_path / "run").model / "model.pt").is_file()


@pytest.mark.parametrize("where", ["train_epoch", "save_checkpoint"])
def test_resume_of_a_multi_model_run_keeps_every_model_history(store, tmp_path, monkeypatch,
                                                               where):
    """Killed in the second model, inside an epoch or between its metrics line and its
    checkpoint (a kill -9 window): the first model's checkpoint used to cut the log back."""
    config = _config("models=[signal-only,transfer]", "pretrain.epochs=2", "lab.epochs=2",
                     "diagnosis.epochs=2")
    whole = train_models([store], config, tmp_path / "whole")
    calls = {"n": 0}
    module = trainer if where == "train_epoch" else runner  # the stage loop calls train_epoch
    real = getattr(module, where)
    # train_epoch's 8th call: transfer's lab epoch 2 (signal-only 4 + pretrain 2 + lab 1
    # before it); save_checkpoint's 11th: transfer's lab epoch 1 (signal-only saves 4 epochs,
    # 2 stage ends and its final checkpoint; transfer 2 pretraining epochs and their stage end)
    crash_at = 8 if where == "train_epoch" else 11

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, where, crashing)
    with pytest.raises(KeyboardInterrupt):
        train_models([store], config, tmp_path / "resumed")
    saved = load_checkpoint(RunFolder(tmp_path / "resumed").checkpoints / "transfer.pt")
    assert len(metrics_history(tmp_path / "resumed")) == 7  # signal-only 4, transfer 3
    assert saved["metric_lines"] == (7 if where == "train_epoch" else 6)
    monkeypatch.setattr(module, where, real)
    resumed = train_models([store], config, tmp_path / "resumed")
    assert metrics_history(tmp_path / "resumed") == metrics_history(tmp_path / "whole")
    assert len(metrics_history(tmp_path / "whole")) == 10
    assert resumed == whole


def test_resume_after_a_crash_equals_an_uninterrupted_run(store, tmp_path, monkeypatch):
    config = _config("models=[transfer]", "pretrain.epochs=2", "lab.epochs=2",
                     "diagnosis.epochs=2")
    whole = train_models([store], config, tmp_path / "whole")
    calls = {"n": 0}
    real = trainer.train_epoch

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the second epoch of the lab stage
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_models([store], config, tmp_path / "resumed")
    assert load_checkpoint(RunFolder(tmp_path / "resumed").checkpoints / "transfer.pt")[
        "position"].finished == 1
    monkeypatch.setattr(trainer, "train_epoch", real)
    resumed = train_models([store], config, tmp_path / "resumed")
    a = load_checkpoint(RunFolder(tmp_path / "whole").checkpoints / "transfer.pt")["model"]
    b = load_checkpoint(RunFolder(tmp_path / "resumed").checkpoints / "transfer.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["transfer"]["diagnosis_auroc"] == whole["transfer"]["diagnosis_auroc"]
    lines = RunFolder(tmp_path / "resumed").metrics.read_text().splitlines()
    assert [json.loads(x)["stage"] for x in lines] == ["pretrain"] * 2 + ["lab"] * 2 + [
        "diagnosis"] * 2


def test_diverging_training_stops_and_keeps_the_last_good_checkpoint(store, tmp_path,
                                                                     monkeypatch):
    def nan_loss(self, model, batch):
        return model.classifier.dx_head.weight.sum() * float("nan"), {}

    monkeypatch.setattr(DiagnosisStage, "loss", nan_loss)
    config = _config("models=[signal-only]", "lab.epochs=2")
    with pytest.raises(TrainingError, match=r"'diagnosis'.*diverged"):
        train_models([store], config, tmp_path / "run")
    saved = load_checkpoint(RunFolder(tmp_path / "run").checkpoints / "signal-only.pt")
    # the lab stage (index 0) ended; the diagnosis stage (1) saved no epoch
    assert (saved["position"].stage_index, saved["position"].finished) == (1, 0)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert not RunFolder(tmp_path / "run").summary.exists()


def test_stores_with_different_labels_fail_naming_both(store, tmp_path):
    other = make_store(tmp_path / "site-b", 30, ecgs_per_patient=1,
                       separable=True, site_name="site-b", labs=("potassium",))
    with pytest.raises(StoreError, match=r"site-a and .*site-b.*lab_labels"):
        open_stores([store, other])


def test_two_compatible_stores_train_pooled_with_per_store_results(store, tmp_path):
    other = make_store(tmp_path / "site-b", 60, ecgs_per_patient=1,
                       separable=True, site_name="site-b", seed=1)
    summary = train_models([store, other], _config("eval.bootstrap=0"), tmp_path / "run",
                           models=["signal-only"], seed=4)
    assert summary["models"] == ["signal-only"] and summary["seed"] == 4
    entry = summary["signal-only"]
    assert set(entry["per_store"]) == {"site-a", "site-b"}
    assert entry["diagnosis_macro_auroc_ci"] is None
    assert entry["n_test"] == sum(e["n_test"] for e in entry["per_store"].values())


def test_a_checkpoint_that_does_not_fit_the_store_fails_clearly(store, tmp_path):
    run = tmp_path / "run"
    train_models([store], _config(), run, models=["signal-only"])
    folder = RunFolder(run)
    for path in (folder.summary, folder.checkpoints / "signal-only.test.json"):
        path.unlink()
    other = tiny_joint_model(1, 2, 3)
    save_checkpoint(RunFolder(run).checkpoints / "signal-only.pt", Position(0, 1), other,
                    metric_lines=0)
    with pytest.raises(TrainingError, match=r"signal-only\.pt: does not fit.*--overwrite"):
        train_models([store], _config(), run, models=["signal-only"])
