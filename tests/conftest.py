"""Shared test fixtures. Real data lives in ../shared/data beside the checkout (never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MIMIC_DEMO = SHARED_DATA / "mimic-iv-clinical-database-demo-2.2"
ECG_DEMO_RECORD_LIST = SHARED_DATA / "mimic-iv-ecg-demo-0.1" / "record_list.csv"
WFDB_SAMPLES = SHARED_DATA / "wfdb-samples"

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real, openly licensed data in ../shared/data; tests that need it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is missing: these tests read the real demo data kept "
                    "beside the checkout (README, 'The tests')")
    return SHARED_DATA
