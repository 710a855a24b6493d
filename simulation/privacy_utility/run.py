"""The privacy-utility study at the 600-patient quickstart scale: the federated study at several ε.

Usage::

    python simulation/privacy_utility/run.py [--runs runs/privacy-utility] [--epsilons 1,3,8,inf]
        [--seeds 0,1] [--figure simulation/figures/privacy-utility.png] [--set KEY=VALUE]

``config.yaml`` (beside this script) is the quickstart simulation at 600 patients with
DP-SGD at every site (``--set data.synthesize.patients=1000`` for the main job's twin);
``fedecg.app.run_sweep`` runs it once per ε (signal-only, transfer and multimodal;
``inf`` = no DP) into ``RUNS/epsilon-<ε>/`` and writes ``RUNS/privacy_utility.csv``. A finished
ε is read back and an unfinished one resumed, so rerunning continues the study. Then
``RUNS/results.md`` gets the table that ``simulation/README.md`` quotes and ``--figure`` the
plot of AUROC against ε (``fedecg sweep privacy`` draws the same one).

``--public-arm`` runs the public-pretraining arm instead (issue 16): the transfer model alone,
its ECG encoder pretrained without DP on a public twin of other patients (``public_twin.py``:
``--public-patients``, twin seed ``--public-seed``, into ``RUNS/public-encoder``), then the
same study with no pretraining rounds at the sites (``train.encoder_from``,
``federation.rounds.pretrain=0``): DP covers the sites' records in the lab and diagnosis
stages, and ε is spent on those alone.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import torch

from fedecg.app import run_sweep
from fedecg.config.base import apply_overrides, read_yaml, validate_config
from fedecg.config.federated import StudyConfig
from fedecg.io import atomic_write_text
from fedecg.privacy.sweep import SWEEP_MODELS, epsilon_label, kept_share, parse_epsilons
from fedecg.report.privacy_plot import utility_figure
from fedecg.run_folder import RunFolder

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "config.yaml"
DX, LAB = "diagnosis_macro_auroc", "lab_macro_auroc"


def _f(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(row: dict[str, Any], key: str) -> str:
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    interval = "" if low is None or high is None else f" [{low:.3f}, {high:.3f}]"
    return _f(row.get(key)) + interval


def seed_values(runs: Path, label: str, model: str) -> list[float | None]:
    """Federated dx macro AUROC of ``model`` at ε ``label``, one per seed (study order)."""
    summary = RunFolder(runs / f"epsilon-{label}").read_summary()
    by_seed = summary.by_seed or {str(summary.seeds[0]): summary}
    return [entry.federated[model].diagnosis_macro_auroc for entry in by_seed.values()]


def _share(value: float | None) -> str:
    return "–" if value is None else f"{round(100 * value)}%"  # int: never "-0%"


def results_table(rows: list[dict[str, Any]], runs: Path) -> str:
    """One markdown row per ε and model: AUROCs with CIs, dx and share kept per seed (each
    against the same seed without DP), the share kept by the seed mean, and the site ε."""
    lines = ["| ε | model | dx macro AUROC [CI] | lab macro AUROC [CI] | dx per seed | "
             "kept per seed | kept (mean) | largest site ε (δ) |",
             "|---|---|---|---|---|---|---|---|"]
    has_reference = RunFolder(runs / "epsilon-inf").summary.is_file()
    for row in rows:
        seeds = seed_values(runs, row["epsilon"], row["model"])
        references = seed_values(runs, "inf", row["model"]) if has_reference else []
        shares = [kept_share(v, r) for v, r in zip(seeds, references, strict=False)]
        spent = row.get("max_site_epsilon")
        budget = "–" if spent is None else f"{spent:.3f} ({row['delta']:g})"
        lines.append(f"| {row['epsilon']} | {row['model']} | {_ci(row, DX)} | {_ci(row, LAB)} | "
                     f"{', '.join(_f(v) for v in seeds)} | "
                     f"{', '.join(_share(v) for v in shares) or '–'} | "
                     f"{_share(row.get('dx_auroc_kept'))} | {budget} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/privacy-utility"))
    parser.add_argument("--epsilons", type=parse_epsilons, default=parse_epsilons("1,3,8,inf"))
    parser.add_argument("--seeds", default="0,1", help="comma-separated, e.g. 0,1")
    parser.add_argument("--figure", type=Path, default=None, help="also write the plot here")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="override a setting of config.yaml, e.g. --set train.batch_size=64")
    parser.add_argument("--public-arm", action="store_true",
                        help="the public-pretraining arm (module docstring)")
    parser.add_argument("--public-patients", type=int, default=1000)
    parser.add_argument("--public-seed", type=int, default=1, help="the public twin's seed "
                        "(not data.synthesize.seed, the sites' patients)")
    parser.add_argument("--public-set", dest="public_overrides", action="append", default=[],
                        help="override the public encoder's training, e.g. --public-set "
                        "lab.epochs=4 --public-set diagnosis.epochs=12 (all stages)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    data = apply_overrides(read_yaml(CONFIG), [*args.overrides, f"seeds=[{args.seeds}]"])
    config = validate_config(StudyConfig, data, f"{CONFIG} with --set {args.overrides}")
    title, models = "Privacy-utility study", SWEEP_MODELS
    if args.public_arm:
        from public_twin import arm_overrides, public_encoder_run  # beside this script

        encoder = public_encoder_run(config, args.runs, args.public_patients, args.public_seed,
                                     args.public_overrides, logging.info)
        config = validate_config(StudyConfig, apply_overrides(data, arm_overrides(encoder)),
                                 f"{CONFIG}, public arm")
        title = (f"Public-pretraining arm: transfer's ECG encoder pretrained without DP on a "
                 f"public twin ({args.public_patients} patients, twin seed {args.public_seed}), "
                 "no pretraining rounds at the sites")
        models = ["transfer"]
    rows = run_sweep(config, args.epsilons, args.runs, say=logging.info, models=models)
    labels = ", ".join(epsilon_label(e) for e in args.epsilons)
    text = (f"# {title} (ε = {labels}; seeds {args.seeds})\n\n"
            f"{results_table(rows, args.runs)}\n")
    atomic_write_text(args.runs / "results.md", text)
    figure = utility_figure(rows)
    for path in [args.runs / "privacy_utility.png", args.figure]:
        if path is not None:
            figure.savefig(path, dpi=90)
    logging.info("wrote %s", args.runs / "results.md")


if __name__ == "__main__":
    main()
