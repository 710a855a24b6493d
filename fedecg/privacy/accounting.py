"""Privacy accounting: one cumulative ledger per site, noise calibration, and the budget check.

A ``Ledger`` holds the accountant's history ``[(noise_multiplier, sample_rate, steps), ...]``
exactly as Opacus's accountants keep it (consecutive steps with the same noise and rate are
merged), plus δ and the accountant's name. ε is computed from the whole history by Opacus
(``rdp`` or ``prv``), so it is cumulative over every round and stage of a run. The ledger
round-trips through a flat dict (``to_record`` / ``from_record``) that fits a Flower
``ConfigRecord`` (``context.state``) and a checkpoint, so a resumed run continues it.

``calibrate_noise`` picks the smallest noise multiplier for which a site's whole planned
training (``PrivacyPlan``: every DP stage's rounds × local steps at its sampling rate) spends at
most the target ε; ``affordable_steps`` is the per-round budget check.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from fedecg.errors import PrivacyError

Entry = tuple[float, float, int]
"""One accountant history entry: (noise multiplier, sample rate, steps)."""

CALIBRATION_ITERATIONS = 40


def sample_rate(n_examples: int, batch_size: int) -> float:
    """Poisson sampling rate ``batch_size / n_examples`` (1 when the batch covers everything)."""
    if n_examples < 1:
        raise PrivacyError(f"n_examples {n_examples}: a DP stage needs at least one example")
    return min(1.0, batch_size / n_examples)


@lru_cache(maxsize=4096)
def _rdp_per_step(noise: float, rate: float) -> np.ndarray:
    """Opacus's RDP of one subsampled Gaussian step at its default orders (cached)."""
    rdp = compute_rdp(q=rate, noise_multiplier=noise, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS)
    rdp.setflags(write=False)
    return rdp


def epsilon_of(history: Sequence[Entry], delta: float, accountant: str = "rdp") -> float:
    """ε spent by ``history`` at ``delta``, as Opacus's ``accountant`` computes it.

    For ``rdp`` this is ``RDPAccountant.get_epsilon`` term for term (RDP is linear in steps,
    so each (noise, rate)'s per-step RDP is computed once and cached); ``prv`` asks Opacus.
    """
    entries = [(float(s), float(q), int(k)) for s, q, k in history if k > 0]
    if not entries:
        return 0.0
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a valid bound still
        warnings.simplefilter("ignore")
        if accountant != "rdp":
            engine = create_accountant(mechanism=accountant)
            engine.history = entries
            return float(engine.get_epsilon(delta=delta))
        rdp = sum(_rdp_per_step(s, q) * k for s, q, k in entries)
        epsilon, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
        return float(epsilon)


def merged(history: Sequence[Entry], entry: Entry) -> list[Entry]:
    """``history`` followed by ``entry``, merged into the last entry as Opacus does."""
    result = list(history)
    noise, rate, steps = entry
    if steps <= 0:
        return result
    if result and result[-1][0] == noise and result[-1][1] == rate:
        result[-1] = (noise, rate, result[-1][2] + steps)
    else:
        result.append((float(noise), float(rate), int(steps)))
    return result


