"""An explanation of one ECG: top diagnoses, the lab abnormalities supporting each, attributions.

``explain_record`` computes it; ``write_explanation`` writes ``explanation.json`` and
``explanation.png`` (the 12-lead ECG shaded by the attribution of the top diagnosis, beside the
lead shares and the supporting lab abnormalities of each top diagnosis). The picture shows the
record as recorded (``record_window``): at its own sampling rate, so pacing spikes stay
visible, a 10 s window of a longer record, time in seconds and amplitude in mV.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fedecg.data.waveform import EcgRecord, interpolate_nan
from fedecg.errors import ConfigError
from fedecg.explain.attribution import Method, attribute_diagnosis
from fedecg.explain.inference import lead_rows, predict_signal, results_of
from fedecg.explain.support import SUPPORT_RULE, LabSupport, head_cosines, supporting_labs
from fedecg.io import atomic_write_bytes, atomic_write_json
from fedecg.models.classifier import EcgClassifier
from fedecg.models.io import ModelCard
from fedecg.report.ecg_plot import plot_12lead

JSON_FILE = "explanation.json"
PNG_FILE = "explanation.png"
_DPI = 110
_MIN_BAR_SLOTS = 4


@dataclass(frozen=True)
class DiagnosisExplanation:
    """One top diagnosis: its probability, supporting labs, and per-lead attribution shares."""

    label: str
    probability: float
    supporting_labs: list[LabSupport]
    lead_shares: dict[str, float]


@dataclass(frozen=True)
class Explanation:
    """Everything ``explain`` reports about one record (``attribution_map`` is not in the JSON)."""

    model_name: str
    source: str
    fs: float
    leads: list[str]
    n_crops: int
    attribution_method: str
    support_rule: str
    diagnoses: dict[str, float]
    lab_abnormalities: dict[str, float]
    top: list[DiagnosisExplanation]
    attribution_map: np.ndarray = field(repr=False)  # [12, T] in [0, 1], of top[0]
    diagnosis_flags: dict[str, str] = field(default_factory=dict)
    not_learned: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: every field but ``attribution_map``; probabilities sorted."""
        payload = asdict(self)
        del payload["attribution_map"]
        for key in ("diagnoses", "lab_abnormalities"):
            payload[key] = dict(sorted(payload[key].items(), key=lambda kv: -kv[1]))
        return payload


def explain_record(model: EcgClassifier, card: ModelCard, signal: np.ndarray, source: str = "",
                   top_diagnoses: int = 3, method: Method = "integrated_gradients",
                   min_probability: float = 0.5, min_cosine: float = 0.1,
                   top_labs: int = 5, label: str | None = None) -> Explanation:
    """Explain a prepared ``[12, T]`` signal (``inference.prepare_record``) for ``model``.

    The ``top_diagnoses`` most probable diagnoses (``label`` first when given) are explained
    each by its supporting lab abnormalities (``support.supporting_labs``) and the lead shares
    of its attribution. Outputs the card marks as never learned are left out: no such
    diagnosis is explained, no such lab supports anything.
    """
    prediction = predict_signal(model, card, signal)
    shown = results_of(card, prediction)
    cosines = head_cosines(model)  # [n_dx, n_lab]
    ranked = _ranked(card, shown.diagnoses, top_diagnoses, label, shown.not_learned)
    attributions = [attribute_diagnosis(model, card, signal, i, method=method) for i in ranked]
    top = [DiagnosisExplanation(
        label=card.diagnosis_labels[i], probability=prediction.diagnoses[card.diagnosis_labels[i]],
        supporting_labs=supporting_labs(cosines[i], prediction.lab_abnormalities,
                                        min_probability, min_cosine, top_labs,
                                        exclude=shown.not_learned["lab"]),
        lead_shares=attribution.lead_shares) for i, attribution in zip(ranked, attributions,
                                                                       strict=True)]
    rule = SUPPORT_RULE.format(min_probability=min_probability, min_cosine=min_cosine,
                               top_k=top_labs)
    return Explanation(model_name=card.model_name, source=source, fs=card.fs,
                       leads=list(card.lead_order), n_crops=prediction.n_crops,
                       attribution_method=method, support_rule=rule,
                       diagnoses=shown.diagnoses, lab_abnormalities=shown.lab_abnormalities,
                       top=top, attribution_map=attributions[0].map if attributions
                       else np.zeros_like(signal), diagnosis_flags=shown.flags,
                       not_learned=shown.not_learned)


