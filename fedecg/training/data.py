"""Training and evaluation data: crops of store records, seeded so that runs are reproducible.

``TrainingData`` is the stores a model trains on (one site's, or several pooled).
``CropDataset`` pools rows of one or more ``SiteStore``s. Item ``i`` of epoch ``e`` draws its crop
start and augmentation from ``numpy.random.default_rng((seed, e, i))`` (an epoch of several
passes numbers the items of pass ``p`` from ``p × len``, so each pass draws fresh crops), so the
data seen does not depend on worker count, batch order or resumption. Call ``set_epoch(e)``
before each epoch (``epoch_loader`` does). With ``crop=None`` items are whole records (evaluation).

Items are per-sample dicts (``ecg``, ``clinical``, ``lab``, ``dx``), so Opacus's
``DPDataLoader.from_data_loader`` can re-sample the same dataset with Poisson sampling.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from fedecg.config.train import AugmentConfig, TrainConfig
from fedecg.data.store import SiteStore, Split, StoreManifest

Source = tuple[SiteStore, np.ndarray]


class CropDataset(Dataset):
    """Rows of several stores as tensors; random augmented crops when ``train``."""

    def __init__(self, sources: Sequence[Source], crop: int | None, train: bool,
                 augment: AugmentConfig | None = None, seed: int = 0) -> None:
        self.sources = [(store, np.asarray(rows, dtype=np.int64)) for store, rows in sources]
        mapped = [store.mapped(rows) for store, rows in self.sources]  # nothing copied
        self.waveforms = [array for array, _ in mapped]  # memory-mapped
        self.crop, self.train, self.seed, self.epoch = crop, train, seed, 0
        self.augment = augment if train else None
        self.source_of = np.concatenate(
            [np.full(len(rows), k, dtype=np.int64) for k, (_, rows) in enumerate(self.sources)]
            or [np.zeros(0, dtype=np.int64)])
        self.row_of = np.concatenate([rows for _, rows in self.sources] or [np.zeros(0, int)])
        self.record_of = np.concatenate([rows for _, rows in mapped] or [np.zeros(0, int)])
        self.clinical = _stack([s.clinical(r) for s, r in self.sources])
        self.lab = _stack([s.lab_labels(r) for s, r in self.sources])
        self.dx = _stack([s.diagnosis_labels(r) for s, r in self.sources])

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose crops and augmentations items draw."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.row_of)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, item)) if self.train else None
        item = item % len(self.row_of)  # a later pass of the same epoch
        record = self.waveforms[self.source_of[item]][self.record_of[item]]  # mapped [12, T]
        if self.crop is not None and self.crop < record.shape[-1]:
            span = record.shape[-1] - self.crop
            start = int(rng.integers(0, span + 1)) if rng is not None else span // 2
            record = record[:, start:start + self.crop]  # read only the crop
        signal = np.array(record, dtype=np.float32)  # [12, crop]
        if rng is not None and self.augment is not None:
            _augment(signal, rng, self.augment)
        return {"ecg": torch.from_numpy(signal),
                "clinical": self.clinical[item], "lab": self.lab[item], "dx": self.dx[item]}


def _stack(parts: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.concatenate(parts).astype(np.float32))


def _augment(signal: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> None:
    """In place: amplitude scaling, gaussian noise and a per-lead baseline shift (all in mV)."""
    signal *= np.float32(1.0 + rng.uniform(-cfg.amplitude_scale, cfg.amplitude_scale))
    signal += rng.uniform(-cfg.baseline_shift, cfg.baseline_shift,
                          size=(signal.shape[0], 1)).astype(np.float32)
    if cfg.noise_std > 0:
        signal += np.float32(cfg.noise_std) * rng.standard_normal(signal.shape, np.float32)


def rows_with_targets(store: SiteStore, split: Split, targets: Sequence[str]) -> np.ndarray:
    """Rows of ``split`` where at least one value of any of ``targets`` is known."""
    rows = store.indices(split)
    getters = {"clinical": store.clinical, "lab": store.lab_labels, "dx": store.diagnosis_labels}
    known = np.zeros(len(rows), dtype=bool)
    for target in targets:
        values = getters[target](rows)
        if values.shape[1]:
            known |= ~np.isnan(values).all(axis=1)
    return rows[known]


class PassesSampler(Sampler[int]):
    """``passes`` seeded permutations of a dataset's ``n`` items; pass ``p`` yields indices
    offset by ``p × n`` (``CropDataset`` maps them back, with fresh crops)."""

    def __init__(self, n: int, passes: int, generator: torch.Generator) -> None:
        self.n, self.passes, self.generator = n, passes, generator

    def __len__(self) -> int:
        return self.n * self.passes

    def __iter__(self) -> Iterator[int]:
        for offset in range(0, len(self), max(self.n, 1)):
            yield from (offset + torch.randperm(self.n, generator=self.generator)).tolist()


def epoch_loader(dataset: CropDataset, batch_size: int, epoch: int, shuffle: bool,
                 seed: int = 0, num_workers: int = 0, passes: int = 1) -> DataLoader:
    """A loader over ``dataset`` for ``epoch``; the shuffle order is seeded by ``(seed, epoch)``.

    With ``passes`` > 1 (a small site, see ``StageConfig.min_steps``) the epoch goes through the
    shuffled data that many times.
    """
    dataset.set_epoch(epoch)
    if shuffle:
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence(
            (seed, epoch)).generate_state(1)[0]))
        sampler: Sampler[int] = (RandomSampler(dataset, generator=generator) if passes == 1
                                 else PassesSampler(len(dataset), passes, generator))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=shuffle and len(dataset) > batch_size)


@dataclass
class TrainingData:
    """Compatible stores trained as one pool."""

    stores: list[SiteStore]

    @property
    def manifest(self) -> StoreManifest:
        """The first store's manifest (all pooled stores agree on labels and features)."""
        return self.stores[0].manifest

    @property
    def names(self) -> dict[str, list[str]]:
        """Label names per task: ``{"diagnosis": [...], "lab": [...]}``."""
        return {"diagnosis": list(self.manifest.diagnosis_labels),
                "lab": list(self.manifest.lab_labels)}

    def dataset(self, split: Split, targets: tuple[str, ...], crop: int | None, train: bool,
                config: TrainConfig, seed: int = 0, stores: list[int] | None = None
                ) -> CropDataset:
        """Rows of ``split`` with a known value of any ``targets``, pooled over stores."""
        chosen = [self.stores[k] for k in (stores or range(len(self.stores)))]
        sources = [(store, rows_with_targets(store, split, targets)) for store in chosen]
        return CropDataset(sources, crop, train, config.augment, seed)

    def train_clinical(self) -> np.ndarray:
        """Clinical features of all training rows (what the standardization is fit on)."""
        return np.concatenate([s.clinical(s.indices("train")) for s in self.stores])