@dataclass
class Ledger:
    """A site's cumulative privacy spending (what lives in ``context.state`` and checkpoints)."""

    delta: float
    accountant: str = "rdp"
    history: list[Entry] = field(default_factory=list)

    def step(self, noise_multiplier: float, rate: float, steps: int = 1) -> None:
        """Record ``steps`` DP-SGD steps taken with ``noise_multiplier`` at ``rate``."""
        self.history = merged(self.history, (noise_multiplier, rate, steps))

    @property
    def steps(self) -> int:
        """Total DP steps recorded."""
        return sum(steps for _, _, steps in self.history)

    def epsilon(self) -> float:
        """ε spent so far at this ledger's δ."""
        return epsilon_of(self.history, self.delta, self.accountant)

    def to_record(self) -> dict[str, Any]:
        """A flat dict of floats, ints, strings and their lists (a Flower ``ConfigRecord``)."""
        return {"noise": [float(s) for s, _, _ in self.history],
                "rate": [float(q) for _, q, _ in self.history],
                "steps": [int(k) for _, _, k in self.history],
                "delta": float(self.delta), "accountant": self.accountant}

    @classmethod
    def from_record(cls, record: Mapping[str, Any], source: str = "privacy ledger") -> Ledger:
        """Rebuild a ledger from ``to_record``'s dict; ``source`` names where it came from."""
        try:
            noise, rate, steps = (list(record[key]) for key in ("noise", "rate", "steps"))
            delta, accountant = float(record["delta"]), str(record["accountant"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyError(f"{source}: not a privacy ledger ({exc!r}); expected keys noise, "
                               "rate, steps, delta, accountant. Do not edit saved state; "
                               "restart the run if it is damaged") from None
        if not len(noise) == len(rate) == len(steps):
            raise PrivacyError(f"{source}: noise, rate and steps have lengths {len(noise)}, "
                               f"{len(rate)}, {len(steps)}; expected equal lengths")
        history = [(float(s), float(q), int(k)) for s, q, k in zip(noise, rate, steps, strict=True)]
        return cls(delta=delta, accountant=accountant, history=history)


@dataclass(frozen=True)
class StagePlan:
    """One DP stage of a site's planned training."""

    stage: str
    n_examples: int
    batch_size: int
    rounds: int
    steps_per_round: int

    @property
    def sample_rate(self) -> float:
        """Poisson sampling rate of this stage's batches."""
        return sample_rate(self.n_examples, self.batch_size)

    @property
    def steps(self) -> int:
        """Planned DP-SGD steps of this stage over all its rounds."""
        return self.rounds * self.steps_per_round


def plan_stage(stage: str, n_examples: int, batch_size: int, rounds: int, local_epochs: int = 1,
               local_steps: int | None = None) -> StagePlan:
    """Plan a stage: ``local_epochs`` Poisson epochs per round (``int(1/q)`` batches each, as
    Opacus's sampler draws), capped at ``local_steps``; no steps when the site has no rows."""
    if n_examples < 1:
        return StagePlan(stage, 0, batch_size, rounds, 0)
    per_epoch = int(1.0 / sample_rate(n_examples, batch_size))
    per_round = local_epochs * per_epoch
    if local_steps is not None:
        per_round = min(per_round, local_steps)
    return StagePlan(stage, n_examples, batch_size, rounds, per_round)


@dataclass(frozen=True)
class PrivacyPlan:
    """A site's whole planned DP training: its stages, and its training records (δ's n)."""

    stages: tuple[StagePlan, ...]
    n_records: int
    site: str = "site"

    def history(self, noise_multiplier: float) -> list[Entry]:
        """The ledger history the plan produces when run to the end."""
        result: list[Entry] = []
        for stage in self.stages:
            if stage.steps > 0:
                result = merged(result, (noise_multiplier, stage.sample_rate, stage.steps))
        return result

    def describe(self) -> str:
        """``pretrain: 30 steps at q=0.1, ...`` for messages."""
        return ", ".join(f"{s.stage}: {s.steps} steps at q={s.sample_rate:.3g}"
                         for s in self.stages if s.steps > 0) or "no DP steps"


def check_delta(delta: float, n_units: int, where: str) -> None:
    """Refuse δ ≥ 1/n: such a δ allows releasing a whole unit's data outright."""
    if not 0 < delta < 1.0 / max(n_units, 1):
        raise PrivacyError(
            f"{where}: delta {delta:g} with {n_units} protected unit(s); expected "
            f"0 < delta < 1/{n_units} = {1.0 / max(n_units, 1):.3g} (a delta of 1/n or more "
            "lets a mechanism publish one unit's data outright). Lower privacy.delta or leave "
            "it unset for the default 0.1/n rounded down to a power of ten")


def calibrate_noise(plan: PrivacyPlan, target_epsilon: float, delta: float,
                    accountant: str = "rdp", max_noise_multiplier: float = 10.0) -> float:
    """Smallest noise multiplier (to 0.1%) with which ``plan`` spends at most ``target_epsilon``.

    Raises ``PrivacyError`` when δ ≥ 1/n, or when even ``max_noise_multiplier`` spends more
    than the target (the message gives the smallest reachable ε and what to change).
    """
    where = f"site {plan.site}"
    check_delta(delta, plan.n_records, where)
    if not math.isfinite(target_epsilon) or target_epsilon <= 0:
        raise PrivacyError(f"{where}: target epsilon {target_epsilon}; expected a finite "
                           "positive number (infinity means no DP: set privacy.mode none)")
    if not plan.history(1.0):
        return max_noise_multiplier  # nothing private runs at this site: any noise is safe

    def spent(noise: float) -> float:
        return epsilon_of(plan.history(noise), delta, accountant)

    smallest = spent(max_noise_multiplier)
    if smallest > target_epsilon:
        raise PrivacyError(
            f"{where}: target epsilon {target_epsilon:g} at delta {delta:g} is unreachable. "
            f"Even the largest allowed noise multiplier {max_noise_multiplier:g} spends "
            f"epsilon {smallest:.4g} over the planned training ({plan.describe()}; "
            f"{plan.n_records} protected units), so the smallest reachable epsilon is "
            f"{smallest:.4g}. Raise privacy.target_epsilon to at least {smallest:.4g}, or plan "
            "fewer rounds or local steps, give the site more examples (a lower sampling rate), "
            "or raise privacy.sample.max_noise_multiplier")
    low, high = 0.0, max_noise_multiplier
    for _ in range(CALIBRATION_ITERATIONS):
        middle = 0.5 * (low + high)
        if spent(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
        if high - low <= 1e-3 * high:
            break
    return high


def affordable_steps(ledger: Ledger, noise_multiplier: float, rate: float, planned: int,
                     target_epsilon: float) -> int:
    """How many of the ``planned`` next steps keep ``ledger`` within ``target_epsilon``.

    ``planned`` when the whole round fits, 0 when the site must stop training (it keeps
    evaluating), and in between for a last, shortened round.
    """
    def fits(steps: int) -> bool:
        history = merged(ledger.history, (noise_multiplier, rate, steps))
        return epsilon_of(history, ledger.delta, ledger.accountant) <= target_epsilon

    if planned <= 0 or not fits(1):
        return 0
    if fits(planned):
        return planned
    low, high = 1, planned  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low
