"""Flower's environment as fedecg runs it: telemetry off, no update check, no runtime
dependency installation, and a private ``FLWR_HOME``: for the processes ``fedecg.deploy``
starts (``flower_env``) and for a simulation in this process (``use_flower_env``)."""

from __future__ import annotations

import os
from pathlib import Path

FLOWER_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
              "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
              "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def flower_env(flwr_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with fedecg's Flower settings and ``FLWR_HOME``."""
    return {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(Path(flwr_home).resolve()),
            **(extra or {})}


def use_flower_env(flwr_home: Path) -> None:
    """Set fedecg's Flower settings and ``FLWR_HOME`` in this process where they are unset."""
    for key, value in {**FLOWER_ENV, "FLWR_HOME": str(flwr_home)}.items():
        os.environ.setdefault(key, value)
