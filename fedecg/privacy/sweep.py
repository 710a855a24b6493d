"""The privacy-utility study: the federated study of ``fedecg simulate`` at several budgets.

``fedecg.app.run_sweep(config, epsilons, out)`` runs the study once per ε
(signal-only, transfer and multimodal side by side, as in every results table; ``inf`` means
no DP) into ``out/epsilon-<ε>/``, each with its own ``summary.json`` (the same keys as
``fedecg simulate``), and writes into ``out``:

* ``privacy_utility.csv``: one row per ε and model: diagnosis and lab macro AUROC with their
  bootstrap CIs, the share of the non-private AUROC above chance kept, and the largest final
  ε spent by any site (with its δ);
* ``summary.json``: the rows, and per ε its study folder, each site's final (ε, δ) per model
  (read from the study's ``metrics.jsonl``) and the privacy section of its model card, which
  is also written into the study's exported ``model/`` card.

A finished ε is skipped and an unfinished one resumed, so rerunning continues the sweep. A DP
study whose sites reported no ε fails loudly: its numbers would not be private.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedecg.config.base import read_yaml, validate_config
from fedecg.config.federated import StudyConfig
from fedecg.config.privacy import DPConfig
from fedecg.errors import ConfigError, PrivacyError
from fedecg.privacy.accounting import Ledger
from fedecg.privacy.card import annotate_model, privacy_card
from fedecg.privacy.client_dp import LEDGER_FILE
from fedecg.privacy.sample_dp import DELTA, EPSILON, NOISE_MULTIPLIER
from fedecg.run_folder import RunFolder, Summary

SWEEP_MODELS = ["signal-only", "transfer", "multimodal"]
TABLE_FILE = "privacy_utility.csv"
TASKS = ("diagnosis", "lab")


def parse_epsilons(text: str) -> list[float]:
    """``"1,3,8,inf"`` → ``[1.0, 3.0, 8.0, inf]`` (positive, distinct, in the given order)."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            value = math.nan
        if not value > 0 or value in values:
            raise ConfigError(f"--epsilons {text!r}: {part!r} is not a new positive number; "
                              "expected a comma-separated list such as 1,3,8,inf")
        values.append(value)
    return values


def epsilon_label(epsilon: float) -> str:
    """``8.0`` → ``"8"``, ``inf`` → ``"inf"`` (folder names and table cells)."""
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


def budget_config(config: StudyConfig, epsilon: float,
                  models: Sequence[str] = tuple(SWEEP_MODELS)) -> StudyConfig:
    """``config`` for one budget: ``models`` (the three by default); DP off at ``inf``, else
    the configured mode (``sample`` when the config says ``none``) at target ``epsilon``."""
    base: DPConfig | None = getattr(config, "privacy", None)
    if base is None:
        raise PrivacyError("the study config has no 'privacy' section, so its federated runs "
                           "cannot apply DP; fedecg.config.federated.StudyConfig needs a "
                           "privacy: DPConfig field")
    mode = "none" if math.isinf(epsilon) else ("sample" if base.mode == "none" else base.mode)
    privacy = base.model_copy(update={"mode": mode, "target_epsilon": epsilon})
    train = config.train.model_copy(update={"models": list(models)})
    return config.model_copy(update={"privacy": privacy, "train": train})


