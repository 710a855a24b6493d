"""Federated vs pooled, before and after, over seeds: the tables of ``README.md`` here.

Usage::

    python simulation/federated_quality/compare.py RUNS --settings before-iid after-iid

Reads ``RUNS/<setting>-s<seed>/`` (one ``fedecg simulate`` study folder per seed, made by
``run.sh``) and prints, per setting and model, federated and pooled macro AUROC (dx, lab) as
mean ± sd over seeds with every seed's gap, the federated model's worst site (lab; also over
the labels with at least 5 test positives at that site), the rounds
each stage trained and kept, the parameter bytes sent both ways, and the study's wall time.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

from fedecg.config.base import read_yaml
from fedecg.run_folder import RunFolder

DX, LAB = "diagnosis_macro_auroc", "lab_macro_auroc"
MODELS = ("signal-only", "transfer", "multimodal")
MIN_POSITIVES = 5


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
        if match and RunFolder(folder).summary.is_file():
            found[int(match.group(1))] = folder
    return dict(sorted(found.items()))


def wall_seconds(folder: Path) -> float | None:
    """The study's wall time: ``provenance.json`` (CLI runs), else ``run.sh``'s log line."""
    provenance = RunFolder(folder).provenance
    if provenance.is_file():
        return json.loads(provenance.read_text()).get("seconds")
    log = folder.with_suffix(".log")
    match = re.search(r"wall (\d+) s", log.read_text()) if log.is_file() else None
    return float(match.group(1)) if match else None


def federation_costs(folder: Path, model: str) -> dict[str, Any]:
    """Rounds trained and kept per stage, and parameter bytes both ways, of one model's run."""
    lines = [json.loads(x) for x in RunFolder(folder).metrics.read_text().splitlines()]
    mine = [x for x in lines if x.get("model") == model]
    trained: dict[str, set[int]] = {}
    for line in mine:
        if line["kind"] == "train":
            trained.setdefault(line["stage"], set()).add(line["stage_round"])
    config = RunFolder(folder).config
    settings = read_yaml(config) if config.is_file() else {}
    keep_best = settings.get("train", {}).get("early_stopping", {}).get("keep_best", False)
    kept = {x["stage"]: x["selected-stage-round"] for x in mine
            if x["kind"] == "selected" and keep_best}
    moved = sum((x.get("bytes-sent") or 0) + (x.get("bytes-received") or 0)
                for x in mine if x["kind"] == "train")
    rounds = " + ".join(f"{len(trained[s])}" + (f" (keeps {kept[s]})" if s in kept else "")
                        for s in ("pretrain", "lab", "diagnosis") if s in trained)
    return {"rounds": rounds, "mb": moved / 1e6}


def counted_macro(entry: dict[str, Any] | None) -> float | None:
    """A site's lab macro AUROC over the labels with at least ``MIN_POSITIVES`` test positives
    there (a label with one positive scores the rank of one ECG)."""
    if not entry or not entry.get("lab_auroc"):
        return None
    values = [auroc for label, auroc in entry["lab_auroc"].items()
              if auroc is not None and entry["lab_positives"].get(label, 0) >= MIN_POSITIVES]
    return statistics.mean(values) if values else None


def setting_rows(runs: Path, setting: str) -> list[str]:
    """Markdown rows of one setting: one per model."""
    seeds = load_seeds(runs, setting)
    if not seeds:
        return [f"| {setting} | (no finished seed) |"]
    summaries = {s: json.loads(RunFolder(f).summary.read_text()) for s, f in seeds.items()}
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
        worst_counted = [min(v for v in (counted_macro(e) for e in s["sites"][model].values())
                             if v is not None) for s in summaries.values()]
        costs = federation_costs(next(iter(seeds.values())), model)
        rows.append(f"| {setting} | {model} | {','.join(map(str, seeds))} | {_mean_sd(fed[DX])} | "
                    f"{_mean_sd(pooled[DX])} | {_signed(gaps[DX])} | {_mean_sd(fed[LAB])} | "
                    f"{_mean_sd(pooled[LAB])} | {_signed(gaps[LAB])} | {_mean_sd(worst)} | "
                    f"{_mean_sd(worst_counted)} | "
                    f"{costs['rounds']} | {costs['mb']:.1f} |")
    walls = [w for w in (wall_seconds(f) for f in seeds.values()) if w is not None]
    if walls:
        rows[-1] += f" wall {statistics.mean(walls) / 60:.1f} min/seed"
    return rows


HEADER = ("| setting | model | seeds | federated dx | pooled dx | dx gap per seed | "
          "federated lab | pooled lab | lab gap per seed | worst-site lab (fed) | "
          f"worst-site lab, labels with ≥ {MIN_POSITIVES} positives | "
          "rounds per stage (seed 0) | MB moved |\n" + "|---" * 13 + "|")


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


def rounds_to_reach(folder: Path, pooled_summary: Path, model: str = "transfer",
                    margin: float = 0.02) -> dict[str, Any]:
    """The first round whose aggregated model scores within ``margin`` of pooled on the sites'
    test splits (diagnosis macro AUROC, example-weighted over sites, as each round's line
    has it), and the rounds and parameter bytes spent until then. Pooled is scored the same
    way: its per-site test AUROCs, weighted by the sites' test rows."""
    per_store = json.loads(pooled_summary.read_text())["pooled"][model]["per_store"]
    weight = sum(e["n_test"] for e in per_store.values())
    target = sum(e[DX] * e["n_test"] for e in per_store.values()) / weight - margin
    lines = [json.loads(x) for x in RunFolder(folder).metrics.read_text().splitlines()]
    mine = [x for x in lines if x.get("model") == model]
    reached = next((x["round"] for x in sorted(mine, key=lambda x: x["round"])
                    if x["kind"] == "evaluate" and x["site"] == "all" and x["stage"] == "diagnosis"
                    and (x.get("diagnosis-auroc") or 0) >= target), None)
    rounds = sorted({x["round"] for x in mine if x["kind"] == "train"})
    spent = [x for x in mine if x["kind"] == "train" and (reached is None or x["round"] <= reached)]
    return {"target": target, "round": reached, "rounds_trained": len(rounds),
            "mb": sum((x.get("bytes-sent") or 0) + (x.get("bytes-received") or 0)
                      for x in spent) / 1e6}
