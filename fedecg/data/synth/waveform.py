"""Vectorized 12-lead synthesis: a moving heart dipole projected on the leads (ECGSYN-like).

Each wave of each beat is a Gaussian in time carried by a 3-D dipole direction
(x: left, y: inferior, z: anterior). Leads I, II and V1-V6 are projections of the dipole; III,
aVR, aVL and aVF are derived from I and II as an ECG cart does, so Einthoven's and Goldberger's
relations hold. Site hardware then adds noise, baseline wander and mains hum, and filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import signal, special

from fedecg.data.synth.sites import SiteProfile

FS = 500
SECONDS = 10
N_SAMPLES = FS * SECONDS
_PRECORDIAL_DEG = np.array([120.0, 100.0, 80.0, 60.0, 30.0, 5.0])
_INJURY = {"anterior": np.array([0.1, -0.1, 1.0]), "inferior": np.array([0.05, 1.0, -0.15]),
           "none": np.zeros(3)}
_P_VEC = np.array([np.cos(0.95), np.sin(0.95), 0.2])
_F_VEC = np.array([-0.2, 0.55, 0.8])
_LATERAL = np.array([1.0, -0.25, 0.3])  # I, aVL, V5-V6 (generator v2's ST-T changes)
_RIGHT_PRECORDIAL = np.array([-0.5, 0.1, 0.85])  # V1-V3 (and III)
_LEAD_III = np.array([-0.5, np.sqrt(3) / 2, 0.0])
_RIGHTWARD = np.array([-1.0, 0.0, 0.0])


def _lead_matrix(precordial_gain: float) -> np.ndarray:
    """Projection of the dipole on I, II, V1..V6 (8 x 3)."""
    theta = np.deg2rad(_PRECORDIAL_DEG)
    chest = 1.5 * precordial_gain * np.stack([np.cos(theta), np.full(6, 0.1), np.sin(theta)], 1)
    limb = np.array([[1.0, 0.0, 0.0], [0.5, np.sqrt(3) / 2, 0.0]])
    return np.vstack([limb, chest])


def _beat_onsets(rng: np.random.Generator, hr: float, cv: float, af: bool) -> np.ndarray:
    """QRS onset times (s) covering the 10 s window plus a beat before it."""
    rr_mean = 60.0 / hr
    n = int(SECONDS / rr_mean * 1.6) + 6
    if af:
        rr = rr_mean * np.exp(rng.normal(-cv * cv / 2, cv, n))
    else:
        phase = rng.uniform(0, 2 * np.pi)
        rr = rr_mean * (1 + cv * np.sin(phase + np.arange(n) * 2 * np.pi * rr_mean / 4.0)
                        + rng.normal(0, 0.01, n))
    rr = np.maximum(rr, 0.28)
    onsets = np.cumsum(rr) - rr_mean * 1.5 - rng.uniform(0, rr_mean)
    return onsets[onsets < SECONDS + 0.3]


def _vectors(m: Mapping[str, Any]) -> dict[str, np.ndarray]:
    alpha = np.deg2rad(m["axis_deg"])
    vec = {
        "septal": np.array([-0.45, 0.25, 0.85]),
        "main": np.array([np.cos(alpha), np.sin(alpha), -0.25]),
        "late": np.array([-0.55, -0.45, -0.7]),
        "terminal": np.zeros(3),
        "t": np.array([np.cos(alpha - 0.2), np.sin(alpha - 0.2), 0.35]),
    }
    if m["bbb"] == "rbbb":
        vec["terminal"] = np.array([-0.6, 0.0, 0.8])
        vec["t"] = vec["t"] - 0.4 * vec["terminal"]
    elif m["bbb"] == "lbbb":
        vec["septal"] = np.array([0.5, 0.0, -0.3])
        vec["main"] = np.array([np.cos(alpha), np.sin(alpha), -0.8])
        vec["terminal"] = np.array([0.7, 0.1, -0.6])
        vec["t"] = -0.8 * vec["terminal"] + np.array([0.0, 0.3, 0.0])
    return vec


def _literature_waves(m: Mapping[str, Any], d: float, t_peak: np.ndarray, s_t: float
                      ) -> list[tuple]:
    """Generator v2's waves (zero amplitude, so skipped, for a version 1 row): lateral and
    right precordial T inversion, and S1Q3T3 (S in I, Q and inverted T in III)."""
    s1q3t3 = float(m.get("s1q3t3", False))
    qs, ta = m["qrs_scale"], m["t_amp_mv"]
    return [
        (t_peak, 0.9 * s_t, m.get("lateral_stt_mv", 0.0), _LATERAL),
        (t_peak, 0.8 * s_t, m.get("rv_strain_mv", 0.0), _RIGHT_PRECORDIAL),
        (0.7 * d, 0.1 * d, 0.5 * qs * s1q3t3, _RIGHTWARD),
        (0.12 * d, 0.08 * d, 0.3 * qs * s1q3t3, -_LEAD_III),
        (t_peak, 0.75 * s_t, 0.6 * ta * s1q3t3, -_LEAD_III),
    ]


def _st_window(t: np.ndarray, j_point: np.ndarray, st_end: np.ndarray) -> np.ndarray:
    """1 over each beat's ST segment (J point to T end), 0 elsewhere, smooth edges."""
    return (special.expit((t[None] - j_point[:, None]) / 0.008)
            * special.expit((st_end[:, None] - t[None]) / 0.03)).sum(0)


