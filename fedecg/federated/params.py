"""The one place that converts torch state dicts to and from Flower ``ArrayRecord``s.

Keys travel without wrapper prefixes: Opacus's ``GradSampleModule`` (and ``torch.compile``)
prefix every key with ``_module.``/``_orig_mod.``; they are stripped on the way out and mapped
back onto whatever the receiving model calls them. Every load checks that the received keys are
exactly the expected ones and that shapes agree, and names the site and keys when not.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from torch import nn

from fedecg.errors import FederationError

WRAPPER_PREFIXES = ("_module.", "_orig_mod.")


def strip_prefix(key: str) -> str:
    """``_module.classifier.x`` → ``classifier.x`` (any nesting of wrapper prefixes)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with wrapper prefixes stripped."""
    return {strip_prefix(key): value for key, value in model.state_dict().items()}


def to_arrays(state: Mapping[str, torch.Tensor] | nn.Module,
              keys: Iterable[str] | None = None) -> ArrayRecord:
    """An ``ArrayRecord`` of ``keys`` (all when ``None``) of a state dict or model."""
    plain = plain_state(state) if isinstance(state, nn.Module) else {
        strip_prefix(k): v for k, v in state.items()}
    wanted = list(plain) if keys is None else [strip_prefix(k) for k in keys]
    missing = [key for key in wanted if key not in plain]
    if missing:
        raise FederationError(f"cannot send keys {_few(missing)}: the model has no such "
                              f"parameters (it has {_few(list(plain))})")
    record = ArrayRecord()
    for key in wanted:
        record[key] = Array(plain[key].detach().cpu().numpy().copy())  # copy keeps 0-d shapes
    return record


def to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """A plain state dict (writable tensors) from an ``ArrayRecord``."""
    return {key: torch.from_numpy(np.array(array.numpy(), copy=True))
            for key, array in record.items()}


def check_keys(received: Collection[str], expected: Collection[str], where: str) -> None:
    """Raise ``FederationError`` naming missing and unexpected keys when the sets differ."""
    received, expected = set(received), set(expected)
    if received == expected:
        return
    missing, extra = sorted(expected - received), sorted(received - expected)
    raise FederationError(
        f"{where}: parameter keys do not match: missing {_few(missing)}, unexpected "
        f"{_few(extra)}; server and sites must build the same model from the same config")


def load_arrays(model: nn.Module, record: ArrayRecord, expected: Collection[str] | None = None,
                where: str = "model") -> None:
    """Copy ``record`` into ``model`` in place (other keys untouched).

    ``expected`` (plain keys) defaults to the record's own keys, which must then all exist in
    the model. Shapes must match exactly.
    """
    names = {strip_prefix(key): key for key in model.state_dict()}
    check_keys(record.keys(), expected if expected is not None else record.keys(), where)
    unknown = sorted(set(record.keys()) - set(names))
    if unknown:
        raise FederationError(f"{where}: received parameters {_few(unknown)} that the model "
                              "does not have; server and sites must build the same model")
    current = model.state_dict()
    update = {}
    for key, value in to_state(record).items():
        target = current[names[key]]
        if tuple(value.shape) != tuple(target.shape):
            raise FederationError(f"{where}: parameter {key!r} has shape {tuple(value.shape)}, "
                                  f"the model expects {tuple(target.shape)}")
        update[names[key]] = value.to(target.dtype)
    model.load_state_dict(update, strict=False)


def record_bytes(record: ArrayRecord) -> int:
    """Bytes of array data (and key names) a record puts on the wire."""
    return int(record.count_bytes())


def _few(keys: list[str], limit: int = 6) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"
