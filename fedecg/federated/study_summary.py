"""A study's ``summary.json`` and ``metrics.jsonl`` from its seeds' results: the seeds
averaged, the report's model entries, the partition's sites, every federated run's lines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedecg.config.federated import StudyConfig
from fedecg.data.store import SiteStore
from fedecg.federated import keys
from fedecg.federated.partition import load_partition
from fedecg.io import atomic_write_text
from fedecg.run_folder import RunFolder


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
        if name in summary["local_only"]:
            entries[f"{name} · local-only (mean)"] = {
                k: v for k, v in summary["local_only"][name].items() if k != "sites"}
    entries["naive"] = summary["naive"]
    return entries


def partition_summary(partition_dir: Path, store: Path, out: Path) -> dict[str, Any]:
    """Each site of the partition: its patients, records, split counts and the peak resident
    memory of its process over the study's rounds (``site_peak_rss``)."""
    partition = load_partition(partition_dir, SiteStore.open(store))
    peaks = site_peak_rss(out)
    return {"store": partition.store, "label_skew": partition.label_skew,
            **partition.config.model_dump(mode="json"),
            "sites": {s.name: {"patients": s.n_patients, "records": s.n_records,
                               **s.split_counts, keys.PEAK_RSS_MB: peaks.get(s.name)}
                      for s in partition.sites}}


def site_peak_rss(out: Path) -> dict[str, float]:
    """Each site's largest ``peak-rss-mb`` (MiB) over the train rounds in the study's
    ``metrics.jsonl`` (a virtual site's process resets its peak each round)."""
    path = RunFolder(out).metrics
    peaks: dict[str, float] = {}
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in (json.loads(text) for text in lines if text.startswith("{")):
        value = line.get(keys.PEAK_RSS_MB)
        if line.get("kind") == "train" and value is not None:
            peaks[line["site"]] = max(peaks.get(line["site"], 0.0), round(float(value), 1))
    return peaks


def collect_metrics(out: Path, config: StudyConfig) -> None:
    """RUN/metrics.jsonl: every federated run's lines, with its seed."""
    folder = RunFolder(out)
    lines = []
    for seed in config.seeds:
        for name in config.train.models:
            path = folder.federated_run(seed, name).metrics
            if path.is_file():
                lines += [f'{{"seed": {seed}, ' + line[1:] for line in
                          path.read_text().splitlines() if line.startswith("{")]
    atomic_write_text(folder.metrics, "".join(line + "\n" for line in lines))
