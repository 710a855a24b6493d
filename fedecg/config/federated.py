"""Configuration of virtual-site partitions and federated simulations (pydantic, strict)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedecg.config.base import StrictModel
from fedecg.config.data import PrepareConfig
from fedecg.config.privacy import DPConfig
from fedecg.config.train import TrainConfig

PartitionMethod = Literal["iid", "dirichlet", "quantity", "natural"]


class PartitionConfig(StrictModel):
    """How one store is split into patient-disjoint virtual sites.

    ``iid``: patients shuffled and dealt evenly. ``dirichlet``: label skew, each class of the
    patients' representative label spread over sites by Dirichlet(``alpha``). ``quantity``: site
    sizes drawn from Dirichlet(``alpha``). ``natural``: each site takes whole values of
    ``column`` (a patient goes with its most frequent value): one site per value, or, with more
    values than ``num_sites`` (the twin's ``cart_id``: 2-6 carts per hospital), the values
    grouped into ``num_sites`` sites of balanced patient counts; fewer values than
    ``num_sites`` is an error.
    """

    method: PartitionMethod = "iid"
    num_sites: int = Field(default=4, ge=1)
    alpha: float = Field(default=0.5, gt=0)
    column: str | None = None
    patient_column: str = "subject_id"
    min_patients_per_site: int = Field(default=2, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _natural_needs_column(self) -> PartitionConfig:
        if self.method == "natural" and not self.column:
            raise ValueError("partition.method 'natural' needs partition.column, the cohort "
                             "column whose values name the sites (e.g. cart_id)")
        return self


StrategyName = Literal["fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi"]


class StrategyConfig(StrictModel):
    """The server strategy (Flower's own), example-weighted by each site's training examples.

    ``proximal_mu`` is FedProx's μ (the sites add μ/2·‖w − w_global‖²); ``server_lr`` is the
    server's step on the averaged update (FedAvgM: default 1.0; FedAdam/FedYogi's η: default
    0.01); ``server_momentum`` is FedAvgM's momentum; ``beta_1``, ``beta_2`` and ``tau`` are
    FedAdam/FedYogi's β₁, β₂ and τ.
    """

    name: StrategyName = "fedavg"
    proximal_mu: float = Field(default=0.01, ge=0)
    server_lr: float | None = Field(default=None, gt=0, description="null: the strategy's "
                                    "default (fedavgm 1.0, fedadam/fedyogi 0.01)")
    server_momentum: float = Field(default=0.0, ge=0, lt=1, description="fedavgm")
    beta_1: float = Field(default=0.9, ge=0, lt=1)
    beta_2: float = Field(default=0.99, ge=0, lt=1)
    tau: float = Field(default=1e-3, gt=0)
    fraction_train: float = Field(default=1.0, gt=0, le=1)


class RoundsConfig(StrictModel):
    """Federated rounds of each stage (0 skips the stage)."""

    pretrain: int = Field(default=3, ge=0)
    lab: int = Field(default=2, ge=0)
    diagnosis: int = Field(default=3, ge=0)

    def of(self, stage: str) -> int:
        """Rounds of ``stage`` (``pretrain``, ``lab`` or ``diagnosis``)."""
        return int(getattr(self, stage))


class FederationConfig(StrictModel):
    """How sites train together: strategy, rounds per stage, local work, personal heads.

    Faults: a round aggregates the sites whose update arrived within ``round_timeout_s`` and
    passed the server's checks (``fedecg.federated.screening``); a site that failed, timed out
    or sent a malformed update (bad keys, shapes or values, an example count above what it
    declared, a norm over ``max_update_norm_ratio`` × the round's median) is logged and left
    out. With fewer than ``min_sites`` usable updates the run stops, resumable
    from its last finished round. Before round 1 the server waits up to ``connect_timeout_s``
    for every expected site to connect, then starts with those present (at least ``min_sites``).
    """

    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    local_epochs: int = Field(default=1, ge=1)
    local_steps: int | None = Field(default=None, ge=1, description="cap on steps per round")
    batch_size: int | None = Field(default=None, ge=2, description="a site's training batch "
                                   "(null: train.batch_size); smaller batches give a site "
                                   "more optimizer steps per epoch of its data")
    personal_heads: bool = Field(default=False, description="heads stay at each site")
    min_sites: int = Field(default=2, ge=1, description="usable updates a round needs")
    client_cpus: float = Field(
        default=1.0, ge=1, description="CPUs Ray reserves per virtual client; a private "
        "session offers Ray this machine's usable cores, so at most cores / client_cpus sites "
        "train at once, each on one thread (below 1 would oversubscribe the cores)")
    ray_address: str | None = Field(
        default=None, description="run the virtual sites on this existing Ray cluster ('auto', "
        "or the head's host:port); null: $RAY_ADDRESS if set, else a private Ray session on "
        "this machine that fedecg starts and stops")
    round_timeout_s: float = Field(default=3600.0, gt=0, description="wait for replies")
    connect_timeout_s: float = Field(default=600.0, ge=0, description="wait for all sites")
    max_update_norm_ratio: float | None = Field(
        default=10.0, gt=1, description="reject an update farther from the global model than "
        "this many times the round's median (null: no bound)")


class SynthesizeConfig(StrictModel):
    """Synthesize the twin (MIMIC layout) and prepare it into one store before the study."""

    patients: int = Field(default=400, ge=10)
    sites: int = Field(default=4, ge=1)
    seed: int = 0
    fs: float = Field(default=100.0, gt=0)
    generator_version: Literal[1, 2] = Field(
        default=2, description="the twin generator (fedecg.data.synth.GENERATOR_VERSIONS): 1 "
        "before the literature ECG effects of nine conditions, 2 with them")


class DeployedSitesConfig(StrictModel):
    """Real hospitals: each node trains on its own store (its ``data-dir``).

    ``prepare`` holds the ``fedecg prepare`` settings every site used (defaults: the built-in
    ones); the server derives the study's labels, features, rate and length from it and each
    site's store must match them.
    """

    sites: int = Field(ge=1, description="hospitals taking part")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)


class DataSourceConfig(StrictModel):
    """Where the study's data comes from: an existing store, a twin synthesized first, or the
    hospitals' own stores (``deployed``)."""

    store: str | None = None
    synthesize: SynthesizeConfig | None = None
    deployed: DeployedSitesConfig | None = None
    cache_dir: str | None = Field(default=None, description="where a synthesized twin goes")

    @model_validator(mode="after")
    def _one_source(self) -> DataSourceConfig:
        given = [self.store, self.synthesize, self.deployed]
        if sum(value is not None for value in given) != 1:
            raise ValueError("data: give exactly one of data.store (a prepared store folder), "
                             "data.synthesize ({patients, sites, seed}) or data.deployed "
                             "({sites, prepare}: the hospitals' own stores)")
        return self


class StudyConfig(StrictModel):
    """A federated study: on virtual sites (``fedecg simulate --config``), or on real hospitals
    (``data.deployed``, ``fedecg server submit``).

    Each model of ``train.models`` is trained federated through its stages; with
    ``baselines`` also pooled and local-only (``pooled``: pooled alone); the whole study
    repeats for each of ``seeds``.
    """

    data: DataSourceConfig = Field(
        default_factory=lambda: DataSourceConfig(synthesize=SynthesizeConfig()))
    partition: PartitionConfig = Field(default_factory=PartitionConfig)
    federation: FederationConfig = Field(default_factory=FederationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    privacy: DPConfig = Field(default_factory=DPConfig)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    baselines: bool | Literal["pooled"] = Field(
        default=False, description="true: pooled and local-only beside federated; pooled: "
        "pooled alone (local-only costs as much again); false: federated alone")

    @property
    def num_sites(self) -> int:
        """Sites of the study: ``data.deployed.sites`` in deployment, else the partition's."""
        if self.data.deployed is not None:
            return self.data.deployed.sites
        return self.partition.num_sites

    def site_train(self) -> TrainConfig:
        """The training config a federated site trains with: ``train`` with the site's
        ``federation.batch_size`` (the pooled and local-only baselines keep ``train``)."""
        if self.federation.batch_size is None:
            return self.train
        return self.train.model_copy(update={"batch_size": self.federation.batch_size})

    @model_validator(mode="after")
    def _plain_steps_under_sample_dp(self) -> StudyConfig:
        plain = self.train.precision == "fp32" and not self.train.compile
        if self.privacy.enabled and self.privacy.mode == "sample" and not plain:
            raise ValueError(f"train.precision {self.train.precision!r} / train.compile "
                             f"{self.train.compile}: sample-level DP clips per-example "
                             "gradients in fp32 without compilation; set train.precision "
                             "fp32 and train.compile false")
        return self

    @model_validator(mode="after")
    def _enough_sites(self) -> StudyConfig:
        if self.federation.min_sites > self.num_sites:
            where = "data.deployed.sites" if self.data.deployed else "partition.num_sites"
            raise ValueError(f"federation.min_sites {self.federation.min_sites} exceeds "
                             f"{where} {self.num_sites}")
        return self
