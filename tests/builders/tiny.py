"""The one tiny model of the tests: its encoder, the TrainConfig around it, and the two model
types built from them (``tiny_joint_model`` for training, ``tiny_classifier`` for inference).

``TINY_TRAIN`` is a ``TrainConfig`` mapping (studies put it under ``train``);
``tiny_overrides`` gives it as the ``--set`` overrides of ``fedecg train``.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from fedecg.models import EcgClassifier
from fedecg.models.joint import JointModel

N_LAB, N_DX, N_CLIN = 3, 2, 5  # the default model's outputs and clinical features
TINY_ENCODER = {"stem_width": 8, "widths": [8, 16], "blocks": [1, 1], "kernel_size": 5,
                "groups": 4}
TINY_CLINICAL = {"hidden": 16, "embedding_dim": 16}
TINY_TRAIN: dict[str, Any] = {
    "crop_samples": 100, "batch_size": 16, "threads": 1, "encoder": TINY_ENCODER,
    "clinical": TINY_CLINICAL, "pretrain": {"projection_dim": 16, "epochs": 1},
    "lab": {"epochs": 1}, "diagnosis": {"epochs": 1}, "eval": {"crops": 1, "bootstrap": 20}}


def tiny_overrides(*extra: str) -> list[str]:
    """``TINY_TRAIN`` as ``key.path=value`` overrides, then ``extra``."""
    def flat(prefix: str, value: Any) -> list[str]:
        if isinstance(value, dict):
            return [o for key, inner in value.items() for o in flat(f"{prefix}{key}.", inner)]
        return [f"{prefix[:-1]}={json.dumps(value).replace(' ', '')}"]

    return [*flat("", TINY_TRAIN), *extra]


def tiny_joint_model(n_lab: int = N_LAB, n_dx: int = N_DX, n_clinical: int = N_CLIN,
                     seed: int = 0, encoder: dict[str, Any] | None = None,
                     clinical: dict[str, Any] | None = None, **options: Any) -> JointModel:
    """A seeded ``JointModel`` of ``TINY_TRAIN``'s size (``encoder``, ``clinical``: settings
    to change; ``options``: ``JointModel``'s other arguments)."""
    torch.manual_seed(seed)
    return JointModel(n_lab, n_dx, n_clinical, encoder={**TINY_ENCODER, **(encoder or {})},
                      clinical={**TINY_CLINICAL, **(clinical or {})},
                      projection_dim=TINY_TRAIN["pretrain"]["projection_dim"], **options)


def tiny_classifier(n_lab: int, n_dx: int, seed: int = 0) -> EcgClassifier:
    """A seeded inference-only ``EcgClassifier`` with ``TINY_ENCODER``, in eval mode."""
    torch.manual_seed(seed)
    return EcgClassifier(n_lab=n_lab, n_dx=n_dx, encoder=TINY_ENCODER).eval()
