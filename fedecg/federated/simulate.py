"""The parts of a federated study (``fedecg.study`` walks them): its run folder, one model's
run in Flower's simulation engine, the pooled/local-only baselines, and the summary.

``run_in_simulation`` runs a ServerApp and ClientApp (``fedecg.app``) over virtual sites (Ray,
one CPU per site); the ServerApp writes ``result.json`` and the run fails with that reason when
it did not finish (Flower itself returns normally on failure). With ``baselines`` the same
model is also trained centrally on all sites' training rows (``pooled``) and on each site alone
(``local_only``), for the same epochs per stage as the federated run (rounds × local epochs).

RUN holds ``config.yaml``, ``partition/``, ``metrics.jsonl`` (one line per round, site and
stage), ``summary.json``, ``model/`` and one folder per seed with each run's checkpoints.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedecg.config.base import dump_config, read_yaml
from fedecg.config.federated import StudyConfig
from fedecg.config.train import TrainConfig
from fedecg.data.store import SiteStore
from fedecg.errors import FederationError, OutputExistsError, TrainingError
from fedecg.federated.checkpoint import load_checkpoint
from fedecg.federated.evaluation import score_everywhere
from fedecg.federated.flower_env import use_flower_env
from fedecg.federated.orchestration import METRICS_FILE, RunPlan, read_result
from fedecg.federated.partition import load_partition, site_view
from fedecg.federated.ray_session import ray_session
from fedecg.io import OutputKind, atomic_write_text, claim_output, mark_output
from fedecg.training.data import TrainingData
from fedecg.training.outputs import budget_warnings, has_known
from fedecg.training.runner import MetricsLog, fit_model

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"
Say = Callable[[str], None]


def prepare_run_dir(out: Path, config: StudyConfig, resume: bool) -> None:
    """Create RUN for a new study, or check that RUN holds this study when resuming."""
    out = Path(out)
    inputs = [config.data.store] if config.data.store is not None else []
    existing = claim_output(out, OutputKind.STUDY, inputs=inputs, existing_ok=True)
    if resume:
        if not existing or not (out / CONFIG_FILE).is_file():
            raise FederationError(f"{out}: no study here; --resume needs a study folder "
                                  "made by `fedecg simulate`")
        if read_yaml(out / CONFIG_FILE) != config.model_dump(mode="json"):
            raise FederationError(f"{out}: its {CONFIG_FILE} differs from this config; resume "
                                  "without --config/--set, or start a new --out")
        return
    if existing:
        raise OutputExistsError(f"{out}: already holds a study; choose another --out, or "
                                "pass --resume RUN to continue it")
    out.mkdir(parents=True, exist_ok=True)
    mark_output(out, OutputKind.STUDY)
    dump_config(config, out / CONFIG_FILE)


def run_in_simulation(plan: RunPlan, server_app: ServerApp, client_app: ClientApp) -> None:
    """Run one model's federated training (``server_app`` and ``client_app``, from
    ``fedecg.app``) in Flower's simulation engine; skip it if its checkpoint says finished."""
    saved = load_checkpoint(Path(plan.out))
    if saved is not None and saved.position.done:
        return
    from flwr.simulation import run_simulation

    use_flower_env(Path(plan.out) / ".flwr")
    federation = plan.config.federation
    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    # fedecg reports progress itself, and site failures from their replies (strategies.py)
    flower_log.setLevel(logging.ERROR)
    with ray_session() as ray_args:
        backend = {"client_resources": {"num_cpus": federation.client_cpus, "num_gpus": 0.0},
                   "init_args": {"num_cpus": max(1, int(os.cpu_count() or 1)), "num_gpus": 0,
                                 "include_dashboard": False, "log_to_driver": False,
                                 "object_store_memory": 128 * 1024 ** 2, **ray_args}}
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


def baseline_config(config: StudyConfig) -> TrainConfig:
    """The centralized config with the federated run's epochs per stage (and one pass per
    epoch: ``min_steps`` does not apply to federated rounds, so it does not to baselines)."""
    federation = config.federation
    train = config.train
    return train.model_copy(update={
        stage: getattr(train, stage).model_copy(update={
            "epochs": federation.rounds.of(stage) * federation.local_epochs, "min_steps": 0})
        for stage in ("pretrain", "lab", "diagnosis")})


