"""``simulation/twin_ceiling.py``: the ceiling of a small twin, against coded and true labels."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fedecg.data.synth import generate_twin
from fedecg.data.synth.literature_effects import LITERATURE_COLUMNS

SCRIPT = Path(__file__).resolve().parents[2] / "simulation" / "twin_ceiling.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("twin_ceiling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_scores_every_label_from_the_latent_parameters(tmp_path: Path, script):
    generate_twin(tmp_path / "twin", patients=400, sites=2, seed=0, tables_only=True)
    coded = script.ceiling(tmp_path / "twin")
    true = script.ceiling(tmp_path / "twin", true_dx=True)
    assert set(LITERATURE_COLUMNS) <= set(coded["features"])
    assert not {"age", "gender", "cart_id", "hospital"} & set(coded["features"])
    assert any(k.startswith("abn_") for k in coded["labels"]) and "dx_aki" in coded["labels"]
    assert true["labels"]["dx_atrial_fibrillation"]["test_known"] == true["test"]
    assert true["labels"]["dx_atrial_fibrillation"]["auroc"] > 0.85
    assert 0.5 < true["dx_macro_auroc"] <= 1.0 and coded["test"] == true["test"]
    table = script.markdown({"coded": coded, "true": true})
    assert "| **dx macro** |" in table and "| dx_aki |" in table