def _ranked(card: ModelCard, diagnoses: dict[str, float], count: int, label: str | None,
            not_learned: dict[str, dict[str, str]]) -> list[int]:
    """Indices (in ``card.diagnosis_labels``) of the diagnoses to explain: ``label`` first,
    then the most probable shown ones."""
    order = sorted(diagnoses, key=lambda name: -diagnoses[name])
    if label is not None:
        if label in not_learned["diagnosis"]:
            raise ConfigError(f"--label {label!r}: {not_learned['diagnosis'][label]}; choose a "
                              f"diagnosis the model learned, e.g. {order[:3]}")
        if label not in diagnoses:
            raise ConfigError(f"--label {label!r}: not a diagnosis of model "
                              f"{card.model_name!r}; expected one of {card.diagnosis_labels}")
        order = [label, *[name for name in order if name != label]]
    return [card.diagnosis_labels.index(name) for name in order[:count]]


@dataclass(frozen=True)
class Trace:
    """What the picture draws: ``signal`` ``[12, n]`` mV at ``fs`` (the card's lead order) and
    its ``attribution`` ``[12, n]`` in [0, 1], starting ``start_s`` into a ``total_s`` record."""

    signal: np.ndarray
    attribution: np.ndarray
    fs: float
    start_s: float = 0.0
    total_s: float = 0.0


def record_window(record: EcgRecord, card: ModelCard, attribution_map: np.ndarray,
                  start_s: float = 0.0, seconds: float = 10.0) -> Trace:
    """The ``seconds`` of ``record`` from ``start_s``, at its own rate, with the attribution
    (computed at the card's rate) interpolated onto its samples."""
    total = record.signal.shape[-1] / record.fs
    if not 0 <= start_s < total:
        raise ConfigError(f"--window {start_s:g}: the record {record.path} lasts {total:g} s; "
                          f"expected a start from 0 to {max(total - seconds, 0):g} s")
    first = round(start_s * record.fs)
    last = min(record.signal.shape[-1], first + round(seconds * record.fs))
    signal = interpolate_nan(record.signal)[lead_rows(card), first:last]
    times = np.arange(first, last) / record.fs
    model_times = np.arange(attribution_map.shape[-1]) / card.fs
    attribution = np.stack([np.interp(times, model_times, row) for row in attribution_map])
    return Trace(signal=signal, attribution=attribution, fs=record.fs, start_s=first / record.fs,
                 total_s=total)


def write_explanation(explanation: Explanation, trace: Trace | np.ndarray, out_dir: Path,
                      ) -> tuple[Path, Path]:
    """Write ``explanation.json`` and ``explanation.png`` into ``out_dir``; return their paths.

    ``trace`` is what to draw (``record_window``), or the model's input signal at the card's
    rate (then drawn as it is, with ``attribution_map``).
    """
    out_dir = Path(out_dir)
    json_path, png_path = out_dir / JSON_FILE, out_dir / PNG_FILE
    atomic_write_json(json_path, explanation.to_json())
    if not isinstance(trace, Trace):
        trace = Trace(signal=trace, attribution=explanation.attribution_map, fs=explanation.fs,
                      total_s=trace.shape[-1] / explanation.fs)
    figure = explanation_figure(explanation, trace)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    atomic_write_bytes(png_path, buffer.getvalue())
    return json_path, png_path


