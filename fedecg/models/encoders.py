"""The ECG encoder: a 1-D residual CNN (xresnet1d-like) over 12 leads, pooled to one embedding.

Norm layers keep no batch statistics (GroupNorm by default, as timm's ``resnet.py`` takes a
``norm_layer``), so DP-SGD works and non-IID sites do not corrupt shared running statistics.

``forward_features(ecg[B, 12, T]) -> [B, E]`` is the embedding every head reads;
``embedding_dim`` gives E (twice the last stage width: average and max pooling concatenated).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn

NormName = Literal["group", "layer", "instance"]
NormLayer = Callable[[int], nn.Module]


def make_norm(name: NormName = "group", groups: int = 8) -> NormLayer:
    """A factory ``channels -> norm module`` with no batch statistics.

    ``group`` uses ``min(groups, channels)`` groups (reduced until it divides ``channels``);
    ``layer`` is GroupNorm with one group; ``instance`` is GroupNorm with one group per channel.
    """

    def build(channels: int) -> nn.Module:
        if name == "layer":
            return nn.GroupNorm(1, channels)
        if name == "instance":
            return nn.GroupNorm(channels, channels)
        count = min(groups, channels)
        while channels % count:
            count -= 1
        return nn.GroupNorm(count, channels)

    return build


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv1d:
    return nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)


class ResidualBlock1d(nn.Module):
    """Two convolutions with a shortcut; the second norm starts at zero (xresnet's trick)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm_layer: NormLayer):
        super().__init__()
        self.conv1 = _conv(c_in, c_out, kernel, stride)
        self.norm1 = norm_layer(c_out)
        self.conv2 = _conv(c_out, c_out, kernel)
        self.norm2 = norm_layer(c_out)
        nn.init.zeros_(self.norm2.weight)
        self.act = nn.ReLU()
        shortcut: list[nn.Module] = []
        if stride > 1:
            shortcut.append(nn.AvgPool1d(stride, stride, ceil_mode=True))
        if c_in != c_out:  # no norm here: the shortcut keeps the input's absolute scale
            shortcut.append(nn.Conv1d(c_in, c_out, 1, bias=False))
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))  # [B, C_out, T / stride]
        y = self.norm2(self.conv2(y))  # [B, C_out, T / stride]
        return self.act(y + self.shortcut(x))


class EcgEncoder(nn.Module):
    """1-D residual CNN: a stem, then one stage per entry of ``widths`` (each halving time).

    Args:
        in_channels: leads (12).
        stem_width: channels of the stem convolutions.
        widths: channels of each residual stage.
        blocks: residual blocks per stage (same length as ``widths``).
        kernel_size: odd convolution kernel length.
        norm: name of the norm (``group``, ``layer``, ``instance``); ignored if ``norm_layer``.
        groups: GroupNorm groups for ``norm='group'``.
        norm_layer: a ``channels -> module`` factory overriding ``norm``.
    """

    def __init__(self, in_channels: int = 12, stem_width: int = 32,
                 widths: Sequence[int] = (32, 64, 128), blocks: Sequence[int] = (1, 1, 1),
                 kernel_size: int = 7, norm: NormName = "group", groups: int = 8,
                 norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {list(widths)} and blocks {list(blocks)}: expected two "
                             "non-empty lists of the same length")
        norm_layer = norm_layer or make_norm(norm, groups)
        # The stem and the shortcuts have no norm, so the residual stream keeps the absolute
        # amplitude (mV: QRS voltage, T waves) that a per-sample norm would erase; only the
        # residual branches are normalized.
        self.stem = nn.Sequential(
            nn.Conv1d(in_channels, stem_width, kernel_size, stride=2, padding=kernel_size // 2),
            nn.ReLU(),
            nn.Conv1d(stem_width, stem_width, kernel_size, padding=kernel_size // 2), nn.ReLU(),
        )
        stages: list[nn.Module] = []
        c_in = stem_width
        for index, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for block in range(count):
                stride = 2 if block == 0 and index > 0 else 1
                stages.append(ResidualBlock1d(c_in, width, kernel_size, stride, norm_layer))
                c_in = width
        self.stages = nn.Sequential(*stages)
        self.embedding_dim = 2 * c_in

    def forward_features(self, ecg: torch.Tensor) -> torch.Tensor:
        """Embed ``ecg`` ``[B, leads, T]`` into ``[B, embedding_dim]``."""
        x = self.stages(self.stem(ecg))  # [B, C, T']
        return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)  # [B, 2C]

    def forward(self, ecg: torch.Tensor) -> torch.Tensor:
        """Same as ``forward_features``."""
        return self.forward_features(ecg)
