"""``fedecg predict`` and ``fedecg explain``: score or explain one WFDB record, ECG alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast, get_args

import typer

from fedecg.cli.common import console, friendly_errors
from fedecg.errors import ConfigError, OutputExistsError

if TYPE_CHECKING:
    from fedecg.explain.attribution import Method
    from fedecg.models import EcgClassifier, ModelCard

MODEL_HELP = "Model folder written by `fedecg train` (RUN/model: model.pt + model_card.json)."
WFDB_HELP = "WFDB record path, with or without extension (.hea/.dat or .hea/.mat)."


@friendly_errors
def predict(
    model: Path = typer.Option(..., "--model", help=MODEL_HELP),
    wfdb: Path = typer.Option(..., "--wfdb", help=WFDB_HELP),
) -> None:
    """Print JSON with diagnosis and lab-abnormality probabilities of one ECG.

    Outputs the model never learned (per its card) are listed under ``not_learned`` with the
    reason instead of a probability; ``diagnosis_flags`` marks diagnoses shown although their
    validation AUROC is below the card's ``min_auroc`` or unknown.
    """
    from fedecg.explain.inference import predict_signal, read_for_model, results_of

    classifier, card = _load(model)
    _, signal, problem = read_for_model(wfdb, card)
    prediction = predict_signal(classifier, card, signal)
    shown = results_of(card, prediction)
    payload = {"model": card.model_name, "record": str(wfdb), "fs": card.fs,
               "n_samples": int(signal.shape[-1]), "n_crops": prediction.n_crops,
               "warnings": [] if problem is None else [problem],
               "diagnoses": _rounded(shown.diagnoses), "diagnosis_flags": shown.flags,
               "lab_abnormalities": _rounded(shown.lab_abnormalities),
               "not_learned": shown.not_learned}
    typer.echo(json.dumps(payload, indent=2))


def _load(model_dir: Path) -> tuple[EcgClassifier, ModelCard]:
    """The model and card of ``model_dir``, with the card's preprocessing checked up front."""
    from fedecg.explain.inference import card_sampling
    from fedecg.models.io import CARD_FILE, load_inference_model

    classifier, card = load_inference_model(model_dir)
    card_sampling(card, source=model_dir / CARD_FILE)
    return classifier, card


def _rounded(probabilities: dict[str, float]) -> dict[str, float]:
    return {label: round(p, 4) for label, p in probabilities.items()}


@friendly_errors
def explain(
    model: Path = typer.Option(..., "--model", help=MODEL_HELP),
    wfdb: Path = typer.Option(..., "--wfdb", help=WFDB_HELP),
    out: Path = typer.Option(..., "--out", help="Folder for explanation.json and .png."),
    top: int = typer.Option(3, "--top", min=1, help="How many top diagnoses to explain."),
    method: str = typer.Option("integrated_gradients", "--method",
                               help="Attribution method: integrated_gradients or saliency."),
    label: str | None = typer.Option(None, "--label",
                                     help="Diagnosis to explain (default: the most probable)."),
    window: float = typer.Option(0.0, "--window", min=0.0,
                                 help="Start (s) of the 10 s shown of a longer record."),
) -> None:
    """Write explanation.json and explanation.png for one ECG."""
    from fedecg.explain.explanation import explain_record, record_window, write_explanation
    from fedecg.explain.inference import read_for_model

    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out}: exists and is a file; expected a folder (new or "
                                "existing) for explanation.json and explanation.png")
    attribution = _method(method)
    classifier, card = _load(model)
    record, signal, _problem = read_for_model(wfdb, card)  # a problem is logged as a warning
    explanation = explain_record(classifier, card, signal, source=str(wfdb),
                                 top_diagnoses=top, method=attribution, label=label)
    trace = record_window(record, card, explanation.attribution_map, window)
    json_path, png_path = write_explanation(explanation, trace, out)
    for item in explanation.top:
        labs = ", ".join(s.label for s in item.supporting_labs) or "none"
        console.print(f"{item.label}: p={item.probability:.3f}; supported by {labs}",
                      highlight=False)
    console.print(f"wrote {json_path} and {png_path}", highlight=False)


def _method(name: str) -> Method:
    from fedecg.explain.attribution import Method

    choices = get_args(Method)
    if name not in choices:
        raise ConfigError(f"--method {name!r}: unknown attribution method; expected one of "
                          f"{', '.join(choices)}")
    return cast(Method, name)


def register(app: typer.Typer) -> None:
    """Add ``predict`` and ``explain`` to ``app``."""
    app.command("predict")(predict)
    app.command("explain")(explain)
