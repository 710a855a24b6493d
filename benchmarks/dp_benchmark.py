"""Cost of sample-level DP-SGD on the default encoder: epoch time ratio and peak memory.

For each stage (pretraining, lab and diagnosis) and each mode, the default ``TrainConfig``
model (``EncoderConfig`` defaults, ``crop_samples`` crops, ``batch_size`` batches) trains on
random in-memory records, on ``--threads`` threads. Epochs of all modes are timed round-robin
in one process (``--epochs`` rounds after a warm-up round), so a change in machine load hits
every mode alike; peak memory is measured per mode in its own child process:

* ``plain``: fedecg's own stage and loop (``train_epoch``), no DP;
* ``fast`` / ``hooks`` / ``functorch``: ``SitePrivacy.private_round`` (what a DP site runs:
  Poisson batches, per-example clipping, noise, accounting) with that
  ``privacy.sample.grad_sample_mode``: ``fast`` (the default) is fedecg's own per-example
  clipping (``fedecg.privacy.per_example``), ``hooks`` and ``functorch`` are Opacus's;
* ``grouped`` (pretraining only): ``private_round`` with ``pretrain_objective: grouped``
  (``fedecg.privacy.grouped``: InfoNCE within groups of about ``contrastive_group`` records,
  each group's gradient clipped by a loop over groups, no Opacus hooks);
* ``ghost``: Opacus ghost clipping on the same per-example objective, driven directly
  (its loss object is not a tensor, so it cannot go through ``train_epoch``); measured to
  decide whether fedecg should support it.

The per-example modes of pretraining train the default ``align`` objective. Reported per stage
and mode: seconds per epoch (median), the ratio to ``plain`` (target: at most 2 for the
default mode), and the peak resident set growth over one epoch (VmHWM reset after a
warm-up). Speeds depend on the machine and its load: read them only as ratios from one run.
Example::

    python benchmarks/dp_benchmark.py --threads 1 --out benchmarks/dp_benchmark.json
    python benchmarks/dp_benchmark.py --stages lab diagnosis --modes plain fast hooks \
        --steps 4 --out benchmarks/dp_heads_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from benchmark_json import emit
from torch.utils.data import DataLoader, Dataset

from fedecg.config.privacy import DPConfig, SampleDPConfig
from fedecg.config.train import TrainConfig
from fedecg.data.cohort import clinical_feature_names
from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.labs import DEFAULT_LAB_PANEL, panel_label_names
from fedecg.models.joint import JointModel
from fedecg.privacy.accounting import PrivacyPlan, plan_stage
from fedecg.privacy.objectives import private_stage
from fedecg.privacy.sample_dp import SitePrivacy
from fedecg.training.stages import DiagnosisStage, LabHeadStage, PretrainStage, Stage
from fedecg.training.trainer import activate, make_optimizer, train_epoch

MODES = ("plain", "fast", "hooks", "functorch", "grouped", "ghost")
PRETRAIN_ONLY = ("grouped",)
STAGES: dict[str, Stage] = {"pretrain": PretrainStage(), "lab": LabHeadStage(),
                             "diagnosis": DiagnosisStage()}


class RandomRecords(Dataset):
    """``n`` random crops with clinical rows and partly known labels (shapes of CropDataset)."""

    def __init__(self, n: int, crop: int, n_lab: int, n_dx: int, n_clinical: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.ecg = torch.randn(n, 12, crop, generator=g)
        self.clinical = torch.randn(n, n_clinical, generator=g)
        self.lab = (torch.rand(n, n_lab, generator=g) > 0.8).float()
        self.dx = (torch.rand(n, n_dx, generator=g) > 0.9).float()
        self.lab[torch.rand(n, n_lab, generator=g) > 0.5] = float("nan")

    def __len__(self) -> int:
        return len(self.ecg)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"ecg": self.ecg[i], "clinical": self.clinical[i], "lab": self.lab[i],
                "dx": self.dx[i]}


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _default_model(config: TrainConfig) -> JointModel:
    torch.manual_seed(0)
    return JointModel(len(panel_label_names(DEFAULT_LAB_PANEL)), len(DEFAULT_DIAGNOSIS_LABELS),
                      len(clinical_feature_names(DEFAULT_LAB_PANEL)),
                      encoder=config.encoder.model_dump(), clinical=config.clinical.model_dump(),
                      projection_dim=config.pretrain.projection_dim)


def _ghost_epoch(model: JointModel, stage: Stage, loader: DataLoader, lr: float) -> None:
    from opacus.grad_sample.utils import prepare_module
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPTensorFastGradientClipping

    objective = private_stage(stage)
    params = activate(model, objective)
    hooks = prepare_module(model, "ghost", wrap_model=False, max_grad_norm=1.0,
                           batch_first=True, loss_reduction="mean")
    optimizer = DPOptimizerFastGradientClipping(
        make_optimizer(params, lr), noise_multiplier=1.0, max_grad_norm=1.0,
        expected_batch_size=loader.batch_size, loss_reduction="mean")
    for batch in loader:
        optimizer.zero_grad()
        per_example = objective.per_example_loss(model, batch)
        DPTensorFastGradientClipping(hooks, optimizer, per_example, "mean").backward()
        optimizer.step()
    hooks.cleanup()


def make_epoch(mode: str, stage_name: str, steps: int, epochs: int) -> Callable[[], None]:
    """A closure training one epoch of ``mode`` on its own model, loader and privacy state."""
    config = TrainConfig()
    model, stage = _default_model(config), STAGES[stage_name]
    n = config.batch_size * steps
    data = RandomRecords(n, config.crop_samples, model.classifier.lab_head.out_features,
                         model.classifier.dx_head.out_features, model.clinical.n_features)
    loader = DataLoader(data, batch_size=config.batch_size, shuffle=True, drop_last=True)
    plan = PrivacyPlan((plan_stage(stage_name, n, config.batch_size, epochs + 1),), n)
    sample = {"grad_sample_mode": mode if mode in ("fast", "hooks", "functorch") else "hooks",
              "pretrain_objective": "grouped" if mode == "grouped" else "align"}
    site = SitePrivacy.start(DPConfig(mode="sample", target_epsilon=8.0, sample=sample), plan)
    seeds = iter(range(10**6))

    def epoch() -> None:
        if mode == "ghost":
            _ghost_epoch(model, stage, loader, 1e-3)
            return
        optimizer = make_optimizer(activate(model, stage), 1e-3)
        if mode == "plain":
            train_epoch(model, stage, loader, optimizer, max_grad_norm=config.max_grad_norm)
            return
        with site.private_round(model, stage, loader, optimizer, seed=next(seeds)) as dp:
            train_epoch(dp.model, dp.stage, dp.loader, dp.optimizer)
    return epoch


def time_modes(stage_name: str, modes: list[str], epochs: int, steps: int) -> dict[str, float]:
    """Median seconds per epoch of each mode, epochs taken round-robin (load drift cancels);
    the first round is a warm-up."""
    runs = {mode: make_epoch(mode, stage_name, steps, epochs) for mode in modes}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(epochs + 1):
        for mode, epoch in runs.items():
            start = time.perf_counter()
            epoch()
            times[mode].append(time.perf_counter() - start)
    return {mode: statistics.median(values[1:]) for mode, values in times.items()}


def child_memory(mode: str, stage_name: str, steps: int) -> dict[str, float]:
    """Peak resident set growth (MiB) over one epoch of ``mode``, after setup and a warm-up."""
    epoch = make_epoch(mode, stage_name, steps, epochs=1)
    epoch()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: measure one epoch only
    baseline = _status_mib("VmRSS")
    epoch()
    return {"peak_rss_growth_mib": _status_mib("VmHWM") - baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="batches per epoch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "STAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child_memory(*args.child, args.steps)))
        return
    report: dict[str, Any] = {"threads": args.threads, "steps_per_epoch": args.steps,
                              "timed_epochs": args.epochs, "config": TrainConfig().model_dump(
                                  include={"batch_size", "crop_samples", "encoder"}),
                              "contrastive_group": SampleDPConfig().contrastive_group,
                              "stages": {}}
    for stage in args.stages:
        modes = [m for m in args.modes if stage == "pretrain" or m not in PRETRAIN_ONLY]
        seconds = time_modes(stage, modes, args.epochs, args.steps)
        rows = {}
        for mode in modes:
            command = [sys.executable, __file__, "--child", mode, stage, "--steps",
                       str(args.steps), "--threads", str(args.threads)]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            rows[mode] = {"seconds_per_epoch": seconds[mode],
                          "ratio_to_plain": seconds[mode] / seconds["plain"],
                          **json.loads(result.stdout.strip().splitlines()[-1])}
        report["stages"][stage] = rows
    emit(report, args.out)


if __name__ == "__main__":
    main()
