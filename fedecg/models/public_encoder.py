"""The transfer model's ECG encoder started from a public model (``train.encoder_from``).

A model that ``fedecg train`` wrote on public data (its run folder ``RUN`` or ``RUN/model``)
gives the transfer model its ECG encoder before stage 1, so pretraining on private records may
be left out (0 epochs or rounds). Only the encoder is carried: the public model's heads were
fit to the public set's labels and the sites' lab and diagnosis stages fit their own, and its
clinical encoder and projections are not exported (nor used at inference). The file is read
with ``weights_only=True`` (``load_inference_model``); a file that is missing, not a fedecg
model, or built with other encoder settings, rate or leads is one ``PublicEncoderError`` line.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from pathlib import Path
from typing import Any

from fedecg.config.train import TrainConfig
from fedecg.data.store import StoreManifest
from fedecg.errors import FedecgError, PublicEncoderError
from fedecg.models.encoders import EcgEncoder
from fedecg.models.io import MODEL_FILE, ModelCard, load_inference_model
from fedecg.models.joint import JointModel

log = logging.getLogger(__name__)

FIELD = "train.encoder_from"
STARTS_FROM_PUBLIC = "transfer"  # the one model whose encoder starts from the public one


def public_model_folder(path: str | Path) -> Path:
    """The model folder ``path`` names: ``path`` itself, or ``path/model`` of a run folder."""
    path = Path(path)
    for folder in (path, path / "model"):
        if (folder / MODEL_FILE).is_file():
            return folder
    raise PublicEncoderError(
        f"{FIELD} {path}: no {MODEL_FILE} there nor in {path / 'model'}; expected the run "
        "folder of `fedecg train` on the public store (or its model/ folder); train it first, "
        f"or fix the path")


def encoder_settings(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Every ``EcgEncoder`` argument as ``kwargs`` build it (defaults filled, lists not
    tuples), so settings left out and settings given as the default compare equal."""
    bound = inspect.signature(EcgEncoder).bind(**kwargs)
    bound.apply_defaults()
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in bound.arguments.items()}


def public_encoder(config: TrainConfig, manifest: StoreManifest) -> tuple[dict[str, Any],
                                                                        ModelCard]:
    """The encoder state dict of ``config.encoder_from`` and its model card, checked against
    ``config.encoder`` and ``manifest``'s sampling rate and leads."""
    folder = public_model_folder(str(config.encoder_from))
    try:
        classifier, card = load_inference_model(folder)
    except FedecgError as exc:
        raise PublicEncoderError(f"{FIELD}: {exc}") from None
    where = folder / MODEL_FILE
    expected = encoder_settings(config.encoder.model_dump())
    found = encoder_settings(classifier.architecture["encoder"])
    for key in expected:
        if expected[key] != found[key]:
            shown = {name: found[name] for name in config.encoder.model_dump()}
            raise PublicEncoderError(
                f"{FIELD} {where}: its encoder.{key} is {found[key]}, this run's "
                f"train.encoder.{key} is {expected[key]}; set train.encoder to the public "
                f"model's ({shown}) or train the public model with this run's train.encoder")
    for name, ours, theirs in (("sampling rate (Hz)", manifest.fs, card.fs),
                               ("lead order", manifest.lead_order, card.lead_order)):
        if ours != theirs:
            raise PublicEncoderError(
                f"{FIELD} {where}: its {name} is {theirs}, the stores of this run have {ours}; "
                "prepare the public store with the sites' settings and train it again")
    return classifier.encoder.state_dict(), card


def check_public_encoder(config: TrainConfig, manifest: StoreManifest) -> None:
    """Before any training: refuse an ``encoder_from`` that does not fit (``public_encoder``),
    and warn when none of ``config.models`` starts from it."""
    if config.encoder_from is None:
        return
    if STARTS_FROM_PUBLIC not in config.models:
        log.warning("%s %s is ignored: only the %s model starts from it and train.models is %s",
                    FIELD, config.encoder_from, STARTS_FROM_PUBLIC, config.models)
        return
    public_encoder(config, manifest)


def start_from_public_encoder(model: JointModel, name: str, config: TrainConfig,
                              manifest: StoreManifest) -> None:
    """Load the public encoder into ``model`` (model ``name``) when ``config.encoder_from`` is
    set and ``name`` is the transfer model; other models keep their random start. The
    encoder settings being equal (``public_encoder``), every key and shape fits."""
    if config.encoder_from is None or name != STARTS_FROM_PUBLIC:
        return
    state, _ = public_encoder(config, manifest)
    model.classifier.encoder.load_state_dict(state)


def public_encoder_record(config: TrainConfig, manifest: StoreManifest) -> dict[str, Any]:
    """What a model card says of the public encoder: path, the file's SHA-256, and what the
    public model was trained on (its card's model name, data summary and creation time)."""
    _, card = public_encoder(config, manifest)
    path = public_model_folder(str(config.encoder_from)) / MODEL_FILE
    return {"encoder_from": str(config.encoder_from),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "public_model": card.model_name, "public_data": card.data_summary,
            "public_created_at": card.created_at}
