"""Files a run folder can carry are read without unpickling code (``weights_only=True``).

A checkpoint or model whose pickle would call ``os.system`` is refused in one line naming the
file, and the payload never runs (it would have created a marker file). Random bytes in a
model file are one line too, never torch's advice to load it with ``weights_only=False``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from builders.inference_models import saved_model
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.base import load_config
from fedecg.config.federated import StudyConfig
from fedecg.errors import FedecgError
from fedecg.federated import checkpoint as federated
from fedecg.models.io import MODEL_FILE, load_inference_model
from fedecg.run_folder import RunFolder, prepare_study
from fedecg.training import checkpoint as training
from fedecg.training.checkpoint import Position

PTBXL = "wfdb-samples/ptb-xl/records100/00000/00001_lr"


class Payload:
    """Unpickling this runs ``touch MARKER``: what a crafted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _federated(path: Path) -> None:
    federated.load_checkpoint(path.parent)


def _training(path: Path) -> None:
    training.load_checkpoint(path)


def _model(path: Path) -> None:
    load_inference_model(path.parent)


@pytest.mark.parametrize(("name", "load"), [
    (federated.CHECKPOINT_FILE, _federated), ("signal-only.pt", _training),
    (MODEL_FILE, _model)])
def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, name, load):
    folder = saved_model(tmp_path / "model") if load is _model else tmp_path
    marker = tmp_path / "payload-ran"
    torch.save({"position": {"stage_index": 0}, "meta": "{}", "architecture": {},
                "evil": Payload(marker)}, folder / name)
    with pytest.raises(FedecgError) as refused:
        load(folder / name)
    message = str(refused.value)
    assert not marker.exists()
    assert "\n" not in message and str(folder / name) in message
    assert "run Python code (posix.system)" in message and "weights_only" not in message


def test_simulate_resume_refuses_a_crafted_checkpoint_and_nothing_runs(tmp_path):
    """The path `simulate --resume RUN` takes, up to the checkpoint, with a real study folder."""
    store = make_store(tmp_path / "store", n_patients=20)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}},
        "train": {**TINY_TRAIN, "models": ["transfer"]}}))
    run = tmp_path / "run"
    prepare_study(RunFolder(run), load_config(StudyConfig, study, []), resume=False)
    crafted = RunFolder(run).federated_run(0, "transfer").path / federated.CHECKPOINT_FILE
    crafted.parent.mkdir(parents=True)
    marker = tmp_path / "payload-ran"
    torch.save({"evil": Payload(marker)}, crafted)
    result = CliRunner().invoke(app, ["simulate", "--resume", str(run)])
    assert result.exit_code == 1 and not marker.exists()
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error:") and str(crafted) in lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1
    assert "weights_only" not in result.output and "Traceback" not in result.output


def test_predict_on_a_model_file_of_random_bytes_is_one_line(shared_data, tmp_path):
    model = saved_model(tmp_path / "model")
    (model / MODEL_FILE).write_bytes(np.random.default_rng(0).bytes(4096))
    result = CliRunner().invoke(app, ["predict", "--model", str(model),
                                      "--wfdb", str(shared_data / PTBXL)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(model / MODEL_FILE) in lines[0]
    assert "weights_only" not in result.output and "Traceback" not in result.output


def test_the_server_checkpoint_keeps_fedadam_moments_and_history_exactly(tmp_path):
    moments = {"m_t": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
               "v_t": {"w": np.full((2, 3), 0.5)}, "current_arrays": None}
    history = [{"round": 1, "site": "all", "dx_auroc": 0.75, "reason": None, "loss": [1, 2]}]
    saved = federated.Checkpoint(Position(1, 2), {"w": torch.ones(2, 3)}, "abc", 3, moments,
                                 history)
    federated.save_checkpoint(tmp_path, saved)
    loaded = federated.load_checkpoint(tmp_path, "abc")
    assert loaded.position == saved.position and loaded.history == history
    assert loaded.global_round == 3
    assert torch.equal(loaded.global_state["w"], saved.global_state["w"])
    assert loaded.strategy_state["current_arrays"] is None
    for name in ("m_t", "v_t"):
        kept = loaded.strategy_state[name]["w"]
        assert isinstance(kept, np.ndarray) and kept.dtype == moments[name]["w"].dtype
        assert np.array_equal(kept, moments[name]["w"])


def test_an_older_fedecgs_server_checkpoint_is_named_not_resumed(tmp_path):
    """The layout before the JSON part (plain data, so it loads weights-only) is refused."""
    torch.save({"position": {"stage_index": 0, "stage_round": 1, "global_round": 1,
                             "done": False}, "global_state": {"w": torch.ones(2)},
                "fingerprint": "abc", "strategy_state": {}, "history": []},
               tmp_path / federated.CHECKPOINT_FILE)
    with pytest.raises(FedecgError, match="an older fedecg's checkpoint cannot be resumed"):
        federated.load_checkpoint(tmp_path)
