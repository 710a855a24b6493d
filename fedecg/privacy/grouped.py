"""Grouped contrastive pretraining under sample-level DP (DP-GCL, ``pretrain_objective: grouped``).

The per-example objectives (``fedecg.privacy.objectives``) drop InfoNCE because it couples every
example of a batch. Here the stage's own loss (InfoNCE or SigLIP, as ``PretrainStage`` is
configured) is kept, but only *within* small groups, and the group is the unit of clipping.
One DP step, with ``q`` the sampling rate, ``C`` the configured ``max_grad_norm``, ``σ`` the
calibrated noise multiplier and ``g`` ``privacy.sample.contrastive_group``:

1. Poisson sampling draws the batch ``B`` (each of the site's ``n`` training records
   independently with probability ``q``), exactly as for the other stages.
2. Each drawn record gets a group label, uniform on ``0 .. M-1`` with ``M = max(1,
   round(q·n / g))`` (so groups hold about ``g`` records), drawn independently of every other
   record and of all contents from a seeded generator. The labels are i.i.d., so drawing one
   per batch row is, in distribution, giving each record its own label: independent of the
   data and of the batch order. Group ``k`` is the set of records labelled ``k``.
3. For each group with at least 2 records, ``u_k`` is the gradient of the stage's loss on that
   group alone, clipped to norm ``C/2``; a group of 0 or 1 record gives ``u_k = 0``. A lone
   record has no negative (InfoNCE is constant on it; SigLIP would only pull its own pair
   together), and 0 lies inside the ``C/2`` ball, so dropping it keeps the bound below.
4. The update is ``(Σ_k u_k + N(0, σ²C² I)) / M`` (``M`` is data-independent: Opacus likewise
   divides by the expected batch size), then the wrapped optimizer's step.

**Why one record's influence is at most C.** Fix the labels ``ω`` (independent of the data,
with the same distribution for any two neighbouring datasets). For add/remove neighbours
``D' = D ∪ {x}`` and any drawn subset ``T`` of ``D``, ``f_ω(T ∪ {x})`` and ``f_ω(T)`` differ only
in the term of ``x``'s group: every other group has the same members and the same loss. Both
values of that term lie in the ball of radius ``C/2`` (or are 0), so ``‖f_ω(T ∪ {x}) − f_ω(T)‖
≤ C``. (Clipping each group to ``C`` would not do: adding ``x`` to an existing group *replaces*
that group's term, which can move by twice the clip.) Under replacement of ``x`` by ``x'`` with
the same label the bound is the same ``C``. This is the sensitivity condition of the Sampled
Gaussian Mechanism (Mironov, Talwar & Zhang 2019: any function of the Poisson-sampled set whose
value moves by at most ``C`` when one element is added, plus ``N(0, σ²C²)``), which Opacus's RDP
and PRV accountants account. The bound holds for every ``ω`` (which may as well include the
dropout masks, and may be public), and the mixture over ``ω`` keeps it (Rényi divergence is
jointly quasi-convex). So each step is recorded in the site's ``Ledger`` as one DP-SGD step at rate
``q`` and noise multiplier ``σ``, and the calibration, budget stop and resume are unchanged.
The unit protected is the same: one ECG record of a site's training split.

Groups come from independent labels rather than from cutting a shuffled batch into
consecutive blocks of ``g``: with blocks, adding one record shifts every later block boundary,
so one record could change every group's loss. Group sizes therefore vary around ``g``.

Per-group gradients are computed by a plain loop over groups (``torch.autograd.grad`` of the
group's loss; no Opacus hooks, since groups differ in size). The training loop then calls
``loss.backward()`` and ``optimizer.step()`` as for any stage: ``GroupedContrastiveStage.loss``
returns a tensor whose value is the mean group loss and whose gradient is the clipped sum
``Σ_k u_k``, and ``NoisySumOptimizer`` adds the noise, divides by ``M``, runs the step hook
(the ledger, FedProx) and steps. The ECG encoder, both projections, the clinical encoder and the
temperature train, as in non-private ``PretrainStage``, which shares the same keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from fedecg.config.privacy import SampleDPConfig
from fedecg.models.joint import JointModel
from fedecg.training.stages import Batch, PretrainStage, WrappedStage

MIN_GROUP = 2  # a smaller group has no negative: its term is 0
CLIP_NORM_EPS = 1e-6  # as Opacus: C / (norm + eps), so a zero gradient stays finite


def expected_groups(expected_batch: float, group_size: int) -> int:
    """``M``: the number of group labels, ``max(1, round(expected batch / g))``."""
    return max(1, round(expected_batch / group_size))


def with_gradient(value: torch.Tensor, params: list[nn.Parameter],
                  grads: list[torch.Tensor]) -> torch.Tensor:
    """A scalar equal to ``value`` whose gradient with respect to ``params`` is ``grads``."""
    linear = sum(((p * g.detach()).sum() for p, g in zip(params, grads, strict=True)),
                 torch.zeros(()))
    return value.detach() + linear - linear.detach()


@dataclass
class GroupedContrastiveStage(WrappedStage):
    """Pretraining under DP by groups: ``inner``'s loss within each group, each group's
    gradient clipped to ``group_clip`` (``max_grad_norm / 2``; see the module docstring)."""

    inner: PretrainStage
    group_size: int
    group_clip: float
    n_groups: int = 1
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    @classmethod
    def from_settings(cls, inner: PretrainStage,
                      settings: SampleDPConfig) -> GroupedContrastiveStage:
        """The stage for ``settings``' group size and clipping norm (one group per round until
        ``for_round`` sets the expected batch)."""
        return cls(inner, settings.contrastive_group, 0.5 * settings.max_grad_norm)

    def for_round(self, expected_batch: float, seed: int) -> GroupedContrastiveStage:
        """This stage with ``M`` groups for ``expected_batch`` and labels drawn from ``seed``."""
        return GroupedContrastiveStage(self.inner, self.group_size, self.group_clip,
                                       expected_groups(expected_batch, self.group_size), seed)

    def groups(self, batch_size: int) -> list[torch.Tensor]:
        """Row indices of each of the ``M`` groups (labels: one uniform draw per row)."""
        labels = torch.randint(self.n_groups, (batch_size,), generator=self.generator)
        return [torch.nonzero(labels == k).flatten() for k in range(self.n_groups)]

    def clipped_group_sum(self, model: JointModel, batch: Batch,
                          groups: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``Σ_k u_k`` per trainable parameter, and the loss ``[G]`` (detached) of each group
        of ``MIN_GROUP`` rows or more (a smaller group contributes 0)."""
        params = self.trainable(model)
        total = [torch.zeros_like(p) for p in params]
        losses = []
        for rows in (rows for rows in groups if len(rows) >= MIN_GROUP):
            loss, _ = self.inner.loss(model, {key: value[rows] for key, value in batch.items()})
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads,
                                                                               strict=True)]
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
            factor = (self.group_clip / (norm + CLIP_NORM_EPS)).clamp(max=1.0)
            for summed, grad in zip(total, grads, strict=True):
                summed.add_(grad, alpha=float(factor))
            losses.append(loss.detach())
        return total, torch.stack(losses) if losses else torch.zeros(0)

    def loss(self, model: JointModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The mean group loss (0 without a group of 2), carrying the clipped group sum as its
        gradient; its value is the only log."""
        total, losses = self.clipped_group_sum(model, batch, self.groups(len(batch["ecg"])))
        value = losses.mean() if len(losses) else torch.zeros(())
        return with_gradient(value, self.trainable(model), total), {"loss": float(value)}


StepHook = Callable[["NoisySumOptimizer"], None]


class NoisySumOptimizer:
    """Wraps the stage's optimizer: ``step`` noises the clipped sum that ``backward`` left in
    ``p.grad`` (std ``noise_multiplier · max_grad_norm``), divides it by ``expected_count``
    (the expected number of groups here, of examples in ``fedecg.privacy.per_example``), runs
    the step hook (the ledger), then steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, noise_multiplier: float,
                 max_grad_norm: float, expected_count: int, generator: torch.Generator) -> None:
        self.original_optimizer = optimizer
        self.noise_multiplier = noise_multiplier
        self.max_grad_norm = max_grad_norm
        self.expected_count = expected_count
        self.generator = generator
        self.step_hook: StepHook | None = None

    @property
    def params(self) -> list[nn.Parameter]:
        """The wrapped optimizer's parameters that require gradients."""
        return [p for group in self.original_optimizer.param_groups for p in group["params"]
                if p.requires_grad]

    @property
    def param_groups(self) -> list[dict]:
        return self.original_optimizer.param_groups

    def attach_step_hook(self, hook: StepHook) -> None:
        self.step_hook = hook

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.original_optimizer.zero_grad(set_to_none)

    def add_noise(self) -> None:
        """``p.grad ← (p.grad + N(0, (σC)²)) / expected_count`` for every parameter (a missing
        grad is 0)."""
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            summed = p.grad if p.grad is not None else torch.zeros_like(p)
            noise = torch.normal(0.0, std, size=p.shape, generator=self.generator)
            p.grad = (summed + noise.to(p.device)) / self.expected_count

    def step(self) -> None:
        """Noise, scale, step hook, then the wrapped optimizer's step."""
        self.add_noise()
        if self.step_hook is not None:
            self.step_hook(self)
        self.original_optimizer.step()