def site_budgets(run_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {site: {"epsilon", "delta", "noise_multiplier"}}}``, the largest over seeds.

    Sample-level: each site's last ε in the study's ``metrics.jsonl``. Client-level: the
    server's ledger of each federated run (``seed-*/MODEL/federated/``), as site ``all``.
    """
    budgets: dict[str, dict[str, dict[str, float]]] = {}
    path = RunFolder(run_dir).metrics
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in map(json.loads, lines):
        if line.get("kind") == "train" and line.get(EPSILON) is not None:
            _keep_largest(budgets, line["model"], line["site"], float(line[EPSILON]),
                          float(line[DELTA]), line.get(NOISE_MULTIPLIER))
    for (_, model), run in RunFolder(run_dir).federated_runs().items():
        ledger_path = run.path / LEDGER_FILE
        if not ledger_path.is_file():
            continue
        record = json.loads(ledger_path.read_text())
        ledger = Ledger.from_record(record, str(ledger_path))
        _keep_largest(budgets, model, "all", ledger.epsilon(), ledger.delta,
                      record.get("noise-multiplier"))
    return budgets


def _keep_largest(budgets: dict[str, dict[str, dict[str, float]]], model: str, site: str,
                  epsilon: float, delta: float, noise: float | None) -> None:
    entry = budgets.setdefault(model, {}).setdefault(site, {})
    if epsilon >= entry.get("epsilon", -1.0):
        entry.update(epsilon=epsilon, delta=delta)
        if noise is not None:
            entry["noise_multiplier"] = float(noise)


def utility_rows(epsilon: float, summary: Summary,
                 budgets: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """One table row per model of a study's ``summary.json`` (federated results)."""
    rows = []
    for model, entry in (summary.federated or {}).items():
        row: dict[str, Any] = {"epsilon": epsilon_label(epsilon), "target_epsilon": epsilon,
                               "model": model}
        for task in TASKS:
            key = f"{task}_macro_auroc"
            interval = getattr(entry, f"{key}_ci") or [None, None]
            row.update({key: getattr(entry, key), f"{key}_low": interval[0],
                        f"{key}_high": interval[1]})
        sites = budgets.get(model, {})
        row["max_site_epsilon"] = max((s["epsilon"] for s in sites.values()), default=None)
        row["delta"] = max((s["delta"] for s in sites.values()), default=None)
        rows.append(row)
    return rows


def kept_share(value: float | None, reference: float | None) -> float | None:
    """(AUROC_ε − 0.5) / (AUROC_∞ − 0.5); None without both, or with a reference at chance."""
    if value is None or reference is None or reference <= 0.5:
        return None
    return (value - 0.5) / (reference - 0.5)


def add_retention(rows: list[dict[str, Any]]) -> None:
    """``dx_auroc_kept``: ``kept_share`` of each row's diagnosis AUROC, when ∞ was run."""
    reference = {r["model"]: r["diagnosis_macro_auroc"] for r in rows
                 if math.isinf(r["target_epsilon"])}
    for row in rows:
        row["dx_auroc_kept"] = kept_share(row["diagnosis_macro_auroc"],
                                          reference.get(row["model"]))


def study_privacy(run_dir: Path) -> DPConfig | None:
    """The ``privacy`` section of a study's resolved ``config.yaml`` (None if it has none)."""
    path = RunFolder(run_dir).config
    section = read_yaml(path).get("privacy") if path.is_file() else None
    return None if section is None else validate_config(DPConfig, section, f"{path}: privacy")


def card_entry(run_dir: Path, budgets: dict[str, dict[str, dict[str, float]]]
               ) -> dict[str, Any] | None:
    """The model card's privacy entry of a study's exported model, also written into it."""
    config = study_privacy(run_dir)
    exported = next((m for m in ("transfer", *SWEEP_MODELS) if m in budgets), None)
    if config is None or exported is None:
        return None
    entry = privacy_card(config, budgets[exported])
    model = RunFolder(run_dir).model
    return annotate_model(model, entry) if model.is_dir() else entry


def check_private(epsilon: float, budgets: dict[str, Any], run_dir: Path) -> None:
    """Refuse a finite-ε study in which no site reported an ε (DP did not run)."""
    if math.isfinite(epsilon) and not any(budgets.get(m) for m in SWEEP_MODELS):
        raise PrivacyError(
            f"{run_dir}: the study at epsilon {epsilon:g} finished but no site reported "
            f"'{EPSILON}' in {RunFolder(run_dir).metrics.name}, so its training was not "
            "differentially private; "
            "the federated ClientApp must run the privacy hook (fedecg.privacy.site_hook)")


def table_csv(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (columns in the rows' order; empty cells for missing values)."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[k for k in rows[0] if k != "target_epsilon"],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
