"""Tables (markdown) and the figure of the study at scale (``run.sh``, ``README.md`` here).

Usage::

    python simulation/scale/tables.py RUNS [--figure simulation/figures/scale.png]

Reads ``RUNS/<setting>-s<seed>/`` (one ``fedecg simulate`` study per seed) for the settings
``iid`` (4 IID sites, signal-only and transfer), ``multimodal`` (the same sites and seeds, the
multimodal model: shown with ``iid``), ``no-pretraining`` (transfer without its pretraining
rounds) and ``natural`` (one site per ECG cart) and prints:

* per setting and model, diagnosis (dx) and lab macro AUROC on the pooled test split for
  federated, pooled and local-only (the mean of the site-alone models) training: mean ± SD
  over seeds, each seed's value with its bootstrap 95% CI;
* transfer − signal-only per seed, federated and pooled, against the seed spread;
* the pretraining ablation: transfer with and without its pretraining rounds, per seed;
* rounds trained (and kept) per stage, and each study's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "federated_quality"))
from compare import federation_costs, load_seeds, wall_seconds

from fedecg.report.federated_report import mean_sd
from fedecg.run_folder import RunFolder

DX, LAB = "diagnosis_macro_auroc", "lab_macro_auroc"
MODELS = ("signal-only", "transfer", "multimodal")
ARMS = ("federated", "pooled", "local_only")
COLORS = {"federated": "#d62728", "pooled": "#1f77b4", "local_only": "#7f7f7f"}  # as in reports
SETTINGS = {"iid": "4 IID sites", "natural": "natural sites (one per ECG cart)",
            "no-pretraining": "4 IID sites, transfer without pretraining rounds"}


def summaries(runs: Path, setting: str) -> dict[int, dict[str, Any]]:
    """``{seed: summary.json}`` of the finished studies of ``setting``."""
    return {seed: json.loads(RunFolder(folder).summary.read_text())
            for seed, folder in load_seeds(runs, setting).items()}


def with_models_of(base: dict[int, dict[str, Any]], more: dict[int, dict[str, Any]]
                   ) -> dict[int, dict[str, Any]]:
    """``base``'s summaries with the models ``more`` trained on the same sites and seed added
    to each arm (the multimodal studies beside the IID ones)."""
    merged = {}
    for seed, summary in base.items():
        extra = more.get(seed, {})
        merged[seed] = {**summary, **{arm: {**(summary.get(arm) or {}), **(extra.get(arm) or {})}
                                      for arm in ARMS if summary.get(arm) or extra.get(arm)}}
    return merged


def arm_values(by_seed: dict[int, dict[str, Any]], arm: str, model: str,
               key: str) -> dict[int, float]:
    """``{seed: AUROC}`` of one arm and model (seeds where it was run)."""
    values = {}
    for seed, summary in by_seed.items():
        entry = (summary.get(arm) or {}).get(model) or {}
        if entry.get(key) is not None:
            values[seed] = float(entry[key])
    return values


def _spread(values: dict[int, float]) -> str:
    return mean_sd(list(values.values())) if values else "–"


def _per_seed(by_seed: dict[int, dict[str, Any]], arm: str, model: str, key: str) -> str:
    """Each seed's value with its bootstrap CI where the arm has one (local-only has not)."""
    parts = []
    for summary in by_seed.values():
        entry = (summary.get(arm) or {}).get(model) or {}
        if entry.get(key) is None:
            continue
        interval = entry.get(f"{key}_ci")
        ci = f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else ""
        parts.append(f"{entry[key]:.3f}{ci}")
    return "; ".join(parts) or "–"


def protocol_rows(by_seed: dict[int, dict[str, Any]]) -> list[str]:
    """Model × arm rows: dx and lab, mean ± SD and per seed with CIs."""
    rows = ["| model | training | dx mean ± SD | dx per seed [95% CI] | lab mean ± SD | "
            "lab per seed [95% CI] |", "|---|---|---|---|---|---|"]
    for model in MODELS:
        for arm in ARMS:
            dx = arm_values(by_seed, arm, model, DX)
            if not dx:
                continue
            lab = arm_values(by_seed, arm, model, LAB)
            rows.append(f"| {model} | {arm.replace('_', '-')} | {_spread(dx)} | "
                        f"{_per_seed(by_seed, arm, model, DX)} | {_spread(lab)} | "
                        f"{_per_seed(by_seed, arm, model, LAB)} |")
    return rows


