"""Tiny seeded records shaped for ``builders.tiny.tiny_joint_model``, for the DP tests (no
store, no Flower)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from builders.tiny import N_CLIN, N_DX, N_LAB
from fedecg.training.stages import DiagnosisStage, LabHeadStage, PretrainStage

N, BATCH, LEADS_T = 24, 6, 48
STAGES = [PretrainStage(), LabHeadStage(), DiagnosisStage(lab_loss_weight=0.5)]


class TinyRecords(Dataset):
    """Seeded per-example dicts shaped like ``fedecg.training.data.CropDataset`` items."""

    def __init__(self, n: int = N, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ecg = torch.randn(n, 12, LEADS_T, generator=g)
        self.clinical = torch.randn(n, N_CLIN, generator=g)
        self.lab = (torch.rand(n, N_LAB, generator=g) > 0.5).float()
        self.dx = (torch.rand(n, N_DX, generator=g) > 0.6).float()
        self.lab[::3, 0] = float("nan")
        self.dx[::4] = float("nan")  # ECGs outside any stay: unknown diagnoses

    def __len__(self) -> int:
        return len(self.ecg)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"ecg": self.ecg[i], "clinical": self.clinical[i], "lab": self.lab[i],
                "dx": self.dx[i]}


def fixed_batches() -> DataLoader:
    return DataLoader(TinyRecords(), batch_size=BATCH, shuffle=False)
