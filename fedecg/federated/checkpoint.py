"""Per-round checkpoints of a federated run, written atomically, and the sites' saved states.

The server writes ``checkpoint.pt`` after every round: the global model (every key), where the
run stands, the stage's best round so far (and its weights), the server optimizer's state and
the metric history. It holds tensors and one JSON
string (position, fingerprint, history) and is read with ``weights_only=True``, so a crafted
file cannot run code on ``--resume`` or in the deployed ServerApp. In simulation each site also
saves its whole model (personal layers included) after each of its training rounds as
``sites/site<i>/round-<g>.pt``, so a resumed run restores the sites exactly as they were after
the last checkpointed round. A checkpoint remembers its plan's fingerprint and refuses to resume
a different plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedecg.errors import FederationError
from fedecg.io import load_weights, save_weights
from fedecg.training.checkpoint import Position
from fedecg.training.selection import BestSoFar

CHECKPOINT_FILE = "checkpoint.pt"
SITES_DIR = "sites"
KEEP_SITE_ROUNDS = 2



@dataclass
class Checkpoint:
    """Everything the server needs to continue a run after its last finished round."""

    position: Position  # rounds finished in the current stage
    global_state: dict[str, torch.Tensor]
    fingerprint: str
    global_round: int = 0  # rounds finished in all stages (the number of the last one)
    strategy_state: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestSoFar = field(default_factory=BestSoFar)  # the current stage's best round


def fingerprint(plan_json: str) -> str:
    """A short hash of a run plan (its resolved config as canonical JSON)."""
    canonical = json.dumps(json.loads(plan_json), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def save_checkpoint(out: Path, checkpoint: Checkpoint) -> None:
    """Write ``out/checkpoint.pt`` atomically: tensors, and the rest as one JSON string."""
    meta = {"position": asdict(checkpoint.position), "global_round": checkpoint.global_round,
            "fingerprint": checkpoint.fingerprint,
            "history": checkpoint.history, "best": checkpoint.best.meta()}
    save_weights(Path(out) / CHECKPOINT_FILE, {
        "global_state": checkpoint.global_state, "best_state": checkpoint.best.state,
        "strategy_state": {name: _tensors(value)
                           for name, value in checkpoint.strategy_state.items()},
        "meta": json.dumps(meta)})


def load_checkpoint(out: Path, expected_fingerprint: str | None = None) -> Checkpoint | None:
    """The checkpoint in ``out`` (None if there is none); refuses one made by another plan."""
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    checkpoint = _read(path)
    if expected_fingerprint is not None and checkpoint.fingerprint != expected_fingerprint:
        raise FederationError(
            f"{path}: made by a run with another config (fingerprint {checkpoint.fingerprint}, "
            f"this run {expected_fingerprint}); resume with the run's own config.yaml or "
            "start a new run folder")
    return checkpoint


def _read(path: Path) -> Checkpoint:
    try:
        payload = load_weights(path)
    except ValueError as exc:
        raise FederationError(f"{path}: cannot resume from this checkpoint: {exc}; delete it "
                              "to restart the run") from None
    try:
        meta = json.loads(payload["meta"])
        return Checkpoint(
            position=Position(**meta["position"]), global_round=meta["global_round"],
            global_state=payload["global_state"],
            fingerprint=meta["fingerprint"], history=meta["history"],
            best=BestSoFar.restore(meta.get("best"), payload.get("best_state")),
            strategy_state={name: _arrays(value)
                            for name, value in payload["strategy_state"].items()})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FederationError(
            f"{path}: not a checkpoint this fedecg wrote ({type(exc).__name__}: "
            f"{_first_line(str(exc))}; an older fedecg's checkpoint cannot be resumed); "
            "delete it to restart the run") from None


def _tensors(arrays: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
    """The server optimizer's arrays (numpy) as tensors, which a weights-only file holds."""
    if arrays is None:
        return None
    return {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}


def _arrays(tensors: dict[str, torch.Tensor] | None) -> dict[str, np.ndarray] | None:
    if tensors is None:
        return None
    return {key: value.numpy() for key, value in tensors.items()}


def _first_line(text: str) -> str:
    return " ".join(text.split())[:200]


def site_state_path(out: Path, site_index: int, global_round: int) -> Path:
    """Where site ``site_index`` saves its model after global round ``global_round``."""
    return Path(out) / SITES_DIR / f"site{site_index}" / f"round-{global_round}.pt"


def save_site_state(out: Path, site_index: int, global_round: int,
                    state: dict[str, torch.Tensor]) -> None:
    """Save a site's whole model after a round; drop its saves older than two rounds."""
    path = site_state_path(out, site_index, global_round)
    save_weights(path, {"global_round": global_round, "state": state})
    for old in path.parent.glob("round-*.pt"):
        if _round_of(old) <= global_round - KEEP_SITE_ROUNDS:
            old.unlink(missing_ok=True)


def latest_site_state(out: Path, site_index: int,
                      up_to: int | None = None) -> dict[str, torch.Tensor] | None:
    """A site's most recent saved model (at or before round ``up_to``), or None."""
    folder = Path(out) / SITES_DIR / f"site{site_index}"
    saves = sorted((p for p in folder.glob("round-*.pt")
                    if up_to is None or _round_of(p) <= up_to), key=_round_of)
    if not saves:
        return None
    try:
        return load_weights(saves[-1])["state"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FederationError(f"{saves[-1]}: not a site state this fedecg can resume from "
                              f"({exc}); delete it to retrain the site") from None


def _round_of(path: Path) -> int:
    return int(path.stem.split("-")[1])
