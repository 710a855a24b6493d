"""Federated simulation vs pooled training for the same samples; memory and bytes per site.

Usage::

    python benchmarks/federated_benchmark.py [--store STORE] [--sites 4] [--rounds 4]
        [--patients 400] [--out B.json]

Without ``--store`` the synthetic twin (``--patients``, cached in ``$FEDECG_CACHE``) is used.
One stage (diagnosis, signal-only model, so no pretraining is needed) is trained

* pooled: ``--rounds`` epochs over all sites' training rows in one process;
* federated: ``--rounds`` FedAvg rounds of one local epoch at ``--sites`` virtual sites in
  Flower's simulation engine (Ray, one CPU per site), i.e. the same samples in total.

It reports the wall-time ratio federated/pooled per round (= per epoch), the federated side
measured from the end of round 1 to the end of the last round, so Ray's start-up and the first
round's warm-up are excluded ("once Ray is up"; target ≤ 1.3 at 4 sites). A federated round
includes each site's validation and the federated evaluation on its test split; the main ratio
compares it with pooled epochs including their validation, a second one with pooled training
alone. It also reports the peak resident memory of the processes
that ran the virtual sites; and the parameter bytes each site received and sent per round.
Speeds depend on the machine and its load: compare them only as ratios from one run.

On a shared machine wall times swing with the other jobs, so it also reports CPU seconds
(``time.process_time``): of a pooled epoch, and of a federated round run in this process
without Ray (the ServerApp loop and the real ClientApp of every site over an
``InProcessGrid``), i.e. fedecg's own work per round, apart from Ray's transport.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from benchmark_json import emit

from fedecg.app import client_app, simulated
from fedecg.config.federated import DataSourceConfig, StudyConfig, SynthesizeConfig
from fedecg.federated import keys
from fedecg.federated.baselines import baseline_config
from fedecg.federated.datasource import ensure_partition, ensure_store, make_plan
from fedecg.federated.inprocess import InProcessGrid
from fedecg.federated.orchestration import run_server
from fedecg.federated.simulation import sites_of
from fedecg.run_folder import RunFolder
from fedecg.training.runner import MetricsLog, fit_model

TRAIN = {"models": ["signal-only"], "crop_samples": 250, "batch_size": 32, "threads": 1,
         "encoder": {"stem_width": 16, "widths": [16, 32, 64], "blocks": [1, 1, 1]},
         "eval": {"crops": 1, "bootstrap": 0}}


def study_config(store: Path, sites: int, rounds: int) -> StudyConfig:
    """Diagnosis stage only, ``rounds`` rounds of one local epoch, FedAvg over ``sites``."""
    return StudyConfig.model_validate({
        "data": {"store": str(store)}, "partition": {"num_sites": sites},
        "federation": {"rounds": {"pretrain": 0, "lab": 0, "diagnosis": rounds}},
        "train": {**TRAIN, "lab": {"epochs": 0}}})


def time_pooled(config: StudyConfig, pooled, folder: Path) -> dict[str, float]:
    """Seconds per epoch of centralized training on the pooled rows: training only, and
    wall time with the per-epoch validation and checkpoint (what a federated round also does)."""
    train = baseline_config(config)
    log = MetricsLog(folder / "pooled.jsonl")
    start, cpu = time.perf_counter(), time.process_time()
    fit_model("signal-only", pooled, train, folder / "pooled.pt", log)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    epochs = [json.loads(line) for line in log.lines if '"diagnosis"' in line]
    return {"train_seconds_per_epoch": sum(e["seconds"] for e in epochs) / len(epochs),
            "wall_seconds_per_epoch": wall / len(epochs),
            "cpu_seconds_per_epoch": cpu / len(epochs),
            "examples_per_epoch": epochs[-1]["train_examples"]}


def cpu_in_process(config: StudyConfig, store: Path, partition: Path,
                   folder: Path) -> float:
    """CPU seconds per round (after the first) of the federated run in this process, no Ray."""
    plan = make_plan(config, "signal-only", folder / "in-process", store, partition)
    grid = InProcessGrid(client_app, [{keys.NODE_PARTITION_ID: i}
                                      for i in range(config.partition.num_sites)])
    stamps: list[float] = []
    run_server(grid, plan, progress=lambda event: stamps.append(time.process_time()))
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def time_federated(config: StudyConfig, store: Path, partition: Path,
                   folder: Path) -> dict[str, float]:
    """Seconds per round (after the first) of the Flower simulation, and per-site figures."""
    plan = make_plan(config, "signal-only", folder / "federated", store, partition)
    stamps: list[float] = []
    simulated().run(plan, lambda event: stamps.append(time.perf_counter()))
    lines = [json.loads(x) for x in RunFolder(folder / "federated").metrics.read_text()
             .splitlines()]
    train = [x for x in lines if x["kind"] == "train"]
    return {"seconds_per_round": (stamps[-1] - stamps[0]) / (len(stamps) - 1),
            "examples_per_round": sum(x[keys.TRAIN_EXAMPLES_SEEN] for x in train) / len(stamps),
            "peak_rss_mb_per_client": max(x[keys.PEAK_RSS_MB] for x in train),
            "bytes_received_per_round_per_site": max(x[keys.BYTES_RECEIVED] for x in train),
            "bytes_sent_per_round_per_site": max(x[keys.BYTES_SENT] for x in train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path)
    parser.add_argument("--patients", type=int, default=400)
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = args.store or ensure_store(DataSourceConfig(
        synthesize=SynthesizeConfig(patients=args.patients, sites=args.sites)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = study_config(store, args.sites, args.rounds)
        partition = ensure_partition(store, config.partition, folder)
        _, pooled = sites_of(store, partition)
        central = time_pooled(config, pooled, folder)
        federated = time_federated(config, store, partition, folder)
        federated["cpu_seconds_per_round_in_process"] = cpu_in_process(config, store,
                                                                       partition, folder)
    result = {"sites": args.sites, "rounds": args.rounds, "pooled": central,
              "federated": federated,
              "wall_time_ratio_federated_over_pooled":
                  federated["seconds_per_round"] / central["wall_seconds_per_epoch"],
              "ratio_over_pooled_training_only":
                  federated["seconds_per_round"] / central["train_seconds_per_epoch"],
              "cpu_ratio_in_process_over_pooled":
                  federated["cpu_seconds_per_round_in_process"]
                  / central["cpu_seconds_per_epoch"],
              "target_ratio": 1.3}
    emit(result, args.out)


if __name__ == "__main__":
    main()
