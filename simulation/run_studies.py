"""Run the virtual-site studies and write their results tables and figures.

Usage::

    python simulation/run_studies.py [--runs runs/studies] [--only iid-4 dirichlet-0.1 ...]
        [--seeds 0] [--tables-only]

Every study is ``simulation/base.yaml`` plus the overrides below, run with
``fedecg.app.run_study`` into ``RUNS/<study>`` (a finished study is read back, an
unfinished one resumed). Then ``RUNS/results.md`` gets the tables and ``RUNS/*.png`` the figures
that ``simulation/README.md`` quotes. The pooled baseline trains on the union of all sites'
rows, which is the same store whatever the partition, so it is trained once (in ``iid-4``) and
every study's gap to pooled is measured against it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from fedecg.app import run_study
from fedecg.config.base import apply_overrides, read_yaml, validate_config
from fedecg.config.federated import StudyConfig
from fedecg.run_folder import RunFolder

HERE = Path(__file__).resolve().parent
BASE = HERE / "base.yaml"
TRANSFER_ONLY = "train.models=[transfer]"
STUDIES: dict[str, list[str]] = {
    # the headline protocol: 4 IID sites, FedAvg, all three models, pooled and local-only
    "iid-4": ["baselines=true"],
    # what narrows the alpha 0.1 gap: FedProx, personal heads
    "dirichlet-0.1-fedprox": [TRANSFER_ONLY, "partition.method=dirichlet", "partition.alpha=0.1",
                              "federation.strategy.name=fedprox",
                              "federation.strategy.proximal_mu=0.1"],
    "dirichlet-0.1-personal": [TRANSFER_ONLY, "partition.method=dirichlet",
                               "partition.alpha=0.1", "federation.personal_heads=true"],
    # label skew: IID vs Dirichlet alpha 100 / 0.5 / 0.1 (transfer model)
    "dirichlet-100": [TRANSFER_ONLY, "partition.method=dirichlet", "partition.alpha=100"],
    "dirichlet-0.5": [TRANSFER_ONLY, "partition.method=dirichlet", "partition.alpha=0.5"],
    "dirichlet-0.1": [TRANSFER_ONLY, "partition.method=dirichlet", "partition.alpha=0.1",
                      "baselines=true"],
    # number of sites
    "sites-2": [TRANSFER_ONLY, "partition.num_sites=2"],
    "sites-8": [TRANSFER_ONLY, "partition.num_sites=8"],
}


def study_config(name: str, seeds: list[int]) -> StudyConfig:
    """The base config with a study's overrides and the chosen seeds."""
    data = apply_overrides(read_yaml(BASE), [*STUDIES[name], f"seeds={seeds}"])
    return validate_config(StudyConfig, data, f"{BASE} + study {name}")


def run(name: str, runs: Path, seeds: list[int]) -> dict[str, Any]:
    """Run (or resume, or read back) one study; return its summary."""
    out = RunFolder(runs / name)
    if out.summary.is_file():
        return out.read_summary().as_dict()
    config = study_config(name, seeds)
    return run_study(config, out.path, resume=out.config.is_file(),
                     say=lambda text: logging.info("%s: %s", name, text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/studies"))
    parser.add_argument("--only", nargs="*", choices=list(STUDIES), default=list(STUDIES))
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0])
    parser.add_argument("--tables-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    summaries = {}
    for name in args.only:
        if args.tables_only and not RunFolder(args.runs / name).summary.is_file():
            continue
        summaries[name] = run(name, args.runs, args.seeds)
    from tables import write_results  # simulation/tables.py, beside this script

    write_results(summaries, args.runs)


if __name__ == "__main__":
    main()
