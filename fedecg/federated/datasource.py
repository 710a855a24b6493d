"""Find or make a study's data: a prepared store (optionally a synthesized twin) and its partition.

A synthesized twin is cached by the generator's version and its parameters
(``<cache>/twin-v<version>-p<patients>-s<sites>-seed<seed>-fs<fs>/store``), so repeated
studies and ``flwr run .`` reuse it instead of synthesizing again, and a changed generator
never reuses an old twin.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import fedecg
from fedecg.config.base import apply_overrides, read_yaml, validate_config
from fedecg.config.data import PrepareConfig, WaveformConfig
from fedecg.config.federated import DataSourceConfig, PartitionConfig, SimulationConfig
from fedecg.data.prepare import MimicInput, prepare_store
from fedecg.data.store import SiteStore
from fedecg.data.synth import SYNTH_VERSION, generate_twin
from fedecg.federated.orchestration import RunPlan
from fedecg.federated.partition import load_partition, partition_store, write_partition

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "fedecg"
PARTITION_DIR = "partition"


def cache_dir(data: DataSourceConfig) -> Path:
    """Where synthesized twins go: ``data.cache_dir``, ``$FEDECG_CACHE``, or ~/.cache/fedecg."""
    if data.cache_dir:
        return Path(data.cache_dir)
    return Path(os.environ.get("FEDECG_CACHE", DEFAULT_CACHE))


def ensure_store(data: DataSourceConfig) -> Path:
    """The store to study: ``data.store``, or the cached twin (synthesized and prepared once)."""
    if data.store is not None:
        return Path(data.store)
    assert data.synthesize is not None  # guaranteed by DataSourceConfig's validator
    twin = data.synthesize
    name = f"twin-v{SYNTH_VERSION}-p{twin.patients}-s{twin.sites}-seed{twin.seed}-fs{twin.fs:g}"
    folder = cache_dir(data) / name
    store = folder / "store"
    if (store / "manifest.json").is_file():
        return store
    log.info("synthesizing a twin of %d patients at %d hospitals into %s", twin.patients,
             twin.sites, folder)
    if not (folder / "raw" / "record_list.csv").is_file():
        generate_twin(folder / "raw", patients=twin.patients, sites=twin.sites, seed=twin.seed,
                      overwrite=True)
    settings = PrepareConfig(site_name=folder.name, waveform=WaveformConfig(fs=twin.fs))
    prepare_store(MimicInput(folder / "raw", folder / "raw"), store, settings, overwrite=True)
    return store


def ensure_partition(store: Path, config: PartitionConfig, out: Path) -> Path:
    """Partition ``store`` into ``out/partition`` (kept if it already matches ``config``)."""
    folder = Path(out) / PARTITION_DIR
    opened = SiteStore.open(store)
    if (folder / "partition.json").is_file():
        existing = load_partition(folder, opened)
        if existing.config == config:
            return folder
    write_partition(partition_store(opened, config), folder)
    return folder


def make_plan(config: SimulationConfig, model: str, out: Path, store: Path,
              partition: Path) -> RunPlan:
    """The plan of one model's federated run over a partitioned store."""
    manifest = SiteStore.open(store).manifest
    return RunPlan(config=config, model=model, manifest=manifest, out=str(Path(out).resolve()),
                   store=str(Path(store).resolve()), partition=str(Path(partition).resolve()))


def app_path(path: str) -> Path:
    """A run-config path; a relative one is read from the app's root (the Flower bundle)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return Path(fedecg.__file__).resolve().parents[1] / candidate


def plan_from_run_config(run_config: dict[str, Any], run_id: int = 0) -> RunPlan:
    """The plan of a ``flwr run .``: keys ``config`` (YAML, optional), ``set`` (``;``-separated
    overrides), ``model`` and ``out``; data is made or found as the config says."""
    path = str(run_config.get("config", "") or "")
    data = read_yaml(app_path(path)) if path else {}
    overrides = [part.strip() for part in str(run_config.get("set", "")).split(";")
                 if part.strip()]
    config = validate_config(SimulationConfig, apply_overrides(data, overrides),
                             path or "run config")
    out = Path(str(run_config.get("out", "") or
                   cache_dir(config.data) / "flwr-runs" / f"run-{run_id}"))
    model = str(run_config.get("model", "transfer"))
    store = ensure_store(config.data)
    partition = ensure_partition(store, config.partition, out)
    return make_plan(config, model, out / model, store, partition)
