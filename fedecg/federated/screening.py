"""What the server checks in a site's reply before it counts, and what a site's error may say.

A reply is aggregated only when it passes every check here; otherwise it is *rejected*, logged
with the node id and the reason, and the round goes on with the others (``StageRounds``).

* ``screen_update``: a train reply carries the site record and exactly the keys, shapes and
  finite values of the global arrays it was sent.
* ``screen_examples``: ``num-examples`` (and ``val-num-examples``, which weights the sites'
  validation loss when the server selects a round) is a whole, finite count between 0 and the
  number of ECGs the site declared the first time the server heard from it (so a site cannot
  inflate its weight in the average after it joined). A site with no labelled rows for a stage
  sends 0 and carries no weight.
* ``screen_scores``: an evaluate reply's metrics are numbers, AUROCs within [0, 1], losses
  non-negative (NaN is allowed: a label without both classes has no AUROC).
* ``screen_final``: a site's final test report has counts within what it declared and every
  AUROC/AUPRC (and CI bound) within [0, 1], so it cannot dominate the combined test figure.
* ``norm_outliers``: an update whose distance from the global model is more than
  ``ratio`` times the round's median distance is rejected (needs three or more updates to bite:
  with two, neither can exceed twice their median).
* ``redact_paths``: a site's error text in one line, file paths cut to their last component,
  so nothing of a hospital's file system travels to the server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, Message

from fedecg.federated import keys

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"():,;]+)+[\\/]?")
_BOUNDS = {keys.DIAGNOSIS_AUROC: (0.0, 1.0), keys.LAB_AUROC: (0.0, 1.0),
           keys.LOSS: (0.0, math.inf)}
_SCORE_BOUNDS = {**_BOUNDS, **{keys.VAL_PREFIX + key: bounds for key, bounds in _BOUNDS.items()}}


def redact_paths(text: str) -> str:
    """``text`` in one line with every file path replaced by ``…/<its last component>``."""
    def last(match: re.Match[str]) -> str:
        parts = [p for p in re.split(r"[\\/]", match.group(0)) if p]
        return f"…/{parts[-1]}" if parts else match.group(0)

    return " ".join(_PATH.sub(last, str(text)).split())


def declared_ecgs(reply: Message) -> int | None:
    """The number of ECGs a reply's site declares it holds (None if it declares none)."""
    site = reply.content.config_records.get(keys.SITE)
    value = None if site is None else site.get(keys.SITE_ECGS)
    return int(value) if isinstance(value, int) and value >= 0 else None


def screen_examples(reply: Message, declared: int | None) -> str | None:
    """Why a reply's ``num-examples`` (and an evaluate reply's ``val-num-examples``) cannot be
    trusted (None when they can)."""
    metrics = reply.content.metric_records.get(keys.METRICS, {})
    for key in (keys.NUM_EXAMPLES, keys.VAL_PREFIX + keys.NUM_EXAMPLES):
        if key not in metrics and key != keys.NUM_EXAMPLES:
            continue
        examples = metrics.get(key)
        if (not isinstance(examples, int | float) or not np.isfinite(examples) or examples < 0
                or float(examples) != int(examples)):
            return f"{key} is {examples!r}, expected a whole count >= 0"
        if declared is None:
            return f"the reply declares no number of ECGs ({keys.SITE}.{keys.SITE_ECGS})"
        if examples > declared:
            return (f"{key} is {examples:g}, more than the {declared} ECGs the site declared "
                    "when it joined")
    return None


def screen_update(reply: Message, sent: ArrayRecord) -> str | None:
    """Why a train reply's parameters cannot be aggregated (None when they can): exactly the
    keys and shapes of ``sent`` (the round's global arrays), with finite numbers."""
    content = reply.content
    if keys.ARRAYS not in content.array_records:
        return "the reply carries no parameters"
    arrays = content.array_records[keys.ARRAYS]
    missing, extra = sorted(set(sent) - set(arrays)), sorted(set(arrays) - set(sent))
    if missing or extra:
        return f"parameter keys differ from the global model: missing {missing[:4]} " \
               f"({len(missing)}), unexpected {extra[:4]} ({len(extra)})"
    for key, array in arrays.items():
        if tuple(array.shape) != tuple(sent[key].shape):
            return f"parameter {key!r} has shape {tuple(array.shape)}, the global model " \
                   f"{tuple(sent[key].shape)}"
        values = array.numpy()
        if not np.issubdtype(values.dtype, np.number):
            return f"parameter {key!r} has dtype {values.dtype}, expected numbers"
        bad = int(values.size - np.isfinite(values).sum())
        if bad:
            return f"parameter {key!r} has {bad} non-finite value(s) (NaN/Inf)"
    return None


def screen_scores(reply: Message) -> str | None:
    """Why an evaluate reply's scores cannot be used (None when they can)."""
    metrics = reply.content.metric_records.get(keys.METRICS, {})
    for key, (low, high) in _SCORE_BOUNDS.items():
        value = metrics.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if not isinstance(value, int | float) or not low <= value <= high:
            return f"{key} is {value!r}, expected a number in [{low:g}, {high:g}] or NaN"
    return None


def screen_final(metrics: Mapping[str, float], declared: int | None,
                 counts: tuple[str, ...]) -> str | None:
    """Why a site's final test report cannot be combined (None when it can): ``counts`` whole
    and at most ``declared``; every AUROC/AUPRC value and CI bound NaN or in [0, 1]."""
    if declared is None:
        return f"the reply declares no number of ECGs ({keys.SITE}.{keys.SITE_ECGS})"
    for name, value in metrics.items():
        base = name.rsplit("/", 1)[0].removesuffix(".low").removesuffix(".high")
        if not isinstance(value, int | float):
            return f"{name} is {value!r}, expected a number"
        if base.split(":")[-1] in counts and (not np.isfinite(value) or value < 0
                                              or value != int(value) or value > declared):
            return f"{name} is {value!r}, expected a whole count <= the {declared} ECGs " \
                   "the site declared"
        if (("auroc" in base or "auprc" in base) and np.isfinite(value)
                and not 0.0 <= value <= 1.0):
            return f"{name} is {value!r}, expected a score in [0, 1] or NaN"
    return None


def update_distance(arrays: ArrayRecord, sent: ArrayRecord) -> float:
    """The Euclidean distance between a site's parameters and the global ones it was sent."""
    total = 0.0
    for key, array in arrays.items():
        delta = array.numpy().astype(np.float64) - sent[key].numpy().astype(np.float64)
        total += float(np.square(delta).sum())
    return math.sqrt(total)


def norm_outliers(distances: Mapping[int, float], ratio: float | None) -> dict[int, str]:
    """``{node: reason}`` for the updates more than ``ratio`` × the median distance away."""
    if ratio is None or len(distances) < 2:
        return {}
    median = float(np.median(list(distances.values())))
    if median <= 0:
        return {}
    return {node: f"update norm {distance:.3g} is {distance / median:.1f}× the round's median "
                  f"{median:.3g} (limit federation.max_update_norm_ratio={ratio:g})"
            for node, distance in distances.items() if distance > ratio * median}
