"""The study driver: every seed and model of a study, on simulated or deployed sites.

``drive_study(config, out, sites)`` walks the seeds (``train.seed`` set to each), trains every
model federated on ``sites``, exports the first seed's model into ``out/model``, averages the
seeds into ``summary.json`` (with ``metrics.jsonl`` of every run) and adds the privacy section
to the exported model's card. Where the sites run and where test metrics come from is the
``sites`` parameter:

* ``Simulated``: the study's store partitioned into virtual sites (Flower's simulation
  engine); the server scores every model on each site's test split (plus the pooled and
  local-only baselines with ``baselines``);
* ``Deployed``: the sites a Flower grid connects (the hospitals' own stores in deployment, or
  virtual ones); the test metrics are the sites' own (``fedecg.federated.site_test_metrics``), the
  server never sees a record, and ``result.json`` and ``report.html`` record the outcome.

``fedecg.app`` gives both the Flower apps (with the config's privacy) through ``RunOnSites``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flwr.serverapp import Grid
from rich.console import Console

from fedecg.config.federated import StudyConfig
from fedecg.config.train import STAGE_NAMES
from fedecg.data.store import SiteStore
from fedecg.errors import FedecgError
from fedecg.federated.baselines import run_baselines
from fedecg.federated.checkpoint import load_checkpoint
from fedecg.federated.datasource import ensure_partition, ensure_store, make_plan, seed_plans
from fedecg.federated.evaluation import consensus_model, score_everywhere, site_models
from fedecg.federated.orchestration import Progress, RunPlan, initial_model, write_result
from fedecg.federated.simulation import Say, sites_of, warn_small_sites, without_unlabelled_rounds
from fedecg.federated.site_test_metrics import N_TRAIN, deployed_result, final_evaluation
from fedecg.federated.strategies import DROPOUT, REJECTED
from fedecg.federated.study_summary import (
    collect_metrics,
    combine_seeds,
    partition_summary,
    report_models,
)
from fedecg.models.public_encoder import check_public_encoder
from fedecg.privacy.sweep import card_entry, site_budgets
from fedecg.report.run_report import write_run_report
from fedecg.run_folder import RunFolder, prepare_study
from fedecg.training.outputs import output_quality
from fedecg.training.pipeline import data_summary, export_model, naive_results
from fedecg.training.runner import check_crop

log = logging.getLogger(__name__)

RunOnSites = Callable[[RunPlan, Progress | None], None]
"""Runs one model's federated training on the sites (``fedecg.app`` builds it)."""
Export = Callable[[Path], None]
EXPORT_ORDER = ("transfer", "signal-only", "multimodal")


class Sites(Protocol):
    """Where a study's sites run and where its test metrics come from."""

    def prepare(self, config: StudyConfig, out: Path, resume: bool, say: Say,
                console: Console | None) -> StudyConfig:
        """Make or check the run folder (and the data); return the config to run."""

    def outcome(self, out: Path) -> contextlib.AbstractContextManager[None]:
        """Around the study after ``prepare`` (its summary written inside): its outcome."""

    def run_seed(self, config: StudyConfig, out: Path, say: Say,
                 progress: Progress | None) -> tuple[dict[str, Any], Export]:
        """Every model of ``config``'s seed: its result and how to export its model."""

    def finish(self, out: Path, config: StudyConfig, summary: dict[str, Any],
               first: dict[str, Any]) -> None:
        """Add what these sites report to ``summary`` (``first``: the first seed's result;
        the study's ``metrics.jsonl`` is written)."""

    def models(self, config: StudyConfig) -> list[str]:
        """The models the study trains."""


def drive_study(config: StudyConfig, out: Path, sites: Sites, *, resume: bool = False,
                say: Say, progress: Progress | None = None,
                console: Console | None = None) -> dict[str, Any]:
    """Run the whole study into ``out`` on ``sites`` (module docstring); return the summary."""
    config = sites.prepare(config, out, resume, say, console)
    with sites.outcome(out):
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in config.seeds:
            seeded = config.model_copy(update={"train": config.train.model_copy(
                update={"seed": seed})})
            per_seed[seed], export = sites.run_seed(seeded, out, say, progress)
            if seed == config.seeds[0]:
                export(out)
        summary = combine_seeds(per_seed)
        summary.update(seeds=config.seeds, model_names=sites.models(config),
                       by_seed={str(k): v for k, v in per_seed.items()}
                       if len(per_seed) > 1 else {})
        summary["models"] = report_models(summary)
        collect_metrics(out, config)
        sites.finish(out, config, summary, per_seed[config.seeds[0]])
        RunFolder(out).write_summary(summary)
        card_entry(out, site_budgets(out))  # the privacy section of the model card
    return summary


