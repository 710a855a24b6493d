"""A clinical-style 12-lead ECG plot: red millimetre grid, one panel per lead, optional shading.

Reusable for explanations: ``attribution`` (same shape as the signal, values in [0, 1]) is drawn
as orange shading behind each trace.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from fedecg.data.leads import canonical_lead_name

LAYOUT: tuple[tuple[str, str], ...] = (
    ("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"), ("aVF", "V6"),
)
"""Panels in a 6 x 2 grid: limb leads on the left, chest leads on the right."""

_MINOR = "#f6c8c8"
_MAJOR = "#e88d8d"
SHADE_CMAP = LinearSegmentedColormap.from_list(
    "attribution", [(1.0, 0.55, 0.0, 0.0), (1.0, 0.55, 0.0, 0.65)])


def _check(signal_mv: np.ndarray, leads: Sequence[str], attribution: np.ndarray | None) -> None:
    if signal_mv.ndim != 2 or signal_mv.shape[0] != len(leads):
        raise ValueError(f"signal_mv has shape {signal_mv.shape}; expected [{len(leads)}, T] "
                         f"matching the {len(leads)} lead names given")
    if attribution is not None and attribution.shape != signal_mv.shape:
        raise ValueError(f"attribution has shape {attribution.shape}; expected the signal's "
                         f"shape {signal_mv.shape}")


def _panel_order(leads: Sequence[str]) -> list[int]:
    """Signal row of each panel, column by column: the standard layout when all 12 leads are
    named, else as given."""
    names = [canonical_lead_name(name) for name in leads]
    layout = [row[0] for row in LAYOUT] + [row[1] for row in LAYOUT]
    if sorted(n for n in names if n) == sorted(layout):
        return [names.index(name) for name in layout]
    return list(range(len(leads)))


def _grid(ax: Axes, duration: float, low: float, high: float) -> None:
    """Paper grid: minor 0.04 s x 0.1 mV, major 0.2 s x 0.5 mV."""
    for step, color, width in ((0.04, _MINOR, 0.4), (0.2, _MAJOR, 0.8)):
        ax.vlines(np.arange(0.0, duration + 1e-9, step), low, high, colors=color, lw=width,
                  zorder=0)
    for step, color, width in ((0.1, _MINOR, 0.4), (0.5, _MAJOR, 0.8)):
        ax.hlines(np.arange(np.floor(low / step) * step, high + 1e-9, step), 0.0, duration,
                  colors=color, lw=width, zorder=0)


def _limits(signal_mv: np.ndarray) -> tuple[float, float]:
    finite = signal_mv[np.isfinite(signal_mv)]
    if finite.size == 0:
        return -1.0, 1.0
    low, high = np.percentile(finite, [0.2, 99.8])
    return min(float(low) - 0.2, -1.0), max(float(high) + 0.2, 1.0)


def plot_12lead(signal_mv: np.ndarray, fs: float, leads: list[str], title: str = "",
                attribution: np.ndarray | None = None,
                ax_grid: Sequence[Axes] | None = None) -> Figure:
    """Draw ``signal_mv`` ([leads, T] in mV at ``fs`` Hz) as a 12-lead ECG and return the figure.

    ``attribution`` ([leads, T], values in [0, 1]) shades each trace where it is high.
    ``ax_grid`` (one Axes per lead) draws into existing axes instead of a new 6 x 2 figure.
    """
    signal_mv = np.asarray(signal_mv, dtype=float)
    _check(signal_mv, leads, attribution)
    order = _panel_order(leads)
    if ax_grid is None:
        rows = int(np.ceil(len(order) / 2))
        fig, grid = plt.subplots(rows, 2, figsize=(16, 1.6 * rows + 0.6), sharex=True,
                                 sharey=True, squeeze=False)
        axes = list(grid.T.ravel())  # column-major: left column first
    else:
        axes = list(ax_grid)
        fig = axes[0].figure
    if len(axes) < len(order):
        raise ValueError(f"ax_grid has {len(axes)} axes; expected at least {len(order)}")
    duration = signal_mv.shape[1] / fs
    time = np.arange(signal_mv.shape[1]) / fs
    low, high = _limits(signal_mv)
    for ax, row in zip(axes, order, strict=False):
        _grid(ax, duration, low, high)
        if attribution is not None:
            shade = np.clip(attribution[row], 0.0, 1.0)[None, :]
            ax.imshow(shade, cmap=SHADE_CMAP, vmin=0.0, vmax=1.0, aspect="auto",
                      extent=(0.0, duration, low, high), interpolation="nearest", zorder=1)
        ax.plot(time, signal_mv[row], color="black", lw=0.7, zorder=2)
        ax.text(0.005, 0.92, leads[row], transform=ax.transAxes, fontsize=10,
                fontweight="bold", va="top", zorder=3)
        ax.set_xlim(0.0, duration)
        ax.set_ylim(low, high)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_gid(f"lead:{leads[row]}")
    if title:
        fig.suptitle(title, fontsize=12)
    if ax_grid is None:
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.94 if title else 0.99,
                            wspace=0.02, hspace=0.04)
    return fig
