"""The privacy-utility plot of a sweep: macro AUROC against ε (``fedecg sweep privacy``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fedecg.report.plots import plot_curves

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_records(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], float | None]:
    """One record per model, task and ε for the plot; ε = ∞ drawn at 2 × the largest finite ε
    (returned, or None when there is none)."""
    finite = [r["target_epsilon"] for r in rows if math.isfinite(r["target_epsilon"])]
    at_inf = 2 * max(finite) if finite else 1.0
    records = []
    for row in rows:
        x = row["target_epsilon"] if math.isfinite(row["target_epsilon"]) else at_inf
        for task in ("diagnosis", "lab"):
            key = f"{task}_macro_auroc"
            records.append({"epsilon": x, "model": row["model"], "task": task,
                            "auroc": row[key], "low": row[f"{key}_low"],
                            "high": row[f"{key}_high"]})
    return records, (at_inf if any(math.isinf(r["target_epsilon"]) for r in rows) else None)


def utility_figure(rows: list[dict[str, Any]]) -> Figure:
    """Diagnosis and lab macro AUROC against ε, one line per model and task, CI bands."""
    records, at_inf = plot_records(rows)
    figure = plot_curves(records, "epsilon", "auroc", group=("model", "task"),
                         band=("low", "high"), title="macro AUROC against ε (bootstrap CI)",
                         xlabel="ε (log scale; ∞ = no DP)", ylabel="macro AUROC", log_x=True)
    ticks = sorted({r["epsilon"] for r in records})
    axes = figure.axes[0]
    axes.set_xticks(ticks, ["∞" if t == at_inf else f"{t:g}" for t in ticks])
    axes.minorticks_off()
    return figure
