"""Per-round checkpoints of a federated run, written atomically, and the sites' saved states.

The server writes ``checkpoint.pt`` after every round: the global model (every key), where the
run stands, the server optimizer's state and the metric history. In simulation each site also
saves its whole model (personal layers included) after each of its training rounds as
``sites/site<i>/round-<g>.pt``, so a resumed run restores the sites exactly as they were after
the last checkpointed round. A checkpoint remembers its plan's fingerprint and refuses to resume
a different plan.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedecg.errors import FederationError
from fedecg.io import atomic_write_bytes

CHECKPOINT_FILE = "checkpoint.pt"
SITES_DIR = "sites"
KEEP_SITE_ROUNDS = 2


@dataclass
class Position:
    """Where a federated run stands: rounds finished in the current stage, and overall."""

    stage_index: int = 0
    stage_round: int = 0
    global_round: int = 0
    done: bool = False


@dataclass
class Checkpoint:
    """Everything the server needs to continue a run after its last finished round."""

    position: Position
    global_state: dict[str, torch.Tensor]
    fingerprint: str
    strategy_state: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def fingerprint(plan_json: str) -> str:
    """A short hash of a run plan (its resolved config as canonical JSON)."""
    canonical = json.dumps(json.loads(plan_json), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _save(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(out: Path, checkpoint: Checkpoint) -> None:
    """Write ``out/checkpoint.pt`` atomically."""
    _save(Path(out) / CHECKPOINT_FILE, {
        "position": asdict(checkpoint.position), "global_state": checkpoint.global_state,
        "fingerprint": checkpoint.fingerprint, "strategy_state": checkpoint.strategy_state,
        "history": checkpoint.history})


def load_checkpoint(out: Path, expected_fingerprint: str | None = None) -> Checkpoint | None:
    """The checkpoint in ``out`` (None if there is none); refuses one made by another plan."""
    path = Path(out) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
        checkpoint = Checkpoint(position=Position(**payload.pop("position")), **payload)
    except Exception as exc:  # an unreadable file cannot be resumed from, whatever the cause
        raise FederationError(f"{path}: checkpoint is unreadable ({exc}); delete it to "
                              "restart the run") from None
    if expected_fingerprint is not None and checkpoint.fingerprint != expected_fingerprint:
        raise FederationError(
            f"{path}: made by a run with another config (fingerprint {checkpoint.fingerprint}, "
            f"this run {expected_fingerprint}); resume with the run's own config.yaml or "
            "start a new run folder")
    return checkpoint


def site_state_path(out: Path, site_index: int, global_round: int) -> Path:
    """Where site ``site_index`` saves its model after global round ``global_round``."""
    return Path(out) / SITES_DIR / f"site{site_index}" / f"round-{global_round}.pt"


def save_site_state(out: Path, site_index: int, global_round: int,
                    state: dict[str, torch.Tensor]) -> None:
    """Save a site's whole model after a round; drop its saves older than two rounds."""
    path = site_state_path(out, site_index, global_round)
    _save(path, {"global_round": global_round, "state": state})
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
    return torch.load(saves[-1], map_location="cpu", weights_only=True)["state"]


def _round_of(path: Path) -> int:
    return int(path.stem.split("-")[1])
