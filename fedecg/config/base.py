"""Strict pydantic base model and YAML loading with ``--set`` overrides.

Precedence is explicit: ``--set key=value`` over the YAML file over the model's defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from fedecg.errors import ConfigError, InputFileError

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every fedecg config: unknown keys are errors and values are validated; NaN
    and infinity round-trip through JSON (as ``NaN``/``Infinity``, like Python's json)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False,
                              ser_json_inf_nan="constants")


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per invalid field: ``source: field.path: message (got VALUE)``."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not a setting of this section; check its spelling)"
        got = item.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{source}: {where}: {message}{shown}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into a key path and a YAML-typed value."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, _, raw = text.partition("=")
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"--set {text!r}: the key before '=' is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {exc}") from exc
    return path, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``KEY=VALUE`` override set at its dotted path."""
    result = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in data.items()}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                          f"{exc.start} is not UTF-8; expected a UTF-8 text file. Save it as "
                          "UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return data


def validate_config(model: type[ModelT], data: dict[str, Any], source: str) -> ModelT:
    """Validate ``data`` as ``model``; raise ``ConfigError`` naming every bad key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def load_config(
    model: type[ModelT], path: Path | None = None, overrides: list[str] | None = None
) -> ModelT:
    """Load ``model`` from an optional YAML file plus ``--set`` overrides."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    source = str(path) if path is not None else "config"
    return validate_config(model, data, source)


def dump_config(config: BaseModel, path: Path) -> None:
    """Write a resolved config as YAML (atomically)."""
    from fedecg.io import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
