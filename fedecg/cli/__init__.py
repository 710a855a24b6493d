"""The ``fedecg`` command: one typer app, subcommands registered from sibling modules."""

from __future__ import annotations

import importlib

import typer

from fedecg.cli.common import app

COMMAND_MODULES = (
    "synth_commands",
    "data_commands",
    "train_commands",
    "inference_commands",
    "federated_commands",
    "privacy_commands",
    "deploy_commands",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"fedecg.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"fedecg.cli.{name}":
                raise
            continue
        module.register(app)


_register_all()


def main() -> None:
    """Entry point of the ``fedecg`` console script."""
    app()


__all__ = ["app", "main", "typer"]
