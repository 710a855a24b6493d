"""The server's walk through the stages: pretraining → lab head → diagnosis.

A ``RunPlan`` is everything both sides need (resolved config, model name, the run's reference
store manifest, where the run writes); the server sends it to the sites as JSON with every
round. Each stage names the keys it shares (``Stage.shared_keys``: the ECG encoder always, the
clinical side while pretraining, the heads unless ``personal_heads``); only those travel. One
Flower strategy per stage runs its rounds through ``Strategy.start``; after every round the
global model, the strategy's state and the metric history are checkpointed, so a killed run
resumes at the next round with the same result. The first global model is the seeded
``initial_model``, with the transfer model's ECG encoder from ``train.encoder_from`` when set
(read by the server only: every site receives it with round 1, as it receives every encoder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedecg.config.base import StrictModel
from fedecg.config.federated import StudyConfig
from fedecg.config.train import ModelName, TrainConfig
from fedecg.data.store import StoreManifest
from fedecg.errors import FederationError
from fedecg.federated import keys
from fedecg.federated.checkpoint import Checkpoint, fingerprint, load_checkpoint, save_checkpoint
from fedecg.federated.flower_log import keep_flower_log_short
from fedecg.federated.params import plain_state, to_arrays, to_state
from fedecg.federated.strategies import DROPOUT, REJECTED, Roster, StageRounds, make_strategy
from fedecg.federated.waiting import wait_for_sites
from fedecg.io import atomic_write_json, atomic_write_text
from fedecg.models.build import build_model
from fedecg.models.joint import JointModel
from fedecg.models.public_encoder import start_from_public_encoder
from fedecg.run_folder import RunFolder
from fedecg.training.checkpoint import Position
from fedecg.training.selection import BestSoFar, patience_in_rounds, stage_score
from fedecg.training.stages import HeadStage, Stage, build_stages

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]
SITE_EVENTS = (DROPOUT, REJECTED)
SELECTED = "selected"  # a metrics line: the round a stage ended with (model selection)
VALIDATION_KEYS = tuple(keys.VAL_PREFIX + key for key in keys.EVALUATION_KEYS)


class RunPlan(StrictModel):
    """One federated training run of one model."""

    config: StudyConfig
    model: ModelName = "transfer"
    manifest: StoreManifest
    out: str
    store: str | None = None
    partition: str | None = None

    def to_json(self) -> str:
        """The plan as compact JSON (what travels in the ``run-plan`` config entry)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> RunPlan:
        """Parse what ``to_json`` wrote."""
        return cls.model_validate_json(text)


def initial_model(plan: RunPlan) -> JointModel:
    """The seeded, untrained model every site starts from (same init as centralized)."""
    return build_model(plan.model, plan.config.train, plan.manifest)


def stages_for(plan: RunPlan) -> list[Stage]:
    """The model's stages; with ``personal_heads`` the heads are not shared."""
    stages = build_stages(plan.config.train, pretrained=plan.model == "transfer")
    if plan.config.federation.personal_heads:
        stages = [dataclasses.replace(s, share_heads=False) if isinstance(s, HeadStage) else s
                  for s in stages]
    return stages


def round_offsets(plan: RunPlan, stages: list[Stage]) -> list[int]:
    """Global rounds finished before each stage starts."""
    offsets, total = [], 0
    for stage in stages:
        offsets.append(total)
        total += plan.config.federation.rounds.of(stage.name)
    return offsets


def write_result(out: Path, status: str, **details: Any) -> None:
    """``result.json``: ``running``, ``ok`` or ``failed`` (with the reason)."""
    atomic_write_json(RunFolder(out).result, {"status": status, **details})


def read_result(out: Path) -> dict[str, Any]:
    """What the ServerApp wrote to ``result.json`` (status ``missing`` if it wrote nothing)."""
    path = RunFolder(out).result
    if not path.is_file():
        return {"status": "missing", "reason": f"{path} was never written: the ServerApp did "
                "not start (see the Flower log above)"}
    return json.loads(path.read_text())


StrategyWrap = Callable[[Strategy], Strategy]
"""Wraps each stage's Flower strategy (the privacy layer's client-level DP), inside StageRounds."""


def run_server(grid: Grid, plan: RunPlan, progress: Progress | None = None,
               wrap: StrategyWrap | None = None) -> None:
    """Run every stage of ``plan`` (resuming from a checkpoint); record the outcome.

    ``wrap`` wraps each stage's strategy (``fedecg.app.client_level``: client-level DP); a
    plan asking for client-level DP is refused without it.
    """
    privacy = plan.config.privacy
    if privacy.enabled and privacy.mode == "client" and wrap is None:
        raise FederationError(f"privacy.mode=client with target_epsilon="
                              f"{privacy.target_epsilon:g}: this server would aggregate without "
                              "differential privacy; run it through fedecg.app")
    keep_flower_log_short()
    out = Path(plan.out)
    out.mkdir(parents=True, exist_ok=True)
    write_result(out, "running", model=plan.model)
    start = time.perf_counter()
    try:
        _serve(grid, plan, progress, wrap)
    except BaseException as exc:
        write_result(out, "failed", model=plan.model, reason=f"{type(exc).__name__}: {exc}")
        raise
    write_result(out, "ok", model=plan.model, seconds=time.perf_counter() - start)