def run_baselines(name: str, config: StudyConfig, sites: TrainingData,
                  pooled_data: TrainingData, folder: Path,
                  say: Say) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pooled and local-only training of ``name``, each tested everywhere."""
    train = baseline_config(config)
    stores = sites.stores
    say(f"{name}: pooled baseline")
    pooled_model = fit_model(name, pooled_data, train, folder / "pooled.pt",
                             MetricsLog(folder / "pooled.jsonl"))
    pooled = score_everywhere([pooled_model] * len(stores), sites, train, train.seed)
    local: dict[str, Any] = {}
    for store in stores:
        site = store.manifest.site_name
        say(f"{name}: local-only baseline at {site}")
        try:
            model = fit_model(name, TrainingData([store]), train, folder / f"local-{site}.pt",
                              MetricsLog(folder / f"local-{site}.jsonl"))
        except TrainingError as exc:
            log.warning("local-only %s at %s not trained: %s", name, site, exc)
            local[site] = None
            continue
        local[site] = score_everywhere([model] * len(stores), sites, train, train.seed)
    return pooled, {"sites": local, **mean_local(local)}


def mean_local(local: dict[str, Any]) -> dict[str, Any]:
    """Mean over local-only models: on the pooled test split, and each on its own site."""
    entries = {site: e for site, e in local.items() if e is not None}
    result: dict[str, Any] = {}
    for key in ("diagnosis_macro_auroc", "lab_macro_auroc"):
        pooled = [e[key] for e in entries.values() if e.get(key) is not None]
        own = [e["per_store"][s][key] for s, e in entries.items()
               if (e["per_store"].get(s) or {}).get(key) is not None]
        result[key] = float(np.mean(pooled)) if pooled else None
        result[f"{key}_own_site"] = float(np.mean(own)) if own else None
    return result


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
        for line in budget_warnings(config.train, TrainingData([site]), epochs,
                                    test_split=False):
            say(f"warning: site {site.manifest.site_name}: {line}")


def combine_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One seed's results as they are; several seeds' averaged value by value."""
    results = list(per_seed.values())
    return results[0] if len(results) == 1 else _mean_tree(results)


def _mean_tree(values: list[Any]) -> Any:
    if all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _mean_tree([v.get(k) for v in values]) for k in keys}
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and len(numbers) == len([v for v in values if v is not None]):
        return float(np.mean(numbers))
    lists = [v for v in values if isinstance(v, list)]
    if lists and all(len(v) == len(lists[0]) and all(isinstance(x, int | float) for x in v)
                     for v in lists):
        return [float(x) for x in np.mean(np.asarray(lists, dtype=float), axis=0)]
    return next((v for v in values if v is not None), None)


def report_models(summary: dict[str, Any]) -> dict[str, Any]:
    """``model · federated|pooled|local-only`` entries in the layout the run report reads."""
    entries: dict[str, Any] = {}
    for name, entry in summary["federated"].items():
        entries[f"{name} · federated"] = {**entry, "per_store": summary["sites"][name]}
        if name in summary["pooled"]:
            entries[f"{name} · pooled"] = summary["pooled"][name]
            entries[f"{name} · local-only (mean)"] = {
                k: v for k, v in summary["local_only"][name].items() if k != "sites"}
    entries["naive"] = summary["naive"]
    return entries


def partition_summary(partition_dir: Path, store: Path) -> dict[str, Any]:
    partition = load_partition(partition_dir, SiteStore.open(store))
    return {"store": partition.store, "label_skew": partition.label_skew,
            **partition.config.model_dump(mode="json"),
            "sites": {s.name: {"patients": s.n_patients, "records": s.n_records,
                               **s.split_counts} for s in partition.sites}}


def collect_metrics(out: Path, config: StudyConfig) -> None:
    """RUN/metrics.jsonl: every federated run's lines, with its seed."""
    lines = []
    for seed in config.seeds:
        for name in config.train.models:
            path = out / f"seed-{seed}" / name / "federated" / METRICS_FILE
            if path.is_file():
                lines += [f'{{"seed": {seed}, ' + line[1:] for line in
                          path.read_text().splitlines() if line.startswith("{")]
    atomic_write_text(out / METRICS_FILE, "".join(line + "\n" for line in lines))
