"""Results tables (markdown) and figures of the studies in ``run_studies.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fedecg.io import atomic_write_text

DX, LAB = "diagnosis_macro_auroc", "lab_macro_auroc"
MODELS = ("signal-only", "transfer", "multimodal")


def _f(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _ci(entry: dict[str, Any], key: str) -> str:
    interval = entry.get(f"{key}_ci")
    if not interval:
        return _f(entry.get(key))
    return f"{_f(entry.get(key))} [{interval[0]:.3f}, {interval[1]:.3f}]"


def protocol_table(summary: dict[str, Any]) -> str:
    """Federated vs pooled vs local-only (mean over sites) for every model of one study."""
    rows = ["| model | federated dx | pooled dx | local-only dx (mean) | local-only dx (own "
            "site) | federated lab | pooled lab |", "|---|---|---|---|---|---|---|"]
    for model in [m for m in MODELS if m in summary["federated"]]:
        fed = summary["federated"][model]
        pooled = summary["pooled"].get(model, {})
        local = summary["local_only"].get(model, {})
        rows.append(f"| {model} | {_ci(fed, DX)} | {_ci(pooled, DX)} | {_f(local.get(DX))} | "
                    f"{_f(local.get(DX + '_own_site'))} | {_ci(fed, LAB)} | "
                    f"{_ci(pooled, LAB)} |")
    return "\n".join(rows)


def comparison_table(summaries: dict[str, dict[str, Any]], names: list[str],
                     pooled: dict[str, Any] | None, model: str = "transfer") -> str:
    """One row per study: label skew, federated AUROCs, and the gap to pooled."""
    rows = ["| study | label skew | federated dx | federated lab | dx gap to pooled | "
            "mean-site dx | worst-site dx |", "|---|---|---|---|---|---|---|"]
    base = (pooled or {}).get(model, {}).get(DX)
    for name in names:
        if name not in summaries:
            continue
        summary = summaries[name]
        fed = summary["federated"][model]
        sites = [e.get(DX) for e in summary["sites"][model].values() if e and e.get(DX)]
        gap = None if base is None or fed.get(DX) is None else fed[DX] - base
        mean = sum(sites) / len(sites) if sites else None
        rows.append(f"| {name} | {summary['partition']['label_skew']:.3f} | {_ci(fed, DX)} | "
                    f"{_ci(fed, LAB)} | {_f(gap)} | {_f(mean)} | "
                    f"{_f(min(sites) if sites else None)} |")
    return "\n".join(rows)


def protocol_figure(summary: dict[str, Any], path: Path) -> None:
    """Bars: diagnosis macro AUROC of each model, federated / pooled / local-only mean."""
    models = [m for m in MODELS if m in summary["federated"]]
    kinds = [("federated", summary["federated"]), ("pooled", summary["pooled"]),
             ("local-only (mean)", summary["local_only"])]
    figure = Figure(figsize=(7, 3.5))
    axis = figure.subplots()
    width = 0.8 / len(kinds)
    for k, (label, table) in enumerate(kinds):
        values = [(table.get(m) or {}).get(DX) or 0.0 for m in models]
        axis.bar([i + k * width for i in range(len(models))], values, width, label=label)
    axis.set_xticks([i + width for i in range(len(models))], models)
    axis.set_ylim(0.4, 1.0)
    axis.set_ylabel("diagnosis macro AUROC")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_results(summaries: dict[str, dict[str, Any]], runs: Path) -> Path:
    """``RUNS/results.md`` (all tables) and ``RUNS/iid-4.png``; returns the markdown path."""
    pooled = summaries.get("iid-4", {}).get("pooled")
    parts = ["# fedecg virtual-site studies", ""]
    if "iid-4" in summaries:
        parts += ["## IID, 4 sites, FedAvg: federated vs pooled vs local-only", "",
                  protocol_table(summaries["iid-4"]), ""]
        protocol_figure(summaries["iid-4"], runs / "iid-4.png")
    if "dirichlet-0.1" in summaries and summaries["dirichlet-0.1"]["local_only"]:
        parts += ["## Dirichlet alpha 0.1, 4 sites: protocol", "",
                  protocol_table(summaries["dirichlet-0.1"]), ""]
    groups = [("Label skew (transfer, FedAvg)",
               ["iid-4", "dirichlet-100", "dirichlet-0.5", "dirichlet-0.1"]),
              ("What narrows the alpha 0.1 gap (transfer)",
               ["dirichlet-0.1", "dirichlet-0.1-fedprox", "dirichlet-0.1-personal"]),
              ("Number of sites (IID, transfer, FedAvg)", ["sites-2", "iid-4", "sites-8"])]
    for title, names in groups:
        parts += [f"## {title}", "", comparison_table(summaries, names, pooled), ""]
    path = runs / "results.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path
