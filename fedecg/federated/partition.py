"""Split one site store into patient-disjoint virtual sites.

A partition is a list of row indices per site over ONE store: no waveform is copied. Patients are
dealt to sites by flwr-datasets partitioners applied to a per-patient table (one row per
patient, with a representative label), then mapped back to their ECGs. The partition file also
records per-site counts, label prevalence and a label-skew score.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from fedecg.config.base import StrictModel
from fedecg.config.federated import PartitionConfig
from fedecg.data.store import (
    SPLITS,
    SiteStore,
    StoreManifest,
    label_prevalence,
    read_manifest,
    split_problems,
)
from fedecg.errors import ConfigError, OutputExistsError, StoreError
from fedecg.io import atomic_write_json

if TYPE_CHECKING:  # flwr-datasets (and HF datasets) load only to deal a partition: a site
    from flwr_datasets.partitioner import Partitioner  # reading one stays light

PARTITION_FILE = "partition.json"
PARTITION_SCHEMA = 1
NO_LABEL = "none"
UNKNOWN_LABEL = "unknown"

log = logging.getLogger(__name__)


class SitePartition(StrictModel):
    """One virtual site: its patients' rows in the store, and what they hold."""

    name: str
    natural_id: str | None = None
    n_patients: int
    n_records: int
    split_counts: dict[str, int]
    label_counts: dict[str, int]
    prevalence: dict[str, dict[str, float]]
    rows: list[int] = Field(repr=False)


class Partition(StrictModel):
    """A store split into virtual sites (``partition.json``)."""

    schema_version: int = PARTITION_SCHEMA
    store: str
    store_site_name: str
    store_n_records: int
    config: PartitionConfig
    label_skew: float
    sites: list[SitePartition]

    def check_fits(self, manifest: StoreManifest, path: Path, store: Path) -> None:
        """Raise ``StoreError`` unless this partition (file ``path``) was made for the store
        at ``store`` (its ``manifest``)."""
        if (self.store_n_records != manifest.n_records
                or self.store_site_name != manifest.site_name):
            raise StoreError(
                f"{path}: made for store {self.store_site_name!r} with "
                f"{self.store_n_records} records, but {store} is {manifest.site_name!r} with "
                f"{manifest.n_records}; partition that store again")

    def site_rows(self, index: int, split: str | None = None,
                  store: SiteStore | None = None) -> np.ndarray:
        """Store rows of site ``index``, optionally only those of one split of ``store``."""
        if not 0 <= index < len(self.sites):
            raise ConfigError(f"site index {index}: the partition has sites "
                              f"0..{len(self.sites) - 1}")
        rows = np.asarray(self.sites[index].rows, dtype=np.int64)
        if split is None:
            return rows
        if store is None:
            raise ValueError("site_rows(split=...) needs the store to read the split column")
        return np.intersect1d(rows, store.indices(split))  # type: ignore[arg-type]


def patient_table(store: SiteStore, config: PartitionConfig) -> pd.DataFrame:
    """One row per patient: ``patient``, ``n_records``, its representative ``label`` (the rarest
    diagnosis, or the most frequent value of ``column`` for label skew) and, for ``natural``,
    its ``natural`` site (the most frequent value of ``column`` over its ECGs)."""
    cohort = store.cohort
    if config.patient_column not in cohort.columns:
        raise StoreError(f"{store.path}: cohort has no patient column {config.patient_column!r}; "
                         f"set partition.patient_column to one of {list(cohort.columns)[:12]}")
    patients = cohort[config.patient_column]
    by_column = None
    if config.column is not None:
        if config.column not in cohort.columns:
            raise ConfigError(f"partition.column {config.column!r}: not a cohort column of "
                              f"{store.path}; columns are {list(cohort.columns)}")
        values = cohort[config.column].astype("string").fillna(UNKNOWN_LABEL)
        by_column = values.groupby(patients, sort=True).agg(lambda s: s.value_counts().index[0])
    if by_column is not None and config.method != "natural":
        label = by_column
    else:
        label = _rarest_diagnosis(cohort, patients, store.manifest.diagnosis_columns)
    table = pd.DataFrame({"patient": label.index.astype(str), "label": label.to_numpy(str)})
    if config.method == "natural" and by_column is not None:
        table["natural"] = by_column.to_numpy(str)
    table["n_records"] = patients.value_counts().reindex(label.index).to_numpy()
    return table


