"""How much of its no-DP AUROC each model keeps at one ε, against the size of a site.

Usage::

    python simulation/privacy_utility/site_size.py --epsilon 8 \
        --runs 2=runs/pu-2-sites --runs 4=runs/privacy-utility --runs 8=runs/pu-8-sites \
        [--out simulation/privacy_utility]
    python simulation/privacy_utility/site_size.py --noise-table 125,553,5000   # σ only

Each ``--runs N=FOLDER`` is a privacy-utility study (``run.py``) of the same patients split over
N sites (``--set partition.num_sites=N``) with at least ``epsilon-<ε>`` and ``epsilon-inf``
finished, so the sites differ only in size. Sample-level DP at a site calibrates its noise to
the site's own training records (the sampling rate is batch / records), so the smaller the site,
the more noise each step carries. Writes ``site_size.md`` (per model and site count: training
ECGs per site, diagnosis AUROC per seed at ε and without DP, the share of AUROC above chance
kept per seed, its mean ± SD) and ``site_size.png`` (kept share against training ECGs per site).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from run import seed_values

from fedecg.config.privacy import default_delta
from fedecg.io import atomic_write_text
from fedecg.privacy.accounting import PrivacyPlan, calibrate_noise, plan_stage
from fedecg.privacy.sweep import SWEEP_MODELS, epsilon_label, kept_share
from fedecg.report.plots import plot_curves
from fedecg.run_folder import RunFolder

HERE = Path(__file__).resolve().parent


def _train_ecgs_per_site(study: Path) -> float:
    sites = RunFolder(study).read_summary().as_dict()["partition"]["sites"]
    return statistics.mean(site["train"] for site in sites.values())


def site_size_rows(runs: dict[int, Path], epsilon: float) -> list[dict[str, Any]]:
    """One row per site count and model: sizes, per-seed AUROCs and kept shares."""
    label = epsilon_label(epsilon)
    rows = []
    for num_sites, folder in sorted(runs.items()):
        train_ecgs = _train_ecgs_per_site(folder / f"epsilon-{label}")
        for model in SWEEP_MODELS:
            values = seed_values(folder, label, model)
            references = seed_values(folder, "inf", model)
            kept = [kept_share(v, r) for v, r in zip(values, references, strict=True)]
            known = [k for k in kept if k is not None]
            rows.append({"sites": num_sites, "train_ecgs": train_ecgs,
                         "model": model, "dx": values, "dx_inf": references, "kept": kept,
                         "kept_mean": statistics.mean(known) if known else None,
                         "kept_sd": statistics.stdev(known) if len(known) > 1 else None})
    return rows


def _numbers(values: list[float | None], percent: bool = False) -> str:
    def one(v: float | None) -> str:
        return "–" if v is None else (f"{round(100 * v)}%" if percent else f"{v:.3f}")
    return ", ".join(one(v) for v in values)


def site_size_table(rows: list[dict[str, Any]], epsilon: float) -> str:
    """The markdown table of ``site_size_rows``."""
    label = epsilon_label(epsilon)
    lines = [f"| sites | training ECGs a site | model | dx at ε = {label} per seed | "
             "dx without DP per seed | kept per seed | kept mean ± SD |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        spread = "–" if row["kept_sd"] is None else f"{round(100 * row['kept_sd'])}"
        mean = "–" if row["kept_mean"] is None else f"{round(100 * row['kept_mean'])}"
        lines.append(f"| {row['sites']} | {row['train_ecgs']:.0f} | {row['model']} | "
                     f"{_numbers(row['dx'])} | {_numbers(row['dx_inf'])} | "
                     f"{_numbers(row['kept'], percent=True)} | {mean} ± {spread}% |")
    return "\n".join(lines)


def noise_table(sizes: list[int], epsilons: list[float], rounds: dict[str, int],
                batch_size: int) -> str:
    """The noise multiplier σ a site of each size gets for the round plan at each ε (fedecg's
    own calibration, RDP, δ = 0.1/n), and the noise on a step's mean gradient, σ / batch, in
    units of the clipping norm: what DP costs a site, before any training."""
    lines = ["| training ECGs a site | DP steps | " + " | ".join(
        f"σ at ε = {e:g} (σ/batch)" for e in epsilons) + " |",
        "|---|---|" + "---|" * len(epsilons)]
    for n in sizes:
        plan = PrivacyPlan(tuple(plan_stage(stage, n, batch_size, count)
                                 for stage, count in rounds.items()), n)
        noises = [calibrate_noise(plan, e, default_delta(n), max_noise_multiplier=50.0)
                  for e in epsilons]
        steps = sum(stage.steps for stage in plan.stages)
        lines.append(f"| {n} | {steps} | " + " | ".join(
            f"{s:.2f} ({s / batch_size:.3f})" for s in noises) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epsilon", type=float, default=8.0)
    parser.add_argument("--runs", action="append", default=[], metavar="N=FOLDER",
                        help="a privacy-utility study of the patients split over N sites")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--noise-table", default=None, metavar="SIZES",
                        help="only print σ for sites of these sizes (e.g. 125,553,5000) under "
                        "the main job's round plan (8 + 12 + 24 rounds, batch 32)")
    args = parser.parse_args()
    if args.noise_table:
        sizes = [int(size) for size in args.noise_table.split(",")]
        print(noise_table(sizes, [1.0, 3.0, 8.0], {"pretrain": 8, "lab": 12, "diagnosis": 24},
                          32))
        return
    if not args.runs:
        parser.error("give --runs N=FOLDER (or --noise-table SIZES)")
    runs = {int(n): Path(folder) for n, folder in (item.split("=", 1) for item in args.runs)}
    rows = site_size_rows(runs, args.epsilon)
    title = f"Share of no-DP dx AUROC above chance kept at ε = {epsilon_label(args.epsilon)}"
    atomic_write_text(args.out / "site_size.md",
                      f"# {title}, against site size\n\n{site_size_table(rows, args.epsilon)}\n")
    records = [{"train_ecgs": r["train_ecgs"], "kept": r["kept_mean"], "model": r["model"],
                "low": r["kept_mean"] - (r["kept_sd"] or 0),
                "high": r["kept_mean"] + (r["kept_sd"] or 0)}
               for r in rows if r["kept_mean"] is not None]
    figure = plot_curves(records, "train_ecgs", "kept", group="model", band=("low", "high"),
                         title=title, xlabel="training ECGs a site (log scale)",
                         ylabel="share kept (mean ± SD over seeds)", log_x=True)
    figure.axes[0].axhline(0.9, color="grey", linestyle=":", linewidth=1)
    figure.savefig(args.out / "site_size.png", dpi=90)
    print(f"wrote {args.out / 'site_size.md'} and {args.out / 'site_size.png'}")


if __name__ == "__main__":
    main()
