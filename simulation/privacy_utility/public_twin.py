"""The public-pretraining arm's public encoder (``run.py --public-arm``).

``public_encoder_run`` synthesizes a twin of other patients than the sites' (another twin
seed; made once and cached like the study's), standing in for a public ECG + clinical set
such as MIMIC-IV-ECG with its clinical tables, and trains the study's transfer model (its
``train`` settings and encoder) on it centrally, without DP, through its pretraining stage only
(lab and diagnosis 0 epochs), into ``RUNS/public-encoder``. Pretraining takes
``configs/train-quickstart.yaml``'s centralized settings (``PUBLIC_PRETRAINING``: 20 epochs,
lr 0.001, feature dropout 0.3, batch 64): with no budget to spend, the public side trains as
it trains best on its own validation split. On the 1000-patient public twin (seed 1) they end
at validation InfoNCE 4.87, against 5.15 with the study's round plan as epochs (8 epochs, lr
0.003, batch 32; its best epoch the second), chance being log 256 = 5.55; about 1 minute.
The federated study then starts its transfer model from that encoder
(``train.encoder_from``) with no pretraining rounds: no private record is spent on it.

The twin is the optimistic case of a public set: the same generator, so the same distribution
as the sites; a real public set (other hospitals, devices and populations) transfers less.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedecg.config.base import apply_overrides, validate_config
from fedecg.config.federated import DataSourceConfig, StudyConfig
from fedecg.config.train import TrainConfig
from fedecg.errors import ConfigError
from fedecg.federated.datasource import ensure_store
from fedecg.io import OutputKind, claim_output, mark_output
from fedecg.run_folder import RunFolder
from fedecg.training.pipeline import train_models

ENCODER_RUN = "public-encoder"
PUBLIC_PRETRAINING = ["pretrain.epochs=20", "pretrain.lr=0.001", "pretrain.feature_dropout=0.3",
                      "batch_size=64"]  # configs/train-quickstart.yaml's (module docstring)


def public_data(config: StudyConfig, patients: int, seed: int) -> DataSourceConfig:
    """The public twin: the study twin's hospitals and rate, ``patients`` patients drawn
    with twin seed ``seed`` (refused when it is the sites' seed: the same patients)."""
    twin = config.data.synthesize
    if twin is None:
        raise ConfigError("--public-arm: the study config has no data.synthesize, so there is "
                          "no twin to draw other patients from; give data.synthesize")
    if seed == twin.seed:
        raise ConfigError(f"--public-seed {seed} is data.synthesize.seed, the sites' own "
                          "patients; choose another seed (e.g. 1)")
    return config.data.model_copy(update={"synthesize": twin.model_copy(
        update={"patients": patients, "seed": seed})})


def public_train_config(config: StudyConfig, overrides: list[str]) -> TrainConfig:
    """The study's ``train`` for the transfer model's pretraining alone, with
    ``PUBLIC_PRETRAINING``, then ``overrides`` (``--public-set``)."""
    data = apply_overrides(config.train.model_dump(mode="json"), [
        "models=[transfer]", "lab.epochs=0", "diagnosis.epochs=0", "encoder_from=null",
        *PUBLIC_PRETRAINING, *overrides])
    return validate_config(TrainConfig, data, f"the public encoder's train with {overrides}")


def public_encoder_run(config: StudyConfig, runs: Path, patients: int, seed: int,
                       overrides: list[str], say: Callable[[str], None]) -> Path:
    """``RUNS/public-encoder``: the transfer model pretrained on the public twin (module
    docstring); a finished run is reused, an unfinished one resumed. ``RUNS`` is claimed as
    the sweep folder it will be (``fedecg.app.run_sweep``)."""
    claim_output(Path(runs), OutputKind.SWEEP, existing_ok=True)
    Path(runs).mkdir(parents=True, exist_ok=True)
    mark_output(Path(runs), OutputKind.SWEEP)
    folder = RunFolder(Path(runs) / ENCODER_RUN)
    if folder.summary.is_file():
        say(f"public encoder: reusing {folder.path}")
        return folder.path.resolve()
    store = ensure_store(public_data(config, patients, seed), say)
    train = public_train_config(config, overrides)
    say(f"public encoder: {train.pretrain.epochs} pretraining epochs on {store} "
        f"(twin seed {seed}, {patients} patients), no DP, into {folder.path}")
    train_models([store], train, folder.path, on_epoch=lambda record: say(
        f"public encoder · {record['stage']} {record['epoch']}/{record['epochs']} · "
        f"val loss {record.get('val_loss', float('nan')):.3f}"))
    return folder.path.resolve()


def arm_overrides(encoder_run: Path) -> list[str]:
    """The study's ``--set`` overrides of the arm: the transfer model's encoder from
    ``encoder_run``, no pretraining rounds at the sites."""
    return [f"train.encoder_from={encoder_run}", "federation.rounds.pretrain=0"]
