"""A virtual site's memory beyond the page cache, measured in a fresh process.

``measure(store, site_ecgs)`` deals the store's patients to IID virtual sites of about
``site_ecgs`` ECGs each (in this process), then starts ``python site_memory.py --child``,
which opens site 0 exactly as a simulation's ClientApp does (``open_site`` with its
``partition-id``), builds the training datasets of the three stages and reads ``BATCHES``
batches of each, as ``local_train`` would.
The child reports the growth of its anonymous resident memory (``RssAnon``: what it holds
itself; memory-mapped waveform pages are page cache, not counted) and of its peak resident set
(``VmHWM``, page cache touched included) over a baseline taken after its imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BATCHES = 5


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(store: Path, site_ecgs: int, source: Path | None = None) -> dict[str, Any]:
    """Site 0's memory growth (MiB) over an IID partition of ``store`` into sites of about
    ``site_ecgs`` ECGs; with ``source`` (a fedecg checkout) the site runs that fedecg."""
    from fedecg.config.federated import PartitionConfig
    from fedecg.data.store import SiteStore
    from fedecg.federated.partition import partition_store, write_partition

    logging.getLogger("fedecg").setLevel(logging.ERROR)  # the sites' few-positives warnings
    opened = SiteStore.open(store)
    sites = max(1, round(len(opened) / site_ecgs))
    partition = partition_store(opened, PartitionConfig(method="iid", num_sites=sites))
    with tempfile.TemporaryDirectory() as tmp:
        write_partition(partition, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(source)} if source else None
        child = subprocess.run([sys.executable, __file__, "--child", str(store), tmp],
                               capture_output=True, text=True, check=True, env=env)
    return {"store_records": len(opened), "sites": sites,
            **json.loads(child.stdout.splitlines()[-1])}


def _child(store: Path, partition: Path) -> dict[str, Any]:
    import torch

    from fedecg.config.federated import StudyConfig
    from fedecg.config.train import TrainConfig
    from fedecg.data.store import StoreManifest
    from fedecg.federated.orchestration import RunPlan
    from fedecg.federated.site_handlers import open_site
    from fedecg.training.data import epoch_loader
    from fedecg.training.stages import build_stages

    torch.set_num_threads(1)
    manifest = StoreManifest.model_validate_json((store / "manifest.json").read_text())
    config = TrainConfig()
    plan = RunPlan(config=StudyConfig(data={"store": str(store)}, train=config),
                   manifest=manifest, out=str(partition), store=str(store),
                   partition=str(partition))
    anon, peak = _status_mib("RssAnon"), _status_mib("VmHWM")
    site = open_site(plan, {"partition-id": 0})
    site.data.train_clinical()
    for stage in build_stages(config, pretrained=True):  # one round each, in turn
        dataset = site.data.dataset("train", stage.targets, config.crop_samples, True, config)
        for _, _batch in zip(range(BATCHES), epoch_loader(dataset, config.batch_size, 0, True),
                             strict=False):
            pass
    return {"site_records": sum(len(s) for s in site.data.stores),
            "anon_growth_mib": _status_mib("RssAnon") - anon,
            "peak_growth_mib": _status_mib("VmHWM") - peak}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: one site's memory (see measure)")
    parser.add_argument("--child", nargs=2, type=Path, metavar=("STORE", "PARTITION"),
                        required=True)
    args = parser.parse_args()
    print(json.dumps(_child(*args.child)))
