"""Virtual sites in Flower's simulation engine: a study's partition as sites, and one model's
federated run over them.

``run_in_simulation`` runs a ServerApp and ClientApp (``fedecg.app``) over virtual sites (Ray,
one CPU per site); the ServerApp writes ``result.json`` and the run fails with that reason when
it did not finish (Flower itself returns normally on failure). ``sites_of`` opens the
partition's sites; ``without_unlabelled_rounds`` and ``warn_small_sites`` check them first.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedecg.config.federated import StudyConfig
from fedecg.data.store import SiteStore
from fedecg.errors import FederationError
from fedecg.federated.checkpoint import load_checkpoint
from fedecg.federated.flower_env import use_flower_env
from fedecg.federated.orchestration import RunPlan, read_result
from fedecg.federated.partition import load_partition, site_view
from fedecg.federated.ray_session import cluster_address, ray_session
from fedecg.training.data import TrainingData
from fedecg.training.outputs import budget_warnings, has_known

log = logging.getLogger(__name__)

Say = Callable[[str], None]


def run_in_simulation(plan: RunPlan, server_app: ServerApp, client_app: ClientApp) -> None:
    """Run one model's federated training (``server_app`` and ``client_app``, from
    ``fedecg.app``) in Flower's simulation engine; skip it if its checkpoint says finished."""
    saved = load_checkpoint(Path(plan.out))
    if saved is not None and saved.position.done:
        return
    from flwr.simulation import run_simulation

    use_flower_env(Path(plan.out) / ".flwr")
    federation = plan.config.federation
    address = cluster_address(federation.ray_address)
    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    # fedecg reports progress itself, and site failures from their replies (strategies.py)
    flower_log.setLevel(logging.ERROR)
    with ray_session(address) as ray_args:
        backend = {"client_resources": {"num_cpus": federation.client_cpus, "num_gpus": 0.0},
                   "init_args": {"include_dashboard": False, "log_to_driver": False,
                                 **ray_args}}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                run_simulation(server_app, client_app, num_supernodes=plan.config.num_sites,
                               backend_config=backend)
        except Exception as exc:  # Flower re-raises ServerApp errors; result.json has the reason
            log.debug("simulation raised %s", exc)
        finally:
            flower_log.setLevel(level)
    result = read_result(Path(plan.out))
    if result["status"] != "ok":
        raise FederationError(f"federated {plan.model} run in {plan.out} failed: "
                              f"{result.get('reason', result['status'])}")


def sites_of(store: Path, partition_dir: Path) -> tuple[TrainingData, TrainingData]:
    """The partition's sites (one view of the store each) and all their rows as one pool."""
    opened = SiteStore.open(store)
    partition = load_partition(partition_dir, opened)
    rows = [partition.site_rows(i) for i in range(len(partition.sites))]
    sites = TrainingData([site_view(opened, r, name=site.name)
                          for r, site in zip(rows, partition.sites, strict=True)])
    return sites, TrainingData([site_view(opened, np.concatenate(rows), name="pooled")])


def without_unlabelled_rounds(config: StudyConfig, store: Path, say: Say
                              ) -> StudyConfig:
    """``config`` with no lab rounds when no site holds a known lab label (said once)."""
    if config.federation.rounds.lab == 0 or has_known(TrainingData([SiteStore.open(store)]),
                                                      "lab"):
        return config
    say("no site holds a known lab label (sites without labs): the lab stage is skipped; "
        "the sites pretrain on what they have and train the diagnosis head")
    federation = config.federation.model_copy(update={
        "rounds": config.federation.rounds.model_copy(update={"lab": 0})})
    return config.model_copy(update={"federation": federation})


def warn_small_sites(config: StudyConfig, store: Path, partition_dir: Path,
                     say: Say) -> None:
    """Say, per site, which stages take few steps (few positives per split are said by the
    partition, ``split_problems``)."""
    federation = config.federation
    epochs = {stage: federation.rounds.of(stage) * federation.local_epochs
              for stage in ("pretrain", "lab", "diagnosis")}
    sites, _ = sites_of(store, partition_dir)
    for site in sites.stores:
        for line in budget_warnings(config.site_train(), TrainingData([site]), epochs,
                                    test_split=False):
            say(f"warning: site {site.manifest.site_name}: {line}")
