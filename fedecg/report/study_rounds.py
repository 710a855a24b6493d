"""The round-by-round sections of a study's ``report.html``, from its ``metrics.jsonl``.

* curves per round: validation and test loss and AUROC of every site and the example-weighted
  ``all``, stage boundaries and site events marked;
* site events: sites that dropped out or whose update the server rejected (metrics lines of
  kind ``dropout``/``rejected``);
* privacy: mechanism, unit protected, each site's final (ε, δ), clipping norm, noise
  multiplier, and each site's cumulative ε per round.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedecg.federated import keys
from fedecg.federated.orchestration import SELECTED
from fedecg.federated.strategies import DROPOUT, REJECTED
from fedecg.privacy.card import privacy_card
from fedecg.privacy.sample_dp import DP_STEPS, EPSILON, STOPPED
from fedecg.privacy.sweep import site_budgets, study_privacy
from fedecg.report.html import HtmlPage
from fedecg.report.plots import plot_round_panels
from fedecg.report.run_report import trained_heads_only

SITE_EVENTS = (DROPOUT, REJECTED)
"""Kinds of the metrics lines the server writes for a site that failed, timed out or was refused."""
CURVE_PANELS = (
    ("validation loss", keys.VAL_PREFIX + keys.LOSS),
    ("validation diagnosis macro AUROC", keys.VAL_PREFIX + keys.DIAGNOSIS_AUROC),
    ("validation lab macro AUROC", keys.VAL_PREFIX + keys.LAB_AUROC),
    ("test loss", keys.LOSS),
    ("test diagnosis macro AUROC", keys.DIAGNOSIS_AUROC),
    ("test lab macro AUROC", keys.LAB_AUROC))
ALL_SITES = "all"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def of_seed(records: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The lines of one seed (lines without a seed belong to every seed)."""
    return [r for r in records if r.get("seed", seed) == seed]


def stage_boundaries(lines: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """``(x, stage)`` half a round before each stage's first round, in round order."""
    first: dict[str, int] = {}
    for line in lines:
        if isinstance(line.get("round"), int) and "stage" in line:
            first[line["stage"]] = min(first.get(line["stage"], line["round"]), line["round"])
    return sorted((start - 0.5, stage) for stage, start in first.items())


def curves_section(page: HtmlPage, records: list[dict[str, Any]], models: Sequence[str],
                   seed: int) -> None:
    """Per model: validation and test loss/AUROC per round, per site and ``all``."""
    page.heading("Curves per round and stage")
    lines = of_seed(records, seed)
    shown = False
    for model in models:
        mine = [r for r in lines if r.get("model") == model]
        curves = [trained_heads_only(r) for r in mine if r.get("kind") == "evaluate"]
        if not curves:
            continue
        marks = sorted({float(r["round"]) for r in mine if r.get("kind") in SITE_EVENTS})
        page.heading(model, level=3)
        figure = plot_round_panels(curves, CURVE_PANELS, boundaries=stage_boundaries(mine),
                                   marks=marks, emphasis=ALL_SITES,
                                   log_metrics={keys.LOSS, keys.VAL_PREFIX + keys.LOSS})
        kept = ", ".join(f"{r['stage']} keeps round {r['selected-round']}"
                         + (" (stopped early)" if r["rounds-trained"] < r["rounds-planned"]
                            else "") for r in mine if r.get("kind") == SELECTED)
        page.figure(figure, caption=f"{model}, seed {seed}: after each round, the aggregated "
                    "model on the validation and test split of each site; black: all sites, "
                    "weighted by their examples; dashed lines: stage starts; red dotted: a "
                    "site dropped out or was rejected. Each stage ends with its round of "
                    f"lowest validation loss{': ' + kept if kept else ''}. Loss axes are "
                    "logarithmic. A head's AUROC is drawn from the stage that trains it on.")
        shown = True
    if not shown:
        page.paragraph("metrics.jsonl holds no federated round of this study.", note=True)


def events_section(page: HtmlPage, records: list[dict[str, Any]]) -> None:
    """The table of sites that dropped out or were rejected, or a line saying none did."""
    page.heading("Site events")
    events = [r for r in records if r.get("kind") in SITE_EVENTS]
    if not events:
        page.paragraph("No site dropped out or was rejected.")
        return
    headers = ["seed", "model", "stage", "round (in stage)", "site", "node", "event", "reason"]
    rows = [[r.get("seed", "—"), r.get("model"), r.get("stage"),
             f"{r.get('round')} ({r.get('stage_round')})", r.get("site"), r.get("node_id"),
             r.get("kind"), r.get("reason")] for r in events]
    page.table(headers, rows, caption="Sites that failed or timed out (dropout) or whose "
               "update the server refused (rejected); the round went on without them.")


def privacy_section(page: HtmlPage, records: list[dict[str, Any]], run_dir: Path,
                    seed: int) -> None:
    """Mechanism, unit protected, each site's final (ε, δ), clipping, noise; ε per round."""
    page.heading("Privacy")
    config = study_privacy(run_dir)
    if config is None or not config.enabled:
        page.paragraph("No differential privacy in this study (privacy.mode none or target "
                       "ε = ∞): the models that leave the sites are not private.")
        return
    budgets = site_budgets(run_dir)
    card = privacy_card(config, next(iter(budgets.values()), {})) or {}
    page.table(["", ""], [["mechanism", card["mechanism"]],
                          ["unit protected", card["unit_protected"]],
                          ["accountant", config.accountant],
                          ["target ε", f"{config.target_epsilon:g}"],
                          ["clipping norm", f"{card['clipping_norm']:g}"],
                          ["not covered", card["not_covered"]]])
    train = [r for r in records if r.get("kind") == "train" and _finite(r.get(EPSILON))]
    rows = [[model, site, f"{budget['epsilon']:.3f}", f"{budget['delta']:g}",
             _number(budget.get("noise_multiplier")), *_steps(train, model, site)]
            for model, sites in budgets.items() for site, budget in sites.items()]
    page.table(["model", "site", "final ε", "δ", "noise multiplier", "DP steps",
                "stopped (budget spent)"], rows,
               caption="Each site's cumulative (ε, δ) at the end of the run, the largest over "
                       "seeds; client-level DP protects a whole site, so it has one row (all).")
    lines = of_seed(train, seed)
    if not lines:
        page.paragraph("No per-round ε in metrics.jsonl (client-level DP is accounted by "
                       "the server, once per round for all sites).", note=True)
        return
    for model in dict.fromkeys(r["model"] for r in lines):
        mine = [r for r in lines if r["model"] == model]
        page.figure(plot_round_panels(mine, [(f"{model}: cumulative ε", EPSILON)], columns=1,
                                      boundaries=stage_boundaries(mine),
                                      reference=config.target_epsilon),
                    caption=f"{model}, seed {seed}: each site's ε spent since round 1, per "
                            "round; dashed lines: stage starts and the target ε.")


def _number(value: Any) -> str:
    return f"{value:.3f}" if _finite(value) else "—"


def _steps(train: list[dict[str, Any]], model: str, site: str) -> list[Any]:
    """The most DP steps a site took (over seeds) and whether its budget stopped it."""
    mine = [r for r in train if r.get("model") == model and r.get("site") == site]
    if not mine:
        return ["—", "—"]
    steps = max(r.get(DP_STEPS) or 0 for r in mine)
    return [int(steps), "yes" if any(r.get(STOPPED) for r in mine) else "no"]