def _serve(grid: Grid, plan: RunPlan, progress: Progress | None,
           wrap: StrategyWrap | None) -> None:
    out = Path(plan.out)
    plan_json = plan.to_json()
    stamp = fingerprint(plan_json)
    model = initial_model(plan)
    start_from_public_encoder(model, plan.model, plan.config.train, plan.manifest)
    stages = stages_for(plan)
    saved = load_checkpoint(out, stamp)
    run = Checkpoint(Position(), plain_state(model), stamp) if saved is None else saved
    if not run.position.done:
        await_sites(grid, plan)
    offsets = round_offsets(plan, stages)
    roster = Roster()  # the sites heard from, across stages
    try:
        for index, stage in enumerate(stages):
            rounds = plan.config.federation.rounds.of(stage.name)
            done = run.position.finished if index == run.position.stage_index else 0
            if index < run.position.stage_index or done >= rounds:
                continue
            _run_stage(grid, plan, plan_json, index, stage, model, run, offsets[index],
                       progress, wrap, roster)
    except BaseException:
        _keep_events(out, run)
        raise
    run.position = dataclasses.replace(run.position, done=True)
    save_checkpoint(out, run)


def _keep_events(out: Path, run: Checkpoint) -> None:
    """Add the site events of an unfinished round to the last checkpoint (and metrics.jsonl),
    so the dropouts that stopped a run stay on record when it resumes; the round's other
    lines are dropped, since the resumed run trains that round again."""
    saved = load_checkpoint(out, run.fingerprint)
    kept = saved.history if saved is not None else []
    events = [line for line in run.history[len(kept):] if line["kind"] in SITE_EVENTS]
    if not events:
        return
    last = saved or dataclasses.replace(run, history=[])
    last.history = kept + events
    save_checkpoint(out, last)
    write_metrics(out, last.history)


def await_sites(grid: Grid, plan: RunPlan) -> int:
    """Wait up to ``connect_timeout_s`` for every expected site; return how many came.

    Fewer than ``min_sites`` after the wait stops the run with the count.
    """
    federation = plan.config.federation
    expected, needed = plan.config.num_sites, federation.min_sites
    online = wait_for_sites(grid, expected, federation.connect_timeout_s)
    if online < needed:
        raise FederationError(
            f"{online} of {expected} site(s) connected within federation.connect_timeout_s="
            f"{federation.connect_timeout_s:g} s, fewer than federation.min_sites={needed}; "
            "start the missing sites' nodes (`fedecg node start`) and submit again")
    if online < expected:
        log.warning("starting with %d of %d expected sites", online, expected)
    return online


def _run_stage(grid: Grid, plan: RunPlan, plan_json: str, index: int, stage: Stage,
               model: JointModel, run: Checkpoint, offset: int, progress: Progress | None,
               wrap: StrategyWrap | None, roster: Roster) -> None:
    out = Path(plan.out)
    federation = plan.config.federation
    rounds = federation.rounds.of(stage.name)
    done = run.position.finished if index == run.position.stage_index else 0

    def record(kind: str, stage_round: int, site_index: int | None, site: str,
               metrics: dict[str, Any]) -> None:
        run.history.append(_line(plan.model, stage.name, offset + stage_round, stage_round,
                                 kind, site_index, site, metrics))

    strategy = make_strategy(federation.strategy, plan.config.num_sites, federation.min_sites)
    wrapper = StageRounds(wrap(strategy) if wrap is not None else strategy, stage.name, done,
                          record, federation.min_sites, federation.round_timeout_s, roster,
                          federation.max_update_norm_ratio)
    if done > 0:
        wrapper.load_state(run.strategy_state)
    else:
        run.best = BestSoFar()
    shared = stage.shared_keys(model)
    selection = plan.config.train.early_stopping
    patience = patience_in_rounds(selection, federation.local_epochs)

    def after_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None
        stage_round = done + server_round
        global_round = offset + stage_round
        run.global_state.update(to_state(arrays))
        run.history.extend(round_summary(run.history, global_round))
        run.best.observe(stage_round, _validation_score(run.history, global_round, stage.name,
                                                        plan.config.train),
                         lambda: {key: run.global_state[key] for key in shared}, selection)
        stalled = run.best.stalled(stage_round, patience)
        if stalled or stage_round == rounds:
            _keep_best(run, plan.model, stage.name, offset, stage_round, rounds)
        run.position = Position(index, rounds if stalled else stage_round)
        run.global_round = global_round
        run.strategy_state = wrapper.state()
        save_checkpoint(out, run)
        write_metrics(out, run.history)
        if progress is not None:
            progress({"model": plan.model, "stage": stage.name, "round": stage_round,
                      "rounds": rounds, "global_round": global_round,
                      "seed": plan.config.train.seed,
                      "lines": [h for h in run.history if h["round"] == global_round]})
        if stalled:
            raise _StageStopped
        return None

    def message_config() -> ConfigRecord:
        return ConfigRecord({keys.RUN_PLAN: plan_json, keys.STAGE_INDEX: index})

    log.info("stage %s: rounds %d..%d, sharing %d keys", stage.name, done + 1, rounds,
             len(shared))
    try:
        wrapper.start(grid, to_arrays(run.global_state, shared), num_rounds=rounds - done,
                      timeout=federation.round_timeout_s, train_config=message_config(),
                      evaluate_config=message_config(), evaluate_fn=after_round)
    except _StageStopped:
        pass
    except FederationError:
        if not (stage.name == "lab" and done == 0 and _nobody_trained(run.history, offset + 1)):
            raise
        log.warning("stage lab: no site holds a known lab label (sites without labs); the lab "
                    "stage is skipped, the lab outputs stay untrained")


