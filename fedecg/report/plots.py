"""General plots and tables for run reports: curves, grouped bars, metric tables with CIs.

Written for any grouping, so the same functions draw training curves per model and stage,
per-round federated curves, per-site bars, a federated/pooled/local table, or AUROC against ε.
Every function returns a matplotlib ``Figure`` (never shows it) made with the Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Record = Mapping[str, Any]
Interval = Sequence[float]
Colors = Mapping[str, str] | None

_MANY_LABELS = 10


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _group_key(record: Record, group: str | Sequence[str]) -> str:
    keys = [group] if isinstance(group, str) else list(group)
    return " / ".join(str(record.get(key, "?")) for key in keys)


def draw_curves(ax: Axes, records: Iterable[Record], x: str, y: str,
                group: str | Sequence[str] = (), band: tuple[str, str] | None = None,
                colors: Colors = None, linestyle: str = "-", labeled: bool = True) -> int:
    """Draw ``y`` against ``x`` on ``ax``, one line per value of ``group``; return lines drawn.

    Records lacking a finite ``x`` or ``y`` are skipped. ``band`` names two fields (lower,
    upper) drawn as a shaded interval, e.g. a confidence interval of AUROC against ε.
    ``colors`` fixes a colour per group name, so a model looks the same in every figure;
    ``labeled=False`` keeps the lines out of the legend (for a second metric in the same axes).
    """
    series: dict[str, list[Record]] = {}
    for record in records:
        if _finite(record.get(x)) and _finite(record.get(y)):
            series.setdefault(_group_key(record, group), []).append(record)
    for name, points in series.items():
        points = sorted(points, key=lambda r: r[x])
        xs = [r[x] for r in points]
        line = ax.plot(xs, [r[y] for r in points], marker="o" if len(xs) < 30 else None,
                       markersize=3, label=(name or y) if labeled else "_nolegend_",
                       color=(colors or {}).get(name), linestyle=linestyle)[0]
        if band is not None:
            lows = [r.get(band[0]) for r in points]
            highs = [r.get(band[1]) for r in points]
            if all(_finite(v) for v in lows + highs):
                ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2)
    return len(series)


def plot_curves(records: Iterable[Record], x: str, y: str, group: str | Sequence[str] = (),
                band: tuple[str, str] | None = None, title: str = "",
                xlabel: str | None = None, ylabel: str | None = None,
                log_x: bool = False, colors: Colors = None) -> Figure:
    """One axes of ``y`` against ``x`` per ``group`` (see ``draw_curves``)."""
    figure = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = figure.add_subplot()
    if draw_curves(ax, list(records), x, y, group, band, colors):
        ax.legend(fontsize=8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return figure


_LINESTYLES = (("-", "solid"), ("--", "dashed"), (":", "dotted"))


def figure_legend(figure: Figure, axes: Iterable[Axes], title: str | None = None) -> None:
    """One legend under the figure for the lines of every visible axes (none covers data)."""
    handles: dict[str, Any] = {}
    for ax in axes:
        if not ax.get_visible():
            continue
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="outside lower center",
                      ncol=min(len(handles), 8), fontsize=8, title=title, title_fontsize=8)


def plot_curve_grid(records: Sequence[Record], x: str, rows: Sequence[Sequence[str]],
                    panel: str, group: str | Sequence[str], panels: Sequence[str] | None = None,
                    colors: Colors = None) -> Figure:
    """A grid of curves: one row per entry of ``rows``, one column per value of ``panel``.

    Each row lists up to three metrics drawn in the same axes (solid, dashed, dotted), e.g.
    ``[["train_loss", "val_loss"], ["val_diagnosis_macro_auroc"]]``; the legend names the
    groups. With ``panel='stage'`` and ``group='model'`` each stage keeps its own scale.
    ``panels`` fixes the column order (default: first seen). Cells with no data are hidden.
    """
    if panels is None:
        panels = list(dict.fromkeys(str(r.get(panel, "?")) for r in records))
    figure = Figure(figsize=(max(4.2 * len(panels), 6.0), 3.3 * len(rows)),
                    layout="constrained")
    axes = figure.subplots(len(rows), len(panels), squeeze=False)
    for row, metrics in enumerate(rows):
        styles = list(zip(metrics, _LINESTYLES, strict=False))
        for col, name in enumerate(panels):
            ax = axes[row][col]
            subset = [r for r in records if str(r.get(panel, "?")) == name]
            drawn = [draw_curves(ax, subset, x, metric, group, colors=colors, linestyle=style,
                                 labeled=index == 0)
                     for index, (metric, (style, _)) in enumerate(styles)]
            if not any(drawn):
                ax.set_visible(False)
                continue
            shown = [f"{_readable(m)} ({word})" if len(styles) > 1 else _readable(m)
                     for (m, (_, word)), n in zip(styles, drawn, strict=True) if n]
            ax.set_title("\n".join([name, *shown]), fontsize=9)
            ax.set_xlabel(x, fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    figure_legend(figure, axes.ravel())
    return figure


def _readable(key: str) -> str:
    """``val_diagnosis_macro_auroc`` → ``val diagnosis macro AUROC``."""
    words = key.replace("_", " ").split()
    return " ".join(w.upper() if w in ("auroc", "auprc") else w for w in words)


def plot_round_panels(records: Sequence[Record], panels: Sequence[tuple[str, str]],
                      group: str = "site", x: str = "round", columns: int = 3,
                      boundaries: Sequence[tuple[float, str]] = (), marks: Sequence[float] = (),
                      emphasis: str | None = None, reference: float | None = None,
                      log_metrics: Collection[str] = (), colors: Colors = None) -> Figure:
    """Curves against rounds: one axes per ``(title, metric)`` of ``panels``, a line per ``group``.

    ``boundaries`` are ``(x, label)`` dashed vertical lines (where a stage starts); ``marks``
    the x of events, drawn as red dotted lines (a site that dropped out); ``emphasis`` the group
    drawn thick and black (the example-weighted ``all``); ``reference`` a dashed horizontal line
    (a target ε). Metrics in ``log_metrics`` get a log y axis. Panels without data are hidden.
    """
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(4.3 * columns, 3.2 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    palette = {**(colors or {}), **({emphasis: "black"} if emphasis else {})}
    for ax, (title, metric) in zip(axes, panels, strict=False):
        if not draw_curves(ax, records, x, metric, group, colors=palette):
            ax.set_visible(False)
            continue
        for line in ax.lines:
            if line.get_label() == emphasis:
                line.set_linewidth(2.2)
                line.set_zorder(3)
        for position, label in boundaries:
            ax.axvline(position, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(label, (position, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(2, -2), textcoords="offset points", va="top", fontsize=7,
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8,
                              "pad": 0.5})
        for index, position in enumerate(marks):
            ax.axvline(position, color="red", linestyle=":", linewidth=1.2,
                       label="site event" if index == 0 else "_nolegend_")
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle="--", linewidth=0.8)
        if metric in log_metrics:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(x, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    figure_legend(figure, axes, title=group)
    return figure


def plot_grouped_bars(values: Mapping[str, Mapping[str, float]],
                      errors: Mapping[str, Mapping[str, Interval]] | None = None,
                      title: str = "", xlabel: str = "AUROC",
                      reference: float | None = 0.5, limits: tuple[float, float] | None = None,
                      colors: Colors = None, missing: str = "n/a") -> Figure:
    """Horizontal bars: one cluster per label, one bar per group (model, site, ...).

    ``values[group][label]`` is the bar length; ``errors[group][label]`` an optional
    ``[low, high]`` interval drawn as whiskers. Labels keep first-seen order. Every bar is
    labelled with its value, a missing or non-finite one with ``n/a`` (so a 0.0 bar and a
    missing one differ); a label no group has a value for gets the one note ``missing``.
    ``reference`` draws a dashed line (chance AUROC).
    """
    groups = list(values)
    labels = list(dict.fromkeys(label for g in groups for label in values[g]))
    height = max(2.4, 0.24 * len(labels) * max(len(groups), 1) ** 0.6 + 1.4)
    figure = Figure(figsize=(8.0, height), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / max(len(groups), 1)
    positions = np.arange(len(labels))
    small = 7 if len(labels) * len(groups) > 2 * _MANY_LABELS else 8
    empty = {label for label in labels
             if not any(_finite(values[g].get(label)) for g in groups)}
    for index, group in enumerate(groups):
        offsets = positions - 0.4 + width * (index + 0.5)
        lengths = [_bar_value(values[group].get(label)) for label in labels]
        whiskers = _whiskers(lengths, labels, (errors or {}).get(group, {}))
        ax.barh(offsets, lengths, height=width * 0.95, label=group,
                xerr=whiskers, color=(colors or {}).get(group),
                error_kw={"elinewidth": 0.8, "capsize": 2})
        ends = [length + (whiskers[1][k] if whiskers is not None else 0.0)
                for k, length in enumerate(np.nan_to_num(lengths))]
        for end, y, length, label in zip(ends, offsets, lengths, labels, strict=True):
            if label not in empty:
                ax.annotate("n/a" if math.isnan(length) else f"{length:.2f}", (end, y),
                            xytext=(3, 0), textcoords="offset points", va="center",
                            fontsize=small, color="#333")
    for label in empty:  # one note for a label no group has a value for
        ax.annotate(missing, (0.0, labels.index(label)), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=small, color="#333")
    if reference is not None:
        ax.axvline(reference, color="grey", linestyle="--", linewidth=0.8)
    ax.set_yticks(positions, labels, fontsize=8 if len(labels) > _MANY_LABELS else 9)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first label on top, no empty margin
    ax.set_xlim(*(limits or _auto_limits(values, reference)))
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if len(groups) > 1:
        figure_legend(figure, [ax])
    return figure


def _bar_value(value: Any) -> float:
    return float(value) if _finite(value) else float("nan")


def _whiskers(lengths: list[float], labels: list[str],
              intervals: Mapping[str, Interval]) -> np.ndarray | None:
    """Asymmetric error bars [[below...], [above...]] from ``[low, high]`` intervals; None
    (no whiskers, no empty caps) when no label has one."""
    if not any(isinstance(v, Sequence) and len(v) == 2 and all(_finite(x) for x in v)
               for v in intervals.values()):
        return None
    below, above = [], []
    for length, label in zip(lengths, labels, strict=True):
        interval = intervals.get(label)
        if interval is not None and len(interval) == 2 and all(_finite(v) for v in interval):
            below.append(max(length - interval[0], 0.0))
            above.append(max(interval[1] - length, 0.0))
        else:
            below.append(0.0)
            above.append(0.0)
    return np.array([below, above])


def _auto_limits(values: Mapping[str, Mapping[str, float]],
                 reference: float | None) -> tuple[float, float]:
    finite = [float(v) for g in values.values() for v in g.values() if _finite(v)]
    if reference is not None:
        finite.append(reference)
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if low >= 0.0 and high <= 1.0:  # a probability-like metric: bars from 0, room for values
        return 0.0, 1.12
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad


def format_with_ci(value: Any, interval: Any, digits: int = 3) -> str:
    """``'0.795 [0.771, 0.818]'``; ``'—'`` for a missing value; the CI is left out if absent."""
    if not _finite(value):
        return "—"
    text = f"{value:.{digits}f}"
    if isinstance(interval, Sequence) and len(interval) == 2 and all(_finite(v) for v in interval):
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def metric_table(summary: Mapping[str, Mapping[str, Any]], rows: Sequence[str],
                 columns: Sequence[tuple[str, str]], row_header: str = "model",
                 ) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of a table of metrics with their 95% CIs.

    ``rows`` are keys of ``summary`` (models, sites, federated/pooled/local); each of
    ``columns`` is ``(metric_key, header)`` and the CI is read from ``metric_key + '_ci'``.
    """
    headers = [row_header] + [header for _, header in columns]
    body = []
    for name in rows:
        entry = summary.get(name, {})
        body.append([name] + [format_with_ci(entry.get(key), entry.get(f"{key}_ci"))
                              for key, _ in columns])
    return headers, body
