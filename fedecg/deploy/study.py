"""A whole study on a Flower grid: every seed and model, the final federated evaluation, and
the study folder that ``fedecg simulate`` would write (``config.yaml``, ``metrics.jsonl``,
``summary.json``, ``model/``, ``report.html``), plus ``result.json`` with the outcome.

This is what the ServerApp of ``flwr run`` does, in deployment (``data.deployed``: the
hospitals' own stores) and over simulated sites alike. Its test metrics are the sites' own
(``fedecg.federated.final_report``): a deployed server never sees a record. Submitting the
same study to the same folder again resumes it from its checkpoints.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from fedecg.config.federated import SimulationConfig
from fedecg.errors import FedecgError
from fedecg.federated.checkpoint import load_checkpoint
from fedecg.federated.datasource import (
    run_models,
    seed_plans,
    study_from_run_config,
    study_out,
)
from fedecg.federated.final_report import N_TRAIN, deployed_result, final_evaluation
from fedecg.federated.orchestration import (
    METRICS_FILE,
    Progress,
    RunPlan,
    initial_model,
    run_server,
    write_result,
)
from fedecg.federated.simulate import (
    CONFIG_FILE,
    SUMMARY_FILE,
    collect_metrics,
    combine_seeds,
    prepare_run_dir,
    report_models,
)
from fedecg.federated.strategies import DROPOUT, REJECTED
from fedecg.io import SHARED, atomic_write_json
from fedecg.privacy.apps import client_level
from fedecg.privacy.sweep import card_entry, site_budgets
from fedecg.report.run_report import write_run_report
from fedecg.training.pipeline import export_model

log = logging.getLogger(__name__)

EXPORT_ORDER = ("transfer", "signal-only", "multimodal")


def serve_study(grid: Grid, run_config: dict[str, Any], run_id: int = 0,
                progress: Progress | None = None) -> dict[str, Any]:
    """Run the study the run config names on ``grid``; write its folder; return the summary."""
    config = study_from_run_config(run_config)
    out = study_out(run_config, config, run_id)
    models = run_models(run_config, config)
    out.mkdir(parents=True, exist_ok=True)
    prepare_run_dir(out, config, resume=(out / CONFIG_FILE).is_file())
    write_result(out, "running", models=models)
    try:
        summary = _serve(grid, config, out, models, progress)
    except BaseException as exc:
        write_result(out, "failed", models=models, reason=f"{type(exc).__name__}: {exc}")
        raise
    write_result(out, "ok", models=models)
    return summary


def _serve(grid: Grid, config: SimulationConfig, out: Path, models: list[str],
           progress: Progress | None) -> dict[str, Any]:
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in config.seeds:
        seeded = config.model_copy(update={"train": config.train.model_copy(
            update={"seed": seed})})
        reports = {}
        plans = seed_plans(seeded, out, models)
        for plan in plans:
            log.info("seed %d · %s: federated on the grid's sites", seed, plan.model)
            run_server(grid, plan, progress, client_level(plan))
            reports[plan.model] = final_evaluation(grid, plan)
        per_seed[seed] = deployed_result(reports, seeded.train.eval.ci)
        if seed == config.seeds[0]:
            _export(out, plans, per_seed[seed], reports)
    summary = combine_seeds(per_seed)
    collect_metrics(out, config)
    summary.update(seeds=config.seeds, model_names=models, models=report_models(summary),
                   by_seed={str(k): v for k, v in per_seed.items()} if len(per_seed) > 1 else {},
                   deployment=_deployment(out, config, per_seed[config.seeds[0]]))
    atomic_write_json(out / SUMMARY_FILE, summary, SHARED)
    card_entry(out, site_budgets(out))
    try:
        write_run_report(out)
    except FedecgError as exc:  # the study is written; a report problem is logged, not fatal
        log.warning("report not written: %s", exc)
    return summary


def _export(out: Path, plans: list[RunPlan], result: dict[str, Any],
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
                 result["federated"][plan.model])


def _deployment(out: Path, config: SimulationConfig, result: dict[str, Any]) -> dict[str, Any]:
    """Which sites took part (training and test rows) and every dropout or rejected update."""
    sites = next(iter(result["sites"].values()), {})
    lines = (out / METRICS_FILE).read_text().splitlines() if (out / METRICS_FILE).is_file() else []
    events = [line for line in map(json.loads, lines) if line["kind"] in (DROPOUT, REJECTED)]
    return {"expected_sites": config.num_sites, "min_sites": config.federation.min_sites,
            "sites": {name: {"train_records": entry.get(N_TRAIN), "test_records":
                             entry.get("n_test")} for name, entry in sites.items()},
            "events": events}