def difference_rows(left: dict[int, dict[str, Any]], right: dict[int, dict[str, Any]],
                    pairs: list[tuple[str, str, str]]) -> list[str]:
    """Rows of ``left`` − ``right`` per seed for (label, left model, right model) pairs, with
    the mean difference beside the larger seed SD of the two (the seed spread)."""
    rows = ["| comparison | training | difference per seed (dx) | mean | seed SD (larger) | "
            "beats by more than the spread |", "|---|---|---|---|---|---|"]
    for label, model_a, model_b in pairs:
        for arm in ("federated", "pooled"):
            a, b = arm_values(left, arm, model_a, DX), arm_values(right, arm, model_b, DX)
            seeds = sorted(set(a) & set(b))
            if not seeds:
                continue
            gaps = [a[s] - b[s] for s in seeds]
            spread = max((statistics.stdev(v[s] for s in seeds) for v in (a, b)),
                         default=0.0) if len(seeds) > 1 else float("nan")
            mean = statistics.mean(gaps)
            verdict = "–" if len(seeds) < 2 else ("yes" if mean > spread else "no")
            rows.append(f"| {label} | {arm} | {', '.join(f'{g:+.3f}' for g in gaps)} | "
                        f"{mean:+.3f} | {spread:.3f} | {verdict} |")
    return rows


def cost_rows(runs: Path, setting: str) -> list[str]:
    """Rounds per stage (trained, kept) of seed 0's models and the studies' wall time."""
    seeds = load_seeds(runs, setting)
    if not seeds:
        return []
    first = next(iter(seeds.values()))
    models = json.loads(RunFolder(first).summary.read_text())["federated"]
    walls = [w for w in (wall_seconds(f) for f in seeds.values()) if w is not None]
    lines = [f"- {model}: rounds {federation_costs(first, model)['rounds']}" for model in models]
    if walls:
        lines.append(f"- wall time of each seed's last command (a resumed study ran longer): "
                     f"{', '.join(f'{w / 60:.0f} min' for w in walls)}")
    return lines


def figure(by_seed: dict[int, dict[str, Any]], path: Path) -> None:
    """Bars of dx and lab macro AUROC per model and arm (mean over seeds, each seed a dot)."""
    models = [m for m in MODELS if arm_values(by_seed, "federated", m, DX)]
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    width = 0.8 / len(ARMS)
    for axis, key, title in ((axes[0], DX, "diagnosis"), (axes[1], LAB, "lab abnormality")):
        for k, arm in enumerate(ARMS):
            for i, model in enumerate(models):
                values = list(arm_values(by_seed, arm, model, key).values())
                if not values:
                    continue
                x = i + (k - 1) * width
                axis.bar(x, statistics.mean(values), width, color=COLORS[arm],
                         label=arm.replace("_", "-") if i == 0 else None)
                axis.plot([x] * len(values), values, "k.", markersize=4)
        axis.set_xticks(range(len(models)), models)
        axis.set_ylim(0.5, 1.0)
        axis.set_ylabel(f"{title} macro AUROC")
        axis.set_title(f"{title} (seeds as dots)", fontsize=10)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--figure", type=Path, help="write the IID bar chart here (PNG)")
    args = parser.parse_args()
    found = {name: summaries(args.runs, name) for name in SETTINGS}
    found["iid"] = with_models_of(found["iid"], summaries(args.runs, "multimodal"))
    for name, title in SETTINGS.items():
        if found[name]:
            print(f"## {title} (seeds {', '.join(map(str, found[name]))})\n")
            print("\n".join(protocol_rows(found[name])) + "\n")
            print("\n".join(cost_rows(args.runs, name)
                            + (cost_rows(args.runs, "multimodal") if name == "iid" else []))
                  + "\n")
    if found["iid"]:
        print("## Model against model (4 IID sites)\n")
        print("\n".join(difference_rows(found["iid"], found["iid"], [
            ("transfer − signal-only", "transfer", "signal-only"),
            ("multimodal − transfer", "multimodal", "transfer")])) + "\n")
    if found["natural"]:
        print("## Model against model (natural sites)\n")
        print("\n".join(difference_rows(found["natural"], found["natural"], [
            ("transfer − signal-only", "transfer", "signal-only")])) + "\n")
    if found["iid"] and found["no-pretraining"]:
        print("## Pretraining ablation: transfer − transfer without pretraining (4 IID sites)\n")
        print("\n".join(difference_rows(found["iid"], found["no-pretraining"], [
            ("transfer − no pretraining", "transfer", "transfer")])) + "\n")
    if args.figure and found["iid"]:
        figure(found["iid"], args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
