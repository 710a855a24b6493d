"""Which events lie near an ECG of the same patient: what is worth keeping of a big table.

Linking takes, per ECG, the nearest event within a window; an event further than the window
from every ECG of its patient can never be taken, so a reader may drop it while reading.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


class EcgWindows:
    """The ±``hours`` windows around the timed ECGs of ``ecgs`` (``subject_id``, ``ecg_time``).

    ``contains`` is a superset test, exact to a second or two: it may keep an event just
    outside a window (linking then leaves it out), never drop one inside.
    """

    def __init__(self, ecgs: pd.DataFrame, hours: float) -> None:
        timed = ecgs[ecgs["ecg_time"].notna()]
        self.margin = math.ceil(hours * 3600) + 2  # seconds: the window and the rounding
        self.subjects = np.unique(timed["subject_id"].to_numpy(dtype=np.int64))
        seconds = _seconds(timed["ecg_time"])
        self.base = int(seconds.min(initial=0)) - self.margin
        self.span = int(seconds.max(initial=0)) - self.base + self.margin + 1
        codes = np.searchsorted(self.subjects, timed["subject_id"].to_numpy(dtype=np.int64))
        self.keys = np.sort(codes * self.span + (seconds - self.base))

    def contains(self, subjects: pd.Series, times: pd.Series) -> np.ndarray:
        """Whether each ``(subject, time)`` is within the window of an ECG of that subject."""
        if not len(self.keys):
            return np.zeros(len(subjects), dtype=bool)
        subject = subjects.to_numpy(dtype=np.int64)
        code = np.minimum(np.searchsorted(self.subjects, subject), len(self.subjects) - 1)
        offset = _seconds(times) - self.base
        inside = (self.subjects[code] == subject) & (offset >= 0) & (offset < self.span)
        key = code * self.span + offset
        after = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        before = np.maximum(after - 1, 0)
        gap = np.minimum(np.abs(self.keys[before] - key), np.abs(self.keys[after] - key))
        return inside & (gap <= self.margin)


def _seconds(times: pd.Series) -> np.ndarray:
    """Whole seconds since the epoch of each time (NaT: never asked)."""
    return times.to_numpy(dtype="datetime64[us]").astype("datetime64[s]").astype(np.int64)
