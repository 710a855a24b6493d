"""Find or make a study's data and plans: a prepared store (optionally a synthesized twin) and
its partition, or the hospitals' own stores; and the plans of a ``flwr run`` from its run config.

A synthesized twin is cached by the generator's version and its parameters
(``<cache>/twin-v<version>-p<patients>-s<sites>-seed<seed>-fs<fs>/store``), so repeated
studies and ``flwr run .`` reuse it instead of synthesizing again, and a changed generator
never reuses an old twin.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

import fedecg
from fedecg.config.base import apply_overrides, read_yaml, validate_config
from fedecg.config.data import PrepareConfig, WaveformConfig
from fedecg.config.federated import DataSourceConfig, PartitionConfig, StudyConfig
from fedecg.config.train import MODEL_NAMES
from fedecg.data.prepare import MimicInput, prepare_store, schema_manifest
from fedecg.data.store import SiteStore
from fedecg.data.synth import generate_twin
from fedecg.errors import ConfigError
from fedecg.federated.orchestration import RunPlan
from fedecg.federated.partition import load_partition, partition_store, write_partition
from fedecg.run_folder import RunFolder

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path.home() / ".cache" / "fedecg"


def cache_dir(data: DataSourceConfig) -> Path:
    """Where synthesized twins go: ``data.cache_dir``, ``$FEDECG_CACHE``, or ~/.cache/fedecg."""
    if data.cache_dir:
        return Path(data.cache_dir)
    return Path(os.environ.get("FEDECG_CACHE", DEFAULT_CACHE))


def ensure_store(data: DataSourceConfig, say: Callable[[str], None] | None = None,
                 console: Console | None = None) -> Path:
    """The store to study: ``data.store``, or the cached twin (synthesized and prepared once;
    ``say`` tells, and ``console`` shows the prepare's progress bar)."""
    if data.store is not None:
        return Path(data.store)
    if data.synthesize is None:
        raise ConfigError("data.deployed: the hospitals hold the data; a simulation needs "
                          "data.store or data.synthesize")
    twin = data.synthesize
    name = (f"twin-v{twin.generator_version}-p{twin.patients}-s{twin.sites}-seed{twin.seed}"
            f"-fs{twin.fs:g}")
    folder = cache_dir(data) / name
    store = folder / "store"
    if (store / "manifest.json").is_file():
        return store
    (say or log.info)(f"synthesizing the twin: {twin.patients} patients at {twin.sites} "
                      f"hospitals into {folder} (once; later studies reuse it)")
    if not (folder / "raw" / "record_list.csv").is_file():
        generate_twin(folder / "raw", patients=twin.patients, sites=twin.sites, seed=twin.seed,
                      overwrite=True, generator_version=twin.generator_version)
    settings = PrepareConfig(site_name=folder.name, waveform=WaveformConfig(fs=twin.fs))
    result = prepare_store(MimicInput(folder / "raw", folder / "raw"), store, settings,
                           overwrite=True, console=console)
    (say or log.info)(result.summary())
    return store


def ensure_partition(store: Path, config: PartitionConfig, out: Path) -> Path:
    """Partition ``store`` into ``out/partition`` (kept if it already matches ``config``)."""
    folder = RunFolder(out).partition
    opened = SiteStore.open(store)
    if (folder / "partition.json").is_file():
        existing = load_partition(folder, opened)
        if existing.config == config:
            return folder
    write_partition(partition_store(opened, config), folder)
    return folder


def make_plan(config: StudyConfig, model: str, out: Path, store: Path | None = None,
              partition: Path | None = None) -> RunPlan:
    """The plan of one model's federated run: over a partitioned store (simulation), or over
    the hospitals' own stores (``data.deployed``: the manifest comes from their prepare
    settings, and each site checks its store against it)."""
    if config.data.deployed is not None:
        manifest = schema_manifest(config.data.deployed.prepare, "study", created_at="")
        return RunPlan(config=config, model=model, manifest=manifest,
                       out=str(Path(out).resolve()))
    if store is None or partition is None:
        raise ConfigError("a simulated study needs a store and its partition")
    manifest = SiteStore.open(store).manifest
    return RunPlan(config=config, model=model, manifest=manifest, out=str(Path(out).resolve()),
                   store=str(Path(store).resolve()), partition=str(Path(partition).resolve()))


def app_path(path: str) -> Path:
    """A run-config path; a relative one is read from the app's root (the Flower bundle)."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    return Path(fedecg.__file__).resolve().parents[1] / candidate


def study_from_run_config(run_config: dict[str, Any]) -> StudyConfig:
    """The study of a ``flwr run``: run-config keys ``config`` (YAML, optional) and ``set``
    (``;``-separated overrides)."""
    path = str(run_config.get("config", "") or "")
    data = read_yaml(app_path(path)) if path else {}
    overrides = [part.strip() for part in str(run_config.get("set", "")).split(";")
                 if part.strip()]
    return validate_config(StudyConfig, apply_overrides(data, overrides),
                           path or "run config")


def study_out(run_config: dict[str, Any], config: StudyConfig, run_id: int = 0) -> Path:
    """The study folder: run-config ``out``, else ``<cache>/flwr-runs/run-<id>``."""
    out = str(run_config.get("out", "") or "")
    return Path(out) if out else cache_dir(config.data) / "flwr-runs" / f"run-{run_id}"


def run_models(run_config: dict[str, Any], config: StudyConfig) -> list[str]:
    """Run-config ``model`` (comma-separated names; empty: every model of ``train.models``)."""
    names = [n.strip() for n in str(run_config.get("model", "") or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        raise ConfigError(f"run config model {unknown}: expected names among {MODEL_NAMES}, "
                          "comma-separated, or empty for every model of train.models")
    return names or list(config.train.models)


def seed_plans(config: StudyConfig, out: Path, models: list[str]) -> list[RunPlan]:
    """One plan per model for ``config``'s seed (``train.seed``), in ``out/seed-<s>/<model>/
    federated`` as ``fedecg simulate`` lays them out; simulated data is made or found first."""
    store = partition = None
    if config.data.deployed is None:
        store = ensure_store(config.data)
        partition = ensure_partition(store, config.partition, out)
    folder = RunFolder(out)
    return [make_plan(config, name, folder.federated_run(config.train.seed, name).path, store,
                      partition) for name in models]
