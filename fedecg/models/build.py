"""The untrained model of a model name, from the store manifest it will train on.

``build_model`` is what centralized training, a federated site and a server without data
(``fedecg.federated.orchestration.initial_model``) all start from: seeded by ``train.seed`` and
the model name, sized by the manifest's labels and clinical features.
"""

from __future__ import annotations

import numpy as np
import torch

from fedecg.config.train import MODEL_NAMES, TrainConfig
from fedecg.data.store import StoreManifest
from fedecg.models.joint import JointModel


def derive_seed(*parts: int) -> int:
    """A 31-bit seed derived from integers (different parts give independent streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def build_model(name: str, config: TrainConfig, manifest: StoreManifest,
                train_clinical: np.ndarray | None = None) -> JointModel:
    """The untrained ``JointModel`` of model ``name``, seeded by ``config.seed`` and the name;
    its clinical standardization fit on ``train_clinical`` (None: a server without rows)."""
    torch.manual_seed(derive_seed(config.seed, MODEL_NAMES.index(name)))
    model = JointModel(
        n_lab=len(manifest.lab_labels), n_dx=len(manifest.diagnosis_labels),
        n_clinical=len(manifest.clinical_features), encoder=config.encoder.model_dump(),
        clinical=config.clinical.model_dump(), projection_dim=config.pretrain.projection_dim,
        temperature=config.pretrain.temperature,
        learnable_temperature=config.pretrain.learnable_temperature,
        fuse_clinical=name == "multimodal")
    if train_clinical is None:
        train_clinical = np.zeros((0, len(manifest.clinical_features)), dtype=np.float32)
    model.clinical.fit_normalization(train_clinical)
    if config.compile:  # in place: the modules and their state-dict keys stay as they are
        encoder = model.classifier.encoder  # its layers: the stages call forward_features
        for layers in (encoder.stem, encoder.stages):
            layers.compile()
    return model.to(resolve_device(config.device))


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``; other names as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
