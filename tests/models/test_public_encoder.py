"""``train.encoder_from``: the transfer model's ECG encoder starts from a public model, and a
model that does not fit is one clear line (through ``fedecg train`` too)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from builders.inference_models import saved_model, tiny_card
from builders.site_store import make_store
from builders.tiny import TINY_ENCODER, TINY_TRAIN, tiny_overrides
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.train import TrainConfig
from fedecg.data.store import SiteStore
from fedecg.errors import PublicEncoderError
from fedecg.models import EcgClassifier, load_inference_model, save_inference_model
from fedecg.models.build import build_model
from fedecg.models.public_encoder import start_from_public_encoder

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("public") / "store", n_patients=20)


def _config(encoder_from: Path | str | None) -> TrainConfig:
    return TrainConfig.model_validate({**TINY_TRAIN, "encoder_from": encoder_from and
                                       str(encoder_from)})


def _run_folder(tmp_path: Path, seed: int = 7, **card: object) -> Path:
    """A run folder whose model/ holds a saved tiny model (as `fedecg train` writes it)."""
    saved_model(tmp_path / "public-run" / "model", seed=seed, **card)
    return tmp_path / "public-run"


@pytest.mark.parametrize("given", ["run folder", "model folder"])
def test_the_transfer_encoder_starts_from_the_public_models_and_nothing_else(store, tmp_path,
                                                                            given):
    run = _run_folder(tmp_path)
    public, _ = load_inference_model(run / "model")
    config = _config(run if given == "run folder" else run / "model")
    manifest = SiteStore.open(store).manifest
    model = build_model("transfer", config, manifest)
    random_start = build_model("transfer", _config(None), manifest)
    start_from_public_encoder(model, "transfer", config, manifest)
    for key, value in public.encoder.state_dict().items():
        assert torch.equal(model.classifier.encoder.state_dict()[key], value), key
    assert not torch.equal(random_start.classifier.encoder.stem[0].weight,
                           model.classifier.encoder.stem[0].weight)
    for key, value in random_start.state_dict().items():  # heads, clinical side: random start
        if not key.startswith("classifier.encoder."):
            assert torch.equal(model.state_dict()[key], value), key
    other = build_model("signal-only", config, manifest)  # only transfer starts from it
    start_from_public_encoder(other, "signal-only", config, manifest)
    assert torch.equal(other.classifier.encoder.stem[0].weight,
                       build_model("signal-only", _config(None), manifest)
                       .classifier.encoder.stem[0].weight)


def _other_encoder(tmp_path: Path) -> Path:
    folder = tmp_path / "wide" / "model"
    card = tiny_card()
    model = EcgClassifier(len(card.lab_labels), len(card.diagnosis_labels),
                          {**TINY_ENCODER, "widths": [8, 32]})
    save_inference_model(folder, model, card)
    return folder.parent


def _not_a_model(tmp_path: Path) -> Path:
    folder = _run_folder(tmp_path)
    (folder / "model" / "model.pt").write_bytes(b"not a torch file")
    return folder


MISMATCHES = {
    "missing": (lambda tmp: tmp / "nowhere", ["no model.pt there", "nowhere/model",
                                               "train it first"]),
    "not a model": (_not_a_model, ["public-run/model/model.pt", "not a PyTorch file"]),
    "other encoder": (_other_encoder, ["wide/model/model.pt", "encoder.widths is [8, 32]",
                                       "train.encoder.widths is [8, 16]",
                                       "set train.encoder to the public model's"]),
    "other rate": (lambda tmp: _run_folder(tmp, fs=500.0),
                   ["sampling rate (Hz) is 500.0", "have 100.0"]),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_public_model_that_does_not_fit_is_one_line_naming_file_key_and_fix(store, tmp_path,
                                                                             case):
    make, expected = MISMATCHES[case]
    config = _config(make(tmp_path))
    manifest = SiteStore.open(store).manifest
    with pytest.raises(PublicEncoderError) as raised:
        start_from_public_encoder(build_model("transfer", config, manifest), "transfer",
                                  config, manifest)
    message = str(raised.value)
    assert message.startswith("train.encoder_from") and "\n" not in message
    for part in expected:
        assert part in message


def test_fedecg_train_refuses_a_mismatched_public_encoder_in_one_line_before_training(
        store, tmp_path):
    public = _other_encoder(tmp_path)
    sets = [item for o in tiny_overrides(f"encoder_from={public}", "models=[signal-only,transfer]")
            for item in ("--set", o)]
    result = runner.invoke(app, ["train", "--store", str(store), "--out", str(tmp_path / "run"),
                                 *sets])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"{public}/model/model.pt" in lines[0] and "encoder.widths is [8, 32]" in lines[0]
    assert not (tmp_path / "run").exists()  # refused before signal-only trained


def test_the_card_says_in_words_which_public_data_the_encoder_came_from():
    from fedecg.models.io import initialization_words

    words = initialization_words({
        "encoder_from": "runs/public", "sha256": "f7d11dd57eb4bb59aa", "public_model": "transfer",
        "public_data": {"stores": ["twin-seed1"], "records": 2757, "train_records": 2112},
        "stages_trained_after": ["lab", "diagnosis"]})
    assert words == ("ECG encoder from the public model runs/public (sha256 f7d11dd57eb4bb59…, "
                     "transfer trained on twin-seed1 (2,757 ECGs, 2,112 in its training split)); "
                     "then trained here in stages: lab, diagnosis.")
    assert initialization_words(None) == "ECG encoder from a random (seeded) start."