@dataclass
class Simulated:
    """Virtual sites: the study's store (or synthesized twin), partitioned."""

    run: RunOnSites
    store: Path = field(init=False)
    partition: Path = field(init=False)

    def prepare(self, config: StudyConfig, out: Path, resume: bool, say: Say,
                console: Console | None) -> StudyConfig:
        """Find or make the store, check or create RUN, partition the store."""
        self.store = ensure_store(config.data, say, console)
        config = without_unlabelled_rounds(config, self.store, say)
        check_public_encoder(config.train, SiteStore.open(self.store).manifest)
        prepare_study(RunFolder(out), config, resume)
        self.partition = ensure_partition(self.store, config.partition, out)
        warn_small_sites(config, self.store, self.partition, say)
        return config

    def outcome(self, out: Path) -> contextlib.AbstractContextManager[None]:
        """Nothing: the caller sees the study's exception."""
        return contextlib.nullcontext()

    def models(self, config: StudyConfig) -> list[str]:
        """``train.models``."""
        return list(config.train.models)

    def run_seed(self, config: StudyConfig, out: Path, say: Say,
                 progress: Progress | None) -> tuple[dict[str, Any], Export]:
        """Every model federated, scored everywhere; with ``baselines`` pooled (and local-only)."""
        folder, seed = RunFolder(out), config.train.seed
        sites, pooled_data = sites_of(self.store, self.partition)
        check_crop(sites, config.train)  # the partition warned of small splits per site
        result: dict[str, Any] = {"federated": {}, "sites": {}, "pooled": {}, "local_only": {}}
        exports = {}
        for name in config.train.models:
            plan = make_plan(config, name, folder.federated_run(seed, name).path, self.store,
                             self.partition)
            say(f"seed {seed} · {name}: federated on {len(sites.stores)} sites")
            self.run(plan, progress)
            models = site_models(plan, len(sites.stores))
            entry = score_everywhere(models, sites, config.train, seed)
            result["sites"][name] = entry.pop("per_store")
            result["federated"][name] = entry
            weights = [len(s.indices("train")) for s in sites.stores]
            exports[name] = consensus_model(plan, models, weights)
            if config.baselines:
                pooled, local = run_baselines(name, config, sites, pooled_data,
                                              folder.seed(seed) / name, say,
                                              local_only=config.baselines is True)
                result["pooled"][name] = pooled
                if local is not None:
                    result["local_only"][name] = local
        result["naive"] = naive_results(sites, config.train)

        def export(out: Path) -> None:
            name = "transfer" if "transfer" in exports else next(iter(exports))
            export_model(out, name, exports[name], sites.manifest, data_summary(sites),
                         config.train, result["federated"][name],
                         output_quality(exports[name], sites, config.train),
                         federated_stages(config))

        return result, export

    def finish(self, out: Path, config: StudyConfig, summary: dict[str, Any],
               first: dict[str, Any]) -> None:
        """The partition: each site's patients, records, split counts and peak memory."""
        summary["partition"] = partition_summary(self.partition, self.store, out)


@dataclass
class Deployed:
    """The sites a Flower grid connects; ``models`` (default: ``train.models``) to train."""

    grid: Grid
    run: RunOnSites
    models_to_train: list[str] | None = None

    def prepare(self, config: StudyConfig, out: Path, resume: bool, say: Say,
                console: Console | None) -> StudyConfig:
        """Create RUN, or resume the study already in it."""
        out.mkdir(parents=True, exist_ok=True)
        folder = RunFolder(out)
        prepare_study(folder, config, resume=resume or folder.config.is_file())
        return config

    @contextlib.contextmanager
    def outcome(self, out: Path) -> Iterator[None]:
        """``result.json``: running, then ok (once ``report.html`` is written) or failed."""
        models = self.models_to_train
        write_result(out, "running", models=models)
        try:
            yield
        except BaseException as exc:
            write_result(out, "failed", models=models, reason=f"{type(exc).__name__}: {exc}")
            raise
        try:
            write_run_report(out)
        except FedecgError as exc:  # the study is written; a report problem is logged
            log.warning("report not written: %s", exc)
        write_result(out, "ok", models=models)

    def models(self, config: StudyConfig) -> list[str]:
        """The models asked for, else ``train.models``."""
        return list(self.models_to_train or config.train.models)

    def run_seed(self, config: StudyConfig, out: Path, say: Say,
                 progress: Progress | None) -> tuple[dict[str, Any], Export]:
        """Every model federated, then each site tests it and reports its metrics."""
        reports = {}
        plans = seed_plans(config, out, self.models(config))
        for plan in plans:
            log.info("seed %d · %s: federated on the grid's sites", config.train.seed,
                     plan.model)
            self.run(plan, progress)
            reports[plan.model] = final_evaluation(self.grid, plan)
        result = deployed_result(reports, config.train.eval.ci)
        return result, lambda out: _export_global(out, plans, result, reports)

    def finish(self, out: Path, config: StudyConfig, summary: dict[str, Any],
               first: dict[str, Any]) -> None:
        """Which sites took part (training and test rows) and every dropout or rejection."""
        sites = next(iter(first["sites"].values()), {})
        path = RunFolder(out).metrics
        lines = path.read_text().splitlines() if path.is_file() else []
        events = [line for line in map(json.loads, lines)
                  if line["kind"] in (DROPOUT, REJECTED)]
        summary["deployment"] = {
            "expected_sites": config.num_sites, "min_sites": config.federation.min_sites,
            "sites": {name: {"train_records": entry.get(N_TRAIN),
                             "test_records": entry.get("n_test")}
                      for name, entry in sites.items()},
            "events": events}


def federated_stages(config: StudyConfig) -> list[str]:
    """The stages a federated run trains (``federation.rounds`` > 0), in order."""
    return [stage for stage in STAGE_NAMES if config.federation.rounds.of(stage) > 0]


def _export_global(out: Path, plans: list[RunPlan], result: dict[str, Any],
                   reports: dict[str, dict[str, Any]]) -> None:
    """Export the first of ``EXPORT_ORDER`` trained: the global model (shared heads only)."""
    plan = next((p for name in EXPORT_ORDER for p in plans if p.model == name), None)
    if plan is None:
        return
    if plan.config.federation.personal_heads:
        log.warning("personal heads stay at each site: no global inference model to export")
        return
    model = initial_model(plan)
    model.load_state_dict(load_checkpoint(Path(plan.out)).global_state)
    sites = reports[plan.model]
    summary = {"stores": list(sites), "train_records": sum(e[N_TRAIN] for e in sites.values())}
    export_model(out, plan.model, model, plan.manifest, summary, plan.config.train,
                 result["federated"][plan.model], stages=federated_stages(plan.config))