def _rarest_diagnosis(cohort: pd.DataFrame, patients: pd.Series, columns: list[str]) -> pd.Series:
    """The rarest diagnosis a patient has on any ECG (``none``; ``unknown`` if unlabelled)."""
    per_patient = cohort[columns].groupby(patients, sort=True).max()
    prevalence = (per_patient == 1).sum().sort_values(kind="stable")
    ordered = [c for c in prevalence.index if prevalence[c] > 0]
    label = pd.Series(NO_LABEL, index=per_patient.index, dtype=object)
    label[per_patient.isna().all(axis=1)] = UNKNOWN_LABEL
    for column in reversed(ordered):  # rarest last, so it wins
        label[per_patient[column] == 1] = column
    return label


def _partitioner(config: PartitionConfig, table: pd.DataFrame) -> tuple[Partitioner, pd.DataFrame]:
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        NaturalIdPartitioner,
        SizePartitioner,
    )

    """A flwr-datasets partitioner for ``config.method`` and the (shuffled) table it splits."""
    rng = np.random.default_rng(config.seed)
    shuffled = table.iloc[rng.permutation(len(table))].reset_index(drop=True)
    k = config.num_sites
    if config.method == "iid":
        return IidPartitioner(num_partitions=k), shuffled
    if config.method == "dirichlet":
        return DirichletPartitioner(
            num_partitions=k, partition_by="label", alpha=float(config.alpha),
            min_partition_size=config.min_patients_per_site, self_balancing=True,
            seed=config.seed), shuffled
    if config.method == "quantity":
        return SizePartitioner(_quantity_sizes(config, len(table), rng)), shuffled
    return NaturalIdPartitioner(partition_by="natural"), group_values(table, k)


def group_values(table: pd.DataFrame, sites: int) -> pd.DataFrame:
    """``table`` with its ``natural`` values joined into ``sites`` groups (``a+b``), each value
    whole: the values with most patients first, each to the group with fewest patients so far
    (ties: value name, then group order). With as many values as sites, each keeps its own."""
    counts = table["natural"].value_counts()
    if len(counts) <= sites:
        return table
    order = sorted(counts.index, key=lambda value: (-counts[value], value))
    groups: list[list[str]] = [[] for _ in range(sites)]
    sizes = [0] * sites
    for value in order:
        smallest = sizes.index(min(sizes))
        groups[smallest].append(value)
        sizes[smallest] += int(counts[value])
    name = {value: "+".join(sorted(group)) for group in groups for value in group}
    return table.assign(natural=table["natural"].map(name))


def _quantity_sizes(config: PartitionConfig, n_patients: int,
                    rng: np.random.Generator) -> list[int]:
    """Site sizes ~ Dirichlet(alpha), each at least ``min_patients_per_site``, summing to all."""
    k, floor = config.num_sites, config.min_patients_per_site
    spare = n_patients - k * floor
    shares = rng.dirichlet(np.full(k, config.alpha))
    extra = np.floor(shares * spare).astype(int)
    extra[int(np.argmax(shares))] += spare - int(extra.sum())
    return [int(floor + e) for e in extra]


def _check_feasible(config: PartitionConfig, table: pd.DataFrame, source: str) -> None:
    n_patients = len(table)
    if config.method == "natural":
        values = sorted(table["natural"].unique())
        if config.num_sites > len(values):
            raise ConfigError(
                f"partition.num_sites {config.num_sites}: column {config.column!r} of {source} "
                f"has {len(values)} values {values[:10]}, and a natural site takes whole "
                f"values; set num_sites to at most {len(values)} or choose a column with more "
                "values")
    elif n_patients < config.num_sites * config.min_patients_per_site:
        raise ConfigError(
            f"partition.num_sites {config.num_sites}: {source} has {n_patients} patients, "
            f"fewer than {config.min_patients_per_site} per site; use fewer sites")


