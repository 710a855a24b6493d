"""Federated vs pooled, before and after, over seeds: the tables of ``README.md`` here.

Usage::

    python simulation/federated_quality/compare.py RUNS --settings before-iid after-iid

Reads ``RUNS/<setting>-s<seed>/`` (one ``fedecg simulate`` study folder per seed, made by
``run.sh``) and prints, per setting and model, federated and pooled macro AUROC (dx, lab) as
mean ± sd over seeds with every seed's gap, the federated model's worst site (lab), the rounds
each stage trained and kept, the parameter bytes sent both ways, and the study's wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

DX, LAB = "diagnosis_macro_auroc", "lab_macro_auroc"
MODELS = ("signal-only", "transfer", "multimodal")


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _signed(values: list[float]) -> str:
    return ", ".join(f"{v:+.3f}" for v in values)


def load_seeds(runs: Path, setting: str) -> dict[int, Path]:
    """``{seed: folder}`` of the finished study folders ``RUNS/<setting>-s<seed>``."""
    found = {}
    for folder in runs.glob(f"{setting}-s*"):
        match = re.fullmatch(rf"{re.escape(setting)}-s(\d+)", folder.name)
        if match and (folder / "summary.json").is_file():
            found[int(match.group(1))] = folder
    return dict(sorted(found.items()))


def wall_seconds(folder: Path) -> float | None:
    """The study's wall time: ``provenance.json`` (CLI runs), else ``run.sh``'s log line."""
    provenance = folder / "provenance.json"
    if provenance.is_file():
        return json.loads(provenance.read_text()).get("seconds")
    log = folder.with_suffix(".log")
    match = re.search(r"wall (\d+) s", log.read_text()) if log.is_file() else None
    return float(match.group(1)) if match else None


def federation_costs(folder: Path, model: str) -> dict[str, Any]:
    """Rounds trained and kept per stage, and parameter bytes both ways, of one model's run."""
    lines = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
    mine = [x for x in lines if x.get("model") == model]
    trained: dict[str, set[int]] = {}
    for line in mine:
        if line["kind"] == "train":
            trained.setdefault(line["stage"], set()).add(line["stage_round"])
    kept = {x["stage"]: x["selected-stage-round"] for x in mine if x["kind"] == "selected"}
    moved = sum((x.get("bytes-sent") or 0) + (x.get("bytes-received") or 0)
                for x in mine if x["kind"] == "train")
    rounds = " + ".join(f"{len(trained[s])}" + (f" (keeps {kept[s]})" if s in kept else "")
                        for s in ("pretrain", "lab", "diagnosis") if s in trained)
    return {"rounds": rounds, "mb": moved / 1e6}


def setting_rows(runs: Path, setting: str) -> list[str]:
    """Markdown rows of one setting: one per model."""
    seeds = load_seeds(runs, setting)
    if not seeds:
        return [f"| {setting} | (no finished seed) |"]
    summaries = {s: json.loads((f / "summary.json").read_text()) for s, f in seeds.items()}
    rows = []
    for model in MODELS:
        if not all(model in s["federated"] for s in summaries.values()):
            continue
        fed = {k: [s["federated"][model][k] for s in summaries.values()] for k in (DX, LAB)}
        pooled = {k: [s["pooled"][model][k] for s in summaries.values()
                      if s.get("pooled", {}).get(model)] for k in (DX, LAB)}
        gaps = {k: [f - p for f, p in zip(fed[k], pooled[k], strict=False)] for k in (DX, LAB)}
        worst = [min(e[LAB] for e in s["sites"][model].values() if e and e.get(LAB) is not None)
                 for s in summaries.values()]
        costs = federation_costs(next(iter(seeds.values())), model)
        rows.append(f"| {setting} | {model} | {','.join(map(str, seeds))} | {_mean_sd(fed[DX])} | "
                    f"{_mean_sd(pooled[DX])} | {_signed(gaps[DX])} | {_mean_sd(fed[LAB])} | "
                    f"{_mean_sd(pooled[LAB])} | {_signed(gaps[LAB])} | {_mean_sd(worst)} | "
                    f"{costs['rounds']} | {costs['mb']:.1f} |")
    walls = [w for w in (wall_seconds(f) for f in seeds.values()) if w is not None]
    if walls:
        rows[-1] += f" wall {statistics.mean(walls) / 60:.1f} min/seed"
    return rows


HEADER = ("| setting | model | seeds | federated dx | pooled dx | dx gap per seed | "
          "federated lab | pooled lab | lab gap per seed | worst-site lab (fed) | "
          "rounds per stage (seed 0) | MB moved |\n" + "|---" * 12 + "|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--settings", nargs="+", required=True)
    args = parser.parse_args()
    print(HEADER)
    for setting in args.settings:
        print("\n".join(setting_rows(args.runs, setting)))


if __name__ == "__main__":
    main()
