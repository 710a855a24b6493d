"""A deployed round against a simulated round with the same sites and work; message sizes.

Usage::

    python benchmarks/deploy_benchmark.py [--sites 3] [--rounds 3] [--patients 300]
        [--out B.json]

The same study (the synthetic twin cut into ``--sites`` IID sites, the signal-only model's
diagnosis stage, ``--rounds`` FedAvg rounds of one local epoch) runs twice in one go:

* simulated: Flower's simulation engine (Ray, one CPU per virtual site), as ``fedecg simulate``;
* deployed: a real ``flower-superlink`` with TLS and SuperNode authentication on 127.0.0.1 and
  one real ``flower-supernode`` per site (each serving its partition of the same store),
  submitted with ``fedecg server submit``'s ``submit_study``.

A round's wall time is measured from the end of one round to the end of the next (round 1 and
start-up excluded), from the moment each round's evaluation appears in the run's
``metrics.jsonl``. In deployment every message starts a fresh ClientApp process at the site
(Flower's subprocess isolation), which is the main extra cost. It also reports the bytes of
parameters each site received and sent per round, per stage, and of the final evaluation's
scalar reply. Compare only the ratio: both sides ran on the same machine in the same minute.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import yaml
from benchmark_json import emit

from fedecg.app import simulated as simulated_sites
from fedecg.config.federated import DataSourceConfig, StudyConfig, SynthesizeConfig
from fedecg.deploy.node_keys import create_node_keys
from fedecg.deploy.submit import submit_study
from fedecg.deploy.superlink import init_server, register_node, start_superlink, stop_superlink
from fedecg.deploy.supernode import NodeKit, launch, stop_supernode
from fedecg.federated import keys
from fedecg.federated.datasource import ensure_partition, ensure_store, make_plan
from fedecg.federated.site_test_metrics import N_TRAIN, NAIVE_PREFIX, encode_entry
from fedecg.run_folder import RunFolder

TRAIN = {"models": ["signal-only"], "crop_samples": 250, "batch_size": 32,
         "encoder": {"stem_width": 16, "widths": [16, 32, 64], "blocks": [1, 1, 1]},
         "eval": {"crops": 1, "bootstrap": 0}}


def study(store: Path, sites: int, rounds: int) -> dict:
    """The study both sides run (as YAML data)."""
    return {"data": {"store": str(store)}, "partition": {"num_sites": sites},
            "federation": {"rounds": {"pretrain": 0, "lab": 0, "diagnosis": rounds},
                           "min_sites": sites, "round_timeout_s": 600},
            "train": {**TRAIN, "lab": {"epochs": 0}}}


def round_stamps(metrics: Path, rounds: int, done: threading.Event) -> list[float]:
    """When each round's site-weighted evaluation line appears in ``metrics``."""
    stamps: dict[int, float] = {}
    while not done.is_set() and len(stamps) < rounds:
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                record = json.loads(line)
                if record["kind"] == "evaluate" and record["site"] == "all":
                    stamps.setdefault(record["round"], time.perf_counter())
        time.sleep(0.05)
    return [stamps[r] for r in sorted(stamps)]


def per_round(stamps: list[float]) -> float:
    """Mean seconds from one round's end to the next (round 1 and start-up excluded)."""
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def timed(run, metrics: Path, rounds: int) -> list[float]:
    """Run ``run()`` while recording the round stamps of ``metrics``."""
    done, result = threading.Event(), {}
    watcher = threading.Thread(target=lambda: result.update(
        stamps=round_stamps(metrics, rounds, done)))
    watcher.start()
    try:
        run()
    finally:
        time.sleep(0.2)
        done.set()
        watcher.join()
    return result["stamps"]


def simulated(config: StudyConfig, store: Path, folder: Path, rounds: int) -> dict:
    """The study in Flower's simulation engine."""
    partition = ensure_partition(store, config.partition, folder)
    plan = make_plan(config, "signal-only", folder / "federated", store, partition)
    stamps = timed(lambda: simulated_sites().run(plan, None),
                   RunFolder(folder / "federated").metrics, rounds)
    return {"seconds_per_round": per_round(stamps), "lines": _lines(folder / "federated")}


def deployed(study_file: Path, sites: int, folder: Path, rounds: int) -> dict:
    """The study on a real SuperLink and SuperNodes on 127.0.0.1."""
    kit = init_server(folder / "center", ["127.0.0.1"])
    address = f"127.0.0.1:{_free_port()}"
    nodes = [NodeKit(folder / f"site{i}") for i in range(sites)]
    try:
        start_superlink(kit, address)
        for index, node in enumerate(nodes):
            register_node(kit, create_node_keys(node.folder))
            launch(node, address, kit.ca, {keys.NODE_PARTITION_ID: index}, _free_port())
        out = folder / "study"
        stamps = timed(lambda: submit_study(kit, study_file, out),
                       RunFolder(out).federated_run(0, "signal-only").metrics, rounds)
    finally:
        for node in nodes:
            stop_supernode(node)
        stop_superlink(kit)
    return {"seconds_per_round": per_round(stamps),
            "lines": _lines(RunFolder(out).federated_run(0, "signal-only").path),
            "final_reply": _final_reply(out)}


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in RunFolder(run).metrics.read_text().splitlines()]


def _final_reply(out: Path) -> dict[str, int]:
    """Scalars (and their bytes: key plus 8) of a site's final-evaluation reply."""
    summary = json.loads(RunFolder(out).summary.read_text())
    site, entry = next(iter(summary["sites"]["signal-only"].items()))
    scalars = [*encode_entry({k: v for k, v in entry.items() if k != N_TRAIN}),
               *encode_entry(summary["naive"]["per_store"][site], NAIVE_PREFIX), N_TRAIN]
    return {"scalars": len(scalars), "bytes": sum(len(key.encode()) + 8 for key in scalars)}


def message_bytes(lines: list[dict]) -> dict:
    """Parameter bytes a site received and sent per round, per stage (largest site)."""
    result: dict[str, dict[str, int]] = {}
    for line in lines:
        if line["kind"] == "train":
            entry = result.setdefault(line["stage"], {"received": 0, "sent": 0})
            entry["received"] = max(entry["received"], int(line[keys.BYTES_RECEIVED]))
            entry["sent"] = max(entry["sent"], int(line[keys.BYTES_SENT]))
    return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    store = ensure_store(DataSourceConfig(synthesize=SynthesizeConfig(patients=args.patients,
                                                                      sites=args.sites)))
    data = study(store, args.sites, args.rounds)
    config = StudyConfig.model_validate(data)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "study.yaml").write_text(yaml.safe_dump(data))
        sim = simulated(config, store, folder / "simulated", args.rounds)
        dep = deployed(folder / "study.yaml", args.sites, folder / "deployed", args.rounds)
    result = {"sites": args.sites, "rounds": args.rounds,
              "simulated_seconds_per_round": sim["seconds_per_round"],
              "deployed_seconds_per_round": dep["seconds_per_round"],
              "deployed_over_simulated": dep["seconds_per_round"] / sim["seconds_per_round"],
              "bytes_per_round_per_site": message_bytes(dep["lines"]),
              "final_evaluation_reply_per_site": dep["final_reply"]}
    emit(result, args.out)


if __name__ == "__main__":
    main()