def explanation_figure(explanation: Explanation, trace: Trace) -> Figure:
    """The 12-lead plot shaded by attribution (left) beside lead shares and lab support bars."""
    figure = Figure(figsize=(21, 10.5), layout="constrained")
    left, right = figure.add_gridspec(1, 2, width_ratios=(3.3, 1), wspace=0.03)
    leads = left.subgridspec(6, 2, wspace=0.01, hspace=0.02)
    ecg_axes = [figure.add_subplot(leads[row, col]) for col in range(2) for row in range(6)]
    first = explanation.top[0] if explanation.top else None
    shading = np.sqrt(trace.attribution)  # lifts moderate attributions into view
    plot_12lead(trace.signal, trace.fs, explanation.leads, attribution=shading,
                ax_grid=ecg_axes)
    _axes_in_units(ecg_axes, trace)
    figure.suptitle(_title(explanation, trace), fontsize=13)
    if first is None:
        return figure
    side = right.subgridspec(1 + len(explanation.top), 1,
                             height_ratios=(1.6, *[1] * len(explanation.top)), hspace=0.08)
    _draw_lead_shares(figure.add_subplot(side[0]), first)
    for row, item in enumerate(explanation.top, start=1):
        _draw_support(figure.add_subplot(side[row]), item, bool(explanation.lab_abnormalities))
    return figure


def _axes_in_units(axes: list[Axes], trace: Trace) -> None:
    """Seconds (from the record's start) under the bottom panels, mV beside the left ones."""
    duration = trace.signal.shape[-1] / trace.fs
    ticks = np.arange(0.0, duration + 1e-9, 1.0)
    low, high = axes[0].get_ylim()
    volts = np.arange(np.ceil(low * 2) / 2, high + 1e-9, 0.5)
    for index, ax in enumerate(axes):
        if index in (5, 11):
            ax.set_xticks(ticks, [f"{trace.start_s + t:g}" for t in ticks], fontsize=7)
            ax.set_xlabel("time (s)", fontsize=8)
        if index < 6:
            ax.set_yticks(volts, [f"{v:g}" for v in volts], fontsize=6)
    axes[2].set_ylabel("mV (grid: 0.2 s x 0.5 mV)", fontsize=8)


def _title(explanation: Explanation, trace: Trace) -> str:
    source = explanation.source or "ECG"
    shown = (f"{trace.start_s:g}-{trace.start_s + trace.signal.shape[-1] / trace.fs:g} s of "
             f"{trace.total_s:g} s at {trace.fs:g} Hz")
    if not explanation.top:
        return f"{source} ({shown})"
    first = explanation.top[0]
    flag = explanation.diagnosis_flags.get(first.label)
    return (f"{source}, {shown} ({explanation.model_name} model) — orange shading: √ of the "
            f"{explanation.attribution_method.replace('_', ' ')} attribution of "
            f"{first.label} (p = {first.probability:.2f}" + (f", {flag}" if flag else "") + ")")


def _draw_lead_shares(ax: Axes, item: DiagnosisExplanation) -> None:
    leads, shares = list(item.lead_shares), list(item.lead_shares.values())
    ax.barh(range(len(leads)), shares, color="#d62728", alpha=0.7)
    ax.set_yticks(range(len(leads)), leads, fontsize=8)
    ax.invert_yaxis()
    ax.set_title(f"lead shares of the attribution\n({item.label})", fontsize=9)
    ax.set_xlabel("share", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def _draw_support(ax: Axes, item: DiagnosisExplanation, labs_learned: bool) -> None:
    ax.set_title(f"{item.label} (p={item.probability:.2f}):\nsupporting lab abnormalities",
                 fontsize=9)
    ax.tick_params(labelsize=7)
    if not item.supporting_labs:
        text = ("none predicted abnormal\nand aligned with this diagnosis" if labs_learned else
                "the model learned no lab output\n(see not_learned in explanation.json)")
        ax.text(0.5, 0.5, text,
                ha="center", va="center", fontsize=8, color="#555", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    labs = item.supporting_labs
    ax.barh(range(len(labs)), [s.score for s in labs], height=0.6, color="#1f77b4")
    ax.set_yticks(range(len(labs)), [s.label for s in labs], fontsize=8)
    ax.set_ylim(max(len(labs), _MIN_BAR_SLOTS) - 0.5, -0.5)  # same bar height in every panel
    for position, support in enumerate(labs):
        ax.text(support.score, position, f" p={support.probability:.2f} cos={support.cosine:.2f}",
                va="center", fontsize=7)
    ax.set_xlim(0, 1.6 * max(s.score for s in labs))
    ax.set_xlabel("support = cos(w_dx, w_lab) × p(lab abnormal)", fontsize=8)
