"""Differential-privacy settings of a run (``privacy:`` section), validated by pydantic.

``mode``:

* ``none``: no differential privacy (also what ``target_epsilon: .inf`` means);
* ``sample``: DP-SGD at every site (Opacus). The unit protected is one ECG record of a site's
  training split: a patient with k ECGs is protected at group level only (about k·ε);
* ``client``: DP-FedAvg (Flower's fixed-clipping wrappers). The unit protected is a whole site.

δ defaults to ``default_delta(n)``: ``0.1 / n`` rounded down to a power of ten, where ``n`` is
the number of units (a site's training records for ``sample``, the number of sites for
``client``); so δ < 1/n always. A δ given explicitly must also be below 1/n.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fedecg.config.base import StrictModel

PrivacyMode = Literal["none", "sample", "client"]
AccountantName = Literal["rdp", "prv"]
GradSampleMode = Literal["fast", "hooks", "functorch"]
ClippingSide = Literal["server", "client"]
PretrainObjective = Literal["align", "features", "grouped"]


def default_delta(n_units: int) -> float:
    """``0.1 / n_units`` rounded down to a power of ten (so strictly below ``1 / n_units``)."""
    if n_units < 1:
        raise ValueError(f"n_units {n_units}: expected at least one protected unit")
    return 10.0 ** math.floor(math.log10(0.1 / n_units) + 1e-9)  # 1e-9: float noise at exact powers


class SampleDPConfig(StrictModel):
    """DP-SGD at each site: per-example clipping, Gaussian noise, Poisson sampling."""

    max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm C")
    poisson_sampling: bool = Field(True, description="required: the accounting assumes it")
    grad_sample_mode: GradSampleMode = Field(
        "fast", description="how per-example gradients are computed: fast = fedecg's own "
        "(fedecg.privacy.per_example: Conv1d, Linear, GroupNorm, LayerNorm layers), hooks or "
        "functorch = Opacus's (any layer Opacus supports)")
    max_noise_multiplier: float = Field(
        10.0, gt=0, description="largest noise multiplier calibration may choose")
    pretrain_objective: PretrainObjective = Field(
        "align", description="per-example pretraining loss (fedecg.privacy.objectives): "
        "align = cosine to a frozen random embedding, features = regress own clinical values, "
        "grouped = the stage's InfoNCE/SigLIP within random groups, each group clipped "
        "(fedecg.privacy.grouped)")
    contrastive_group: int = Field(
        8, description="grouped: the expected number of records per contrastive group")

    @field_validator("contrastive_group")
    @classmethod
    def _group_has_negatives(cls, value: int) -> int:
        if value < 2:
            raise ValueError(f"contrastive_group {value}: a contrastive group needs at least 2 "
                             "records (a group of one has no negatives); set "
                             "privacy.sample.contrastive_group to 2 or more (default 8)")
        return value

    @model_validator(mode="after")
    def _poisson(self) -> SampleDPConfig:
        if not self.poisson_sampling:
            raise ValueError("poisson_sampling false: the privacy accountants (RDP, PRV) assume "
                             "Poisson-subsampled batches, so any other sampling would report an "
                             "epsilon the training does not guarantee; set it to true")
        return self


class ClientDPConfig(StrictModel):
    """DP-FedAvg: each site's update clipped to ``clipping_norm``, Gaussian noise on the sum.

    ``noise_multiplier`` fixes σ (noise std = σ · clipping_norm on the sum of updates); when
    None it is calibrated so that the planned rounds spend ``target_epsilon``.
    """

    clipping_norm: float = Field(1.0, gt=0)
    noise_multiplier: float | None = Field(None, gt=0)
    clipping: ClippingSide = "server"


class DPConfig(StrictModel):
    """The ``privacy`` section of a run (ε = ∞ round-trips through JSON as ``Infinity``)."""

    mode: PrivacyMode = "none"
    target_epsilon: float = Field(float("inf"), gt=0, description=".inf: no DP")
    delta: float | None = Field(None, gt=0, lt=1, description="None: 0.1/n to a power of ten")
    accountant: AccountantName = "rdp"
    sample: SampleDPConfig = Field(default_factory=SampleDPConfig)
    client: ClientDPConfig = Field(default_factory=ClientDPConfig)

    @property
    def enabled(self) -> bool:
        """True when a mechanism runs: a mode other than ``none`` and a finite ε."""
        return self.mode != "none" and math.isfinite(self.target_epsilon)

    def resolved_delta(self, n_units: int) -> float:
        """δ for ``n_units`` protected units: the configured one, else ``default_delta``."""
        return self.delta if self.delta is not None else default_delta(n_units)
