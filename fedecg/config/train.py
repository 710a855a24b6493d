"""Training configuration (``fedecg train --config``): models, stages, augmentation, evaluation.

Every default lives here. Sections: ``encoder`` (and ``encoder_from``, a public model the
transfer model's ECG encoder starts from), ``clinical``, ``augment``, ``pretrain``,
``lab``, ``diagnosis``, ``eval``; top-level keys for the data pipeline and seed. Override from
the CLI with e.g. ``--set pretrain.epochs=3 --set encoder.widths=[16,32]``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedecg.config.base import StrictModel

ModelName = Literal["signal-only", "transfer", "multimodal"]
MODEL_NAMES: tuple[ModelName, ...] = ("signal-only", "transfer", "multimodal")
STAGE_NAMES: tuple[str, ...] = ("pretrain", "lab", "diagnosis")  # in training order
LossName = Literal["infonce", "siglip"]
Monitor = Literal["loss", "auroc"]
Precision = Literal["fp32", "bf16", "fp16"]


class EncoderConfig(StrictModel):
    """The ECG encoder (``fedecg.models.encoders.EcgEncoder`` keyword arguments)."""

    stem_width: int = Field(32, ge=1)
    widths: list[int] = Field(default_factory=lambda: [32, 64, 128], min_length=1)
    blocks: list[int] = Field(default_factory=lambda: [1, 1, 1], min_length=1)
    kernel_size: int = Field(7, ge=1)
    norm: Literal["group", "layer", "instance"] = "group"
    groups: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _same_length(self) -> EncoderConfig:
        if len(self.widths) != len(self.blocks):
            raise ValueError(f"widths {self.widths} and blocks {self.blocks} must have the "
                             "same length (one entry per stage)")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size {self.kernel_size}: expected an odd number")
        return self


class ClinicalConfig(StrictModel):
    """The clinical encoder (``fedecg.models.clinical.ClinicalEncoder`` keyword arguments)."""

    hidden: int = Field(128, ge=1)
    layers: int = Field(2, ge=0)
    embedding_dim: int = Field(128, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class AugmentConfig(StrictModel):
    """Light augmentation of random training crops (all stages; never at evaluation)."""

    amplitude_scale: float = Field(0.1, ge=0.0, lt=1.0, description="±fraction of gain")
    noise_std: float = Field(0.01, ge=0.0, description="gaussian noise, mV")
    baseline_shift: float = Field(0.05, ge=0.0, description="±constant offset per lead, mV")


class StageConfig(StrictModel):
    """Shared settings of one training stage."""

    epochs: int = Field(5, ge=0)
    min_steps: int = Field(0, ge=0, description="small sites: each epoch passes through the "
                           "data as often as needed for the stage to take this many steps")
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)


class PretrainConfig(StageConfig):
    """Stage 1: joint-embedding pretraining of the ECG and clinical encoders."""

    loss: LossName = "infonce"
    projection_dim: int = Field(128, ge=1)
    temperature: float = Field(0.07, gt=0.0, description="initial temperature")
    learnable_temperature: bool = True
    feature_dropout: float = Field(0.0, ge=0.0, lt=1.0,
                                   description="share of clinical values hidden per batch")


class LabStageConfig(StageConfig):
    """Stage 2: the lab-abnormality head on the ECG embedding.

    Its epochs are scored by the lab head's validation macro AUROC (``monitor``): its loss
    flattens once the labels' base rates are learned while the AUROC still climbs
    (simulation/federated_quality/README.md)."""

    freeze_encoder: bool = False
    monitor: Monitor = "auroc"


class DiagnosisStageConfig(StageConfig):
    """Stage 3: the diagnosis head, with the lab head kept as an auxiliary loss."""

    freeze_encoder: bool = False
    monitor: Monitor = Field("loss", description="how early stopping scores an epoch: the "
                             "stage's validation loss, or the diagnosis head's macro AUROC")
    lab_loss_weight: float = Field(0.5, ge=0.0)


class EvalConfig(StrictModel):
    """Test-time crops and bootstrap confidence intervals."""

    crops: int = Field(4, ge=1, description="evenly spaced crops whose logits are averaged")
    bootstrap: int = Field(200, ge=0, description="bootstrap resamples (0: no CI)")
    ci: float = Field(0.95, gt=0.0, lt=1.0)
    batch_size: int = Field(256, ge=1)
    min_auroc: float = Field(0.6, ge=0.0, le=1.0, description="an output whose validation "
                             "AUROC is below this is shown as not learned")


class EarlyStoppingConfig(StrictModel):
    """Model selection on the validation split, the same for centralized and federated training.

    After each epoch (federated: each round, the aggregated model scored at each site and
    weighted by their validation rows) the stage's validation score (its ``monitor``: loss, or
    the macro AUROC of the head it trains) is compared with its best so far. ``keep_best``: the
    stage ends with its best epoch's (round's) weights. ``patience``: the stage stops once its
    score has not improved for that many epochs (federated: rounds × local epochs); null trains
    every epoch.
    """

    keep_best: bool = True
    patience: int | None = Field(None, ge=1, description="epochs without improvement before "
                                 "a stage stops (null: never stop early)")
    min_delta: float = Field(0.0, ge=0.0, description="an improvement smaller than this "
                             "does not count")


class TrainConfig(StrictModel):
    """Everything ``fedecg train`` needs besides the stores."""

    seed: int = 0
    models: list[ModelName] = Field(default_factory=lambda: list(MODEL_NAMES), min_length=1)
    crop_samples: int = Field(250, ge=8, description="training crop length in samples")
    batch_size: int = Field(64, ge=2)
    num_workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1, description="torch threads (None: leave as is)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
                        description="auto: cuda when available, else cpu")
    max_grad_norm: float | None = Field(5.0, gt=0.0)
    precision: Precision = Field("fp32", description="training forward passes under autocast: "
                                 "bf16 (recent GPUs, or CPU), fp16 (CUDA only, with loss "
                                 "scaling); fp32 off")
    compile: bool = Field(False, description="torch.compile the ECG encoder in place (pays "
                          "off on a GPU over long runs; the first steps wait for compilation)")
    warn_below_steps: int = Field(100, ge=0, description="warn when a stage takes fewer "
                                  "optimizer steps")
    warn_below_test_positives: int = Field(10, ge=0, description="warn when a label has fewer "
                                           "positives in the test split")
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    encoder_from: str | None = Field(
        None, description="a model `fedecg train` wrote on public data (its run folder or "
        "RUN/model): the transfer model's ECG encoder starts from its encoder, before stage 1 "
        "(whose epochs or federated rounds may then be 0); it needs the same train.encoder, "
        "sampling rate and leads. Null: a random start")
    clinical: ClinicalConfig = Field(default_factory=ClinicalConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    lab: LabStageConfig = Field(default_factory=LabStageConfig)
    diagnosis: DiagnosisStageConfig = Field(default_factory=DiagnosisStageConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