class _StageStopped(Exception):
    """Raised from the round callback to end a stage whose validation score stalled."""


def _validation_score(history: list[dict[str, Any]], global_round: int, stage: str,
                      config: TrainConfig) -> float | None:
    """The aggregated model's validation score after ``global_round`` (``stage_score`` of the
    example-weighted ``all`` line), or None when no site had validation rows."""
    line = _all_sites(history, global_round)
    if line is None:
        return None
    return stage_score(stage, config, line.get(keys.VAL_PREFIX + keys.LOSS),
                       line.get(keys.VAL_PREFIX + keys.LAB_AUROC),
                       line.get(keys.VAL_PREFIX + keys.DIAGNOSIS_AUROC))


def _all_sites(history: list[dict[str, Any]], global_round: int) -> dict[str, Any] | None:
    """The example-weighted ``all`` evaluate line of ``global_round`` (None: no site scored)."""
    return next((line for line in history if line["round"] == global_round
                 and line["kind"] == "evaluate" and line["site"] == "all"), None)


def _keep_best(run: Checkpoint, model: str, stage: str, offset: int, stage_round: int,
               rounds: int) -> None:
    """End the stage with its best round's shared weights (``keep_best``), on record as a
    ``selected`` line: the round kept (the last one without ``keep_best``), its validation
    scores (none when no site could score it), and the rounds trained."""
    best = run.best.best_weights(stage_round)
    if best is not None:
        run.global_state.update(best)
    kept = run.best.step if best is not None else stage_round
    scores = _all_sites(run.history, offset + kept) or {}
    run.history.append(_line(model, stage, offset + stage_round, stage_round, SELECTED, -1,
                             "all", {"selected-round": offset + kept,
                                     "selected-stage-round": kept,
                                     **{key: scores.get(key) for key in VALIDATION_KEYS},
                                     "rounds-trained": stage_round, "rounds-planned": rounds}))


def _nobody_trained(history: list[dict[str, Any]], global_round: int) -> bool:
    """True when every site that answered round ``global_round`` trained on 0 examples."""
    answers = [h for h in history if h["round"] == global_round and h["kind"] == "train"]
    return bool(answers) and all(not h.get(keys.NUM_EXAMPLES) for h in answers)


def _line(model: str, stage: str, global_round: int, stage_round: int, kind: str,
          site_index: int | None, site: str, metrics: dict[str, Any]) -> dict[str, Any]:
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
             for k, v in metrics.items()}
    return {"model": model, "stage": stage, "round": global_round, "stage_round": stage_round,
            "kind": kind, "site_index": site_index, "site": site, **clean}


def round_summary(history: list[dict[str, Any]], global_round: int) -> list[dict[str, Any]]:
    """Example-weighted means over the sites of one round's evaluation (site ``all``): test
    scores by test rows, validation scores by validation rows."""
    lines = [h for h in history if h["round"] == global_round and h["kind"] == "evaluate"
             and h["site"] != "all"]
    if not lines:
        return []
    merged: dict[str, Any] = {}
    for prefix in ("", keys.VAL_PREFIX):
        count = prefix + keys.NUM_EXAMPLES
        merged[count] = sum(h.get(count) or 0 for h in lines)
        for key in (prefix + k for k in keys.EVALUATION_KEYS):
            pairs = [(h[key], h[count]) for h in lines
                     if h.get(key) is not None and (h.get(count) or 0) > 0]
            weight = sum(w for _, w in pairs)
            merged[key] = sum(v * w for v, w in pairs) / weight if weight else None
    first = lines[0]
    return [_line(first["model"], first["stage"], global_round, first["stage_round"],
                  "evaluate", -1, "all", merged)]


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` (one line per round per site per stage) atomically."""
    atomic_write_text(RunFolder(out).metrics,
                      "".join(json.dumps(line) + "\n" for line in history))