def partition_store(store: SiteStore, config: PartitionConfig) -> Partition:
    """Deal the store's patients to ``config.num_sites`` sites and describe each site."""
    import datasets

    table = patient_table(store, config)
    _check_feasible(config, table, str(store.path))
    partitioner, dealt = _partitioner(config, table)
    columns = [c for c in ("patient", "label", "natural") if c in dealt.columns]
    partitioner.dataset = datasets.Dataset.from_pandas(dealt[columns], preserve_index=False)
    site_patients, natural_ids = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for index in range(config.num_sites):
                site_patients.append(partitioner.load_partition(index)["patient"])
        except ValueError as exc:
            raise ConfigError(f"partition {config.method} alpha={config.alpha} over "
                              f"{len(table)} patients failed: {exc}; raise alpha or lower "
                              f"num_sites/min_patients_per_site") from None
    if config.method == "natural":
        natural_ids = [str(partitioner.partition_id_to_natural_id[i])
                       for i in range(config.num_sites)]
    return _describe(store, config, table, site_patients, natural_ids)


def _describe(store: SiteStore, config: PartitionConfig, table: pd.DataFrame,
              site_patients: list[list[str]], natural_ids: list[str]) -> Partition:
    cohort = store.cohort
    patient_of_row = cohort[config.patient_column].astype(str).to_numpy()
    labels = table.set_index("patient")["label"]
    label_columns = store.manifest.diagnosis_columns + store.manifest.lab_label_columns
    sites = []
    for index, patients in enumerate(site_patients):
        rows = np.flatnonzero(np.isin(patient_of_row, np.asarray(patients, dtype=str)))
        part = cohort.iloc[rows]
        sites.append(SitePartition(
            name=f"site{index}", natural_id=natural_ids[index] if natural_ids else None,
            n_patients=len(patients), n_records=len(rows),
            split_counts={s: int((part["split"] == s).sum()) for s in SPLITS},
            label_counts={str(k): int(v) for k, v in labels[patients].value_counts().items()},
            prevalence=label_prevalence(part, label_columns), rows=rows.tolist()))
        for problem in split_problems(part, label_columns, f"site{index}"):
            log.warning(problem)
    return Partition(store=str(store.path.resolve()), store_site_name=store.manifest.site_name,
                     store_n_records=len(store), config=config,
                     label_skew=label_skew([s.label_counts for s in sites]), sites=sites)


def label_skew(site_label_counts: list[dict[str, int]]) -> float:
    """Mean total-variation distance between each site's label distribution and the overall one.

    0 when every site has the overall mix; close to 1 when each site holds its own labels.
    """
    frame = pd.DataFrame(site_label_counts).fillna(0).astype(float)
    overall = frame.sum() / frame.to_numpy().sum()
    per_site = frame.div(frame.sum(axis=1), axis=0)
    return float((0.5 * (per_site - overall).abs().sum(axis=1)).mean())


def check_partition_out(out: Path) -> None:
    """Raise ``OutputExistsError`` when ``out`` exists and is not a folder."""
    if Path(out).exists() and not Path(out).is_dir():
        raise OutputExistsError(f"--out {out}: exists and is a file; expected a folder (new or "
                                f"existing) to write {PARTITION_FILE} into")


def write_partition(partition: Partition, out: Path) -> Path:
    """Write ``partition.json`` into folder ``out`` (atomically); return its path."""
    check_partition_out(out)
    path = Path(out) / PARTITION_FILE
    atomic_write_json(path, partition.model_dump(mode="json"))
    return path


def load_partition(path: Path, store: SiteStore | None = None) -> Partition:
    """Read a partition file (or the ``partition.json`` in a folder); check it fits ``store``."""
    path = Path(path)
    path = path / PARTITION_FILE if path.is_dir() else path
    if not path.is_file():
        raise StoreError(f"{path}: no partition file; run `fedecg partition` to make one")
    try:
        partition = Partition.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: not a valid partition file: {exc}") from None
    if store is not None:
        partition.check_fits(store.manifest, path, store.path)
    return partition


def site_view(store: SiteStore, rows: np.ndarray, name: str | None = None) -> SiteStore:
    """A ``SiteStore`` holding only ``rows`` of ``store`` (``SiteStore.view``)."""
    return store.view(rows, name)


def open_site_rows(store: Path, partition: Path, index: int) -> SiteStore:
    """Site ``index`` of the partition at ``partition`` over ``store``, opened alone: only its
    cohort rows are read and its waveforms stay memory-mapped (what a virtual site's process
    holds grows with its own ECGs, not with the store's)."""
    loaded = load_partition(partition)
    loaded.check_fits(read_manifest(store), partition, store)
    rows = loaded.site_rows(index)  # checks the index
    return SiteStore.open(store, rows=rows, name=loaded.sites[index].name)
