"""Training throughput per stage for the default encoder, data-wait share and peak memory.

Usage::

    python benchmarks/train_benchmark.py --store STORE [--steps 30] [--threads 1]
        [--num-workers 0 1 2] [--site-memory SMALL_STORE ... --site-ecgs 2500]
        [--baseline-src OTHER_CHECKOUT] [--out B.json]

Without ``--store`` a store of random signals (512 records, 100 Hz, 10 s, the default panel)
is written to a temporary folder first. For each stage (pretrain, lab, diagnosis) and each
loader worker count of ``--num-workers`` it trains the default ``TrainConfig`` model for
``--steps`` steps after ``--warmup`` steps and reports ECG/s (training examples over
forward+backward+update time) and the share of step time spent waiting for the loader
(target < 5% with a worker; on a busy machine waiting includes the worker's wait for a core),
then per stage the data path's CPU cost per batch and its share of a step's CPU (what a worker
must hide), then evaluation throughput with crop aggregation.
Peak memory is the process's maximum resident set (and CUDA peak when on a GPU).

``--site-memory`` names stores (``--store`` is added) each split into IID sites of about
``--site-ecgs`` ECGs; site 0 is opened in a fresh process as a simulation's ClientApp opens it
(``site_memory.py``) and its memory beyond the page cache measured: the ratio of the largest
store's site to the smallest's (about 1 when a site's memory follows its own ECGs, not the
store's size) and the memory per 1,000 of a site's ECGs; ``--baseline-src`` measures the same
sites with another checkout's fedecg (e.g. the commit before a change) and gives the ratios.
Speeds depend on the machine and its load: compare them only as ratios taken on the same
machine.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from benchmark_json import emit
from site_memory import measure

from fedecg.config.train import TrainConfig
from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.labs import DEFAULT_LAB_PANEL, panel_label_names
from fedecg.data.store import StoreManifest, StoreWriter, read_manifest
from fedecg.models.build import build_model
from fedecg.training.data import epoch_loader
from fedecg.training.evaluate import predict
from fedecg.training.pipeline import open_stores
from fedecg.training.stages import build_stages
from fedecg.training.trainer import activate, make_optimizer, train_epoch


def random_store(path: Path, n: int = 512, samples: int = 1000) -> Path:
    """A store of random signals and labels with the default panel and diagnosis set."""
    rng = np.random.default_rng(0)
    labs = panel_label_names(DEFAULT_LAB_PANEL)
    dx = [d.name for d in DEFAULT_DIAGNOSIS_LABELS]
    features = ["age"] + [f"lab_{lab.name}" for lab in DEFAULT_LAB_PANEL]
    cohort = pd.DataFrame({f: rng.normal(size=n) for f in features})
    for name in labs:
        cohort[f"abn_{name}"] = (rng.random(n) < 0.2).astype(float)
    for name in dx:
        cohort[f"dx_{name}"] = (rng.random(n) < 0.2).astype(float)
    cohort["split"] = np.where(np.arange(n) % 10 < 8, "train", "test")
    manifest = StoreManifest(
        site_name="random", n_records=n, fs=100.0, n_samples=samples,
        clinical_features=features, lab_labels=labs, diagnosis_labels=dx,
        lab_panel=list(DEFAULT_LAB_PANEL), diagnosis_set=list(DEFAULT_DIAGNOSIS_LABELS),
        feature_window_hours=24.0, label_window_hours=6.0)
    with StoreWriter(path, n, samples) as writer:
        for i in range(n):
            writer.write(i, rng.normal(0, 0.3, (12, samples)))
        writer.finish(cohort, manifest)
    return path


def bench_stage(stage, model, data, config: TrainConfig, steps: int, warmup: int,
                workers: int) -> dict:
    """ECG/s and data-wait share of ``steps`` training steps of ``stage`` with ``workers``."""
    dataset = data.dataset("train", stage.targets, config.crop_samples, True, config, seed=0)
    optimizer = make_optimizer(activate(model, stage), 1e-4)
    loader = epoch_loader(dataset, config.batch_size, 0, True, 0, workers)
    train_epoch(model, stage, loader, optimizer, max_steps=warmup)
    logs: dict[str, float] = {"steps": 0, "examples": 0, "data_seconds": 0, "step_seconds": 0}
    epoch, cpu = 1, time.process_time()
    while logs["steps"] < steps:
        loader = epoch_loader(dataset, config.batch_size, epoch, True, 0, workers)
        part = train_epoch(model, stage, loader, optimizer, max_steps=steps - logs["steps"])
        for key in logs:
            logs[key] += part[key]
        epoch += 1
    total = logs["data_seconds"] + logs["step_seconds"]
    return {"ecg_per_second": logs["examples"] / logs["step_seconds"],
            "data_wait_share": logs["data_seconds"] / total, "steps": int(logs["steps"]),
            "batch_size": config.batch_size,
            "main_cpu_seconds_per_step": (time.process_time() - cpu) / logs["steps"]}


def data_cpu(stage, data, config: TrainConfig, batches: int, model_cpu: float) -> dict:
    """CPU seconds the data path spends on one training batch of ``stage`` (the loader alone,
    in this process), and its share of a step's CPU beside ``model_cpu`` (forward, backward,
    update): what a loader worker must hide. CPU time, unlike waiting, does not depend on
    what else the machine runs."""
    dataset = data.dataset("train", stage.targets, config.crop_samples, True, config, seed=0)
    start, count = time.process_time(), 0
    for _batch in epoch_loader(dataset, config.batch_size, 0, True):
        count += 1
        if count == batches:
            break
    per_batch = (time.process_time() - start) / count
    return {"data_cpu_seconds_per_batch": per_batch,
            "data_cpu_share": per_batch / (per_batch + model_cpu)}


def site_memory(stores: list[Path], site_ecgs: int, baseline: Path | None) -> dict:
    """A site of about ``site_ecgs`` ECGs in each store (``site_memory.measure``), its memory
    per 1,000 of its ECGs (fixed costs included: an upper bound), the ratio of the largest
    store's site's memory to the smallest's (about 1: independent of the store's size) and,
    with a ``baseline`` checkout, each store's site memory here over there."""
    stores = sorted(stores, key=lambda path: read_manifest(path).n_records)
    measured = [measure(path, site_ecgs) for path in stores]
    for entry in measured:
        for kind in ("anon", "peak"):
            entry[f"{kind}_mib_per_1000_site_ecgs"] = (entry[f"{kind}_growth_mib"] * 1000
                                                       / entry["site_records"])
    small, large = measured[0], measured[-1]
    result = {"stores": measured,
              "store_size_ratio": large["store_records"] / small["store_records"],
              "site_size_ratio": large["site_records"] / small["site_records"],
              **{f"{kind}_growth_ratio": large[f"{kind}_growth_mib"] / small[f"{kind}_growth_mib"]
                 for kind in ("anon", "peak")}}
    if baseline is not None:
        before = [measure(path, site_ecgs, baseline) for path in stores]
        result["baseline"] = {"source": str(baseline), "stores": before, **{
            f"{kind}_growth_over_baseline": [now[f"{kind}_growth_mib"] / then[f"{kind}_growth_mib"]
                                             for now, then in zip(measured, before, strict=True)]
            for kind in ("anon", "peak")}}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0])
    parser.add_argument("--site-memory", type=Path, nargs="*", default=[])
    parser.add_argument("--site-ecgs", type=int, default=2500)
    parser.add_argument("--baseline-src", type=Path, help="a fedecg checkout whose sites' "
                        "memory to measure too (before/after ratios)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or random_store(Path(tmp) / "store")
        data = open_stores([store])
        config = TrainConfig()
        model = build_model("transfer", config, data.manifest, data.train_clinical())
        result: dict = {"store": str(store), "threads": args.threads,
                        "encoder": config.encoder.model_dump(), "crop_samples": config.crop_samples,
                        "parameters": sum(p.numel() for p in model.classifier.parameters()),
                        "stages": {}}
        for stage in build_stages(config, pretrained=True):
            runs = {f"workers_{w}": bench_stage(stage, model, data, config, args.steps,
                                                args.warmup, w) for w in args.num_workers}
            cost = data_cpu(stage, data, config, args.steps, min(
                run["main_cpu_seconds_per_step"] for run in runs.values()))
            result["stages"][stage.name] = {**runs, **cost}
        test = data.dataset("test", ("dx", "lab"), None, False, config)
        start = time.perf_counter()
        predict(model, test, config.crop_samples, config.eval.crops, config.eval.batch_size)
        result["eval_ecg_per_second"] = len(test) / (time.perf_counter() - start)
        result["eval_crops"] = config.eval.crops
        if args.site_memory:
            result["site_memory"] = site_memory([*args.site_memory, store], args.site_ecgs,
                                                 args.baseline_src)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    emit(result, args.out)


if __name__ == "__main__":
    main()