def _components(m: Mapping[str, Any], onsets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centers, widths, amplitudes (beats x waves) and the waves' dipole vectors."""
    v = _vectors(m)
    d = m["qrs_ms"] / 1000.0
    rr = np.diff(onsets, append=onsets[-1] + 60.0 / m["hr_bpm"])
    qt = m["qt_ms"] / 1000.0 * (rr / (60.0 / m["hr_bpm"])) ** 0.35
    s_t = 0.05 * m["t_width"]
    t_peak = qt - 2.3 * s_t
    q_vec = -_INJURY[m["q_territory"]]
    inj = _INJURY[m["st_territory"]]
    qs, ta = m["qrs_scale"], m["t_amp_mv"]
    has_terminal = m["bbb"] != "none"
    waves = [  # (offset from QRS onset, sigma, amplitude, vector)
        (-m["pr_ms"] / 1000.0 + 0.05, 0.022, m["p_amp_mv"], _P_VEC),
        (0.15 * d, 0.08 * d, 0.25 * qs, v["septal"]),
        (0.45 * d, 0.12 * d, 1.25 * qs, v["main"]),
        (0.75 * d, 0.10 * d, 0.45 * qs, v["late"]),
        (0.8 * d, 0.14 * d, 0.6 * qs * has_terminal, v["terminal"]),
        (0.12 * d, 0.10 * d, 0.5 * qs, q_vec),
        (t_peak - 0.8 * s_t, 1.1 * s_t, 0.45 * ta, v["t"] + 0.5 * q_vec),
        (t_peak, 0.75 * s_t, 0.8 * ta, v["t"]),
        (t_peak, 1.2 * s_t, 0.6 * m["st_mv"], inj),
        (t_peak + 2.6 * s_t + 0.05, 0.035, m["u_amp_mv"], v["t"]),
        *_literature_waves(m, d, t_peak, s_t),
    ]
    centers = np.stack([onsets + np.broadcast_to(w[0], onsets.shape) for w in waves], 1)
    sigmas = np.array([w[1] for w in waves], dtype=float)
    amps = np.array([w[2] for w in waves], dtype=float)
    vecs = np.stack([w[3] for w in waves])
    return centers, sigmas, amps, vecs, onsets + d, onsets + t_peak + s_t


def _gaussians(centers: np.ndarray, sigmas: np.ndarray, amps: np.ndarray, vecs: np.ndarray,
               n: int) -> np.ndarray:
    """Sum of Gaussian waves (beats x waves) carried by their vectors, each evaluated only within
    4 sigma of its center; 3 x n."""
    dip = np.zeros((3, n))
    for w in np.flatnonzero(amps):
        half = int(np.ceil(4.0 * sigmas[w] * FS))
        idx = np.round(centers[:, w] * FS).astype(int)[:, None] + np.arange(-half, half + 1)
        z = (idx / FS - centers[:, w, None]) / sigmas[w]
        shape = np.exp(-0.5 * z * z)
        keep = (idx >= 0) & (idx < n)
        summed = np.bincount(idx[keep], weights=shape[keep], minlength=n)
        dip += np.outer(vecs[w] * amps[w], summed)
    return dip


def _dipole(m: Mapping[str, Any], rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """The heart dipole over time, 3 x T (mV)."""
    onsets = _beat_onsets(rng, m["hr_bpm"], m["rr_cv"], m["rhythm"] == "af")
    centers, sigmas, amps, vecs, j_point, st_end = _components(m, onsets)
    if m["rhythm"] == "af":
        amps[0] = 0.0
    dip = _gaussians(centers, sigmas, amps, vecs, t.size)
    if m["st_mv"] != 0:
        dip += np.outer(_INJURY[m["st_territory"]] * m["st_mv"], _st_window(t, j_point, st_end))
    if m.get("lateral_stt_mv", 0.0) != 0:
        dip += np.outer(_LATERAL * 0.4 * m["lateral_stt_mv"], _st_window(t, j_point, st_end))
    if m["f_wave_mv"] > 0:
        freqs = rng.uniform(4.5, 7.5, 3)
        walk = np.cumsum(rng.normal(0, 0.02, (3, t.size)), axis=1)
        fib = (np.sin(2 * np.pi * freqs[:, None] * t + rng.uniform(0, 6.3, (3, 1)) + walk)
               * rng.uniform(0.4, 1.0, (3, 1))).sum(0) / 1.5
        dip += np.outer(_F_VEC * m["f_wave_mv"], fib)
    return dip


@lru_cache(maxsize=32)
def _filters(highpass: float, lowpass: float, notch: float | None) -> tuple:
    sos = []
    if highpass >= 0.05:
        sos.append(signal.butter(2, highpass, "highpass", fs=FS, output="sos"))
    if lowpass < 0.45 * FS:
        sos.append(signal.butter(4, lowpass, "lowpass", fs=FS, output="sos"))
    notch_ba = signal.iirnotch(notch, 30.0, fs=FS) if notch else None
    return (np.vstack(sos) if sos else None), notch_ba


def _acquire(leads8: np.ndarray, site: SiteProfile, rng: np.random.Generator,
             t: np.ndarray) -> np.ndarray:
    """Add the site's noise, wander and mains hum to I, II, V1-V6, then filter as its cart does."""
    k = leads8.shape[0]
    noisy = leads8 + rng.normal(0.0, site.noise_mv, leads8.shape)
    freqs = rng.uniform(0.05, 0.45, (k, 2, 1))
    amps = site.wander_mv * rng.uniform(0.2, 1.0, (k, 2, 1))
    noisy += (amps * np.sin(2 * np.pi * freqs * t + rng.uniform(0, 6.3, (k, 2, 1)))).sum(1)
    if site.powerline_mv > 0:
        noisy += (site.powerline_mv * rng.uniform(0.3, 1.0, (k, 1))
                  * np.sin(2 * np.pi * 60.0 * t + rng.uniform(0, 6.3, (k, 1))))
    sos, notch = _filters(site.highpass_hz, site.lowpass_hz, site.notch_hz)
    if sos is not None:
        noisy = signal.sosfiltfilt(sos, noisy, axis=-1)
    if notch is not None:
        noisy = signal.filtfilt(*notch, noisy, axis=-1)
    return noisy


def _nan_runs(sig: np.ndarray, rng: np.random.Generator) -> int:
    """Blank 1-3 short runs of samples (in place), as some MIMIC records have; returns the count."""
    runs = int(rng.integers(1, 4))
    for _ in range(runs):
        lead = int(rng.integers(0, sig.shape[0]))
        length = int(rng.integers(10, 250))
        start = 0 if rng.random() < 0.5 else int(rng.integers(0, sig.shape[1] - length))
        sig[lead, start:start + length] = np.nan
    return runs


def synthesize_record(m: Mapping[str, Any], site: SiteProfile, rng: np.random.Generator,
                      nan_runs: bool = True) -> tuple[np.ndarray, int]:
    """A 12 x 5000 signal (mV, MIMIC lead order) for morphology row ``m``, and its NaN-run count.

    ``m`` holds the ``MORPHOLOGY_COLUMNS`` plus ``precordial_gain``, and from generator
    version 2 the ``LITERATURE_COLUMNS``.
    """
    t = np.arange(N_SAMPLES) / FS
    dip = _dipole(m, rng, t)
    leads8 = _acquire(_lead_matrix(m["precordial_gain"]) @ dip, site, rng, t)
    one, two, chest = leads8[0], leads8[1], leads8[2:]
    limb = np.stack([one, two, two - one, -(one + two) / 2, two - one / 2, one - two / 2])
    sig = np.vstack([limb, chest])  # I, II, III, aVR, aVF, aVL, V1..V6
    count = _nan_runs(sig, rng) if nan_runs and rng.random() < site.nan_rate else 0
    return sig, count
