"""Side by side: the privacy-utility sweeps of several arms, and how each compares with signal-only.

Usage::

    python simulation/privacy_utility/arms.py --out runs/arms.md \
        --arm "signal-only=runs/privacy-utility:signal-only" \
        --arm "transfer, grouped=runs/privacy-utility:transfer" \
        --arm "transfer, public encoder=runs/privacy-public:transfer" \
        --arm "multimodal=runs/privacy-utility:multimodal" --baseline signal-only

Each ``--arm LABEL=FOLDER:MODEL`` names a sweep folder (``run.py``) and the model to read from
it. For every ε that all arms finished, the table gives each arm's federated dx macro AUROC
(mean ± SD over seeds, and per seed), the share of its AUROC above chance kept against the
same arm without DP (``epsilon-inf``), and in how many seeds it beats the ``--baseline`` arm.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from run import seed_values

from fedecg.io import atomic_write_text
from fedecg.privacy.sweep import kept_share
from fedecg.report.plots import plot_curves

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _label_order(label: str) -> float:
    return float("inf") if label == "inf" else float(label)


def finished_epsilons(folders: list[Path]) -> list[str]:
    """ε labels (``"1"``, ``"inf"``) whose study every folder has finished, smallest first."""
    sets = [{p.name.removeprefix("epsilon-") for p in folder.glob("epsilon-*")
             if (p / "summary.json").is_file()} for folder in folders]
    return sorted(set.intersection(*sets), key=_label_order)


def arms_table(arms: dict[str, tuple[Path, str]], baseline: str) -> str:
    """The markdown table described in the module docstring."""
    lines = ["| ε | arm | dx mean ± SD | dx per seed | kept per seed | kept (mean over seeds) | "
             f"beats {baseline} |", "|---|---|---|---|---|---|---|"]
    for label in finished_epsilons([folder for folder, _ in arms.values()]):
        reference = {name: seed_values(folder, label, model)
                     for name, (folder, model) in arms.items()}
        for name, (folder, model) in arms.items():
            values = reference[name]
            without_dp = seed_values(folder, "inf", model)
            kept = [kept_share(v, r) for v, r in zip(values, without_dp, strict=True)]
            known = [k for k in kept if k is not None]
            wins = sum(v > b for v, b in zip(values, reference[baseline], strict=True))
            lines.append(
                f"| {label} | {name} | {statistics.mean(values):.3f} ± "
                f"{statistics.stdev(values) if len(values) > 1 else 0:.3f} | "
                f"{', '.join(f'{v:.3f}' for v in values)} | "
                f"{', '.join(f'{round(100 * k)}%' for k in known)} | "
                f"{round(100 * statistics.mean(known)) if known else '–'}% | "
                f"{'–' if name == baseline else f'{wins} of {len(values)}'} |")
    return "\n".join(lines)


def arms_figure(arms: dict[str, tuple[Path, str]]) -> Figure:
    """Each arm's dx macro AUROC (mean ± SD over seeds) against ε; ∞ drawn at 2 × the
    largest finite ε."""
    labels = finished_epsilons([folder for folder, _ in arms.values()])
    finite = [float(label) for label in labels if label != "inf"]
    at_inf = 2 * max(finite) if finite else 1.0
    records = []
    for name, (folder, model) in arms.items():
        for label in labels:
            values = seed_values(folder, label, model)
            mean = statistics.mean(values)
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            records.append({"epsilon": at_inf if label == "inf" else float(label), "arm": name,
                            "auroc": mean, "low": mean - spread, "high": mean + spread})
    figure = plot_curves(records, "epsilon", "auroc", group="arm", band=("low", "high"),
                         title="federated dx macro AUROC against ε (mean ± SD over seeds)",
                         xlabel="ε (log scale; ∞ = no DP)", ylabel="dx macro AUROC", log_x=True)
    ticks = sorted({r["epsilon"] for r in records})
    figure.axes[0].set_xticks(ticks, ["∞" if t == at_inf else f"{t:g}" for t in ticks])
    figure.axes[0].minorticks_off()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arm", action="append", required=True, metavar="LABEL=FOLDER:MODEL")
    parser.add_argument("--baseline", required=True, help="the arm others are compared with")
    parser.add_argument("--out", type=Path, required=True, help="the table (markdown)")
    parser.add_argument("--figure", type=Path, default=None, help="also draw the plot here")
    args = parser.parse_args()
    arms = {}
    for item in args.arm:
        label, target = item.split("=", 1)
        folder, model = target.rsplit(":", 1)
        arms[label] = (Path(folder), model)
    if args.baseline not in arms:
        parser.error(f"--baseline {args.baseline!r} is not one of the arms {list(arms)}")
    atomic_write_text(args.out, arms_table(arms, args.baseline) + "\n")
    if args.figure is not None:
        arms_figure(arms).savefig(args.figure, dpi=90)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
