"""A small typed WFDB reader and the waveform preprocessing of the store.

``read_ecg`` checks what wfdb leaves unchecked: the header must state the sampling rate
(wfdb silently assumes 250 Hz) and it must be a finite rate within ``FS_RANGE_HZ``, units must be
mV or µV, the 12 standard leads must be present (any order, any case), no lead may be all NaN,
and the signal file must hold every sample the header announces. ``quality_problem`` says why a
readable record is still no usable ECG (a flat line, or too little signal before trailing zero
padding); ``prepare`` rejects such records and ``predict`` warns.

Single-file format-16 records (MIMIC-IV-ECG, PTB-XL) are read directly with numpy, which is
~40x faster than ``wfdb.rdrecord``; anything else (``.mat``, other formats) goes through wfdb.
``resample`` computes scipy's ``resample_poly`` as block matrix products: reading, checking and
preprocessing a record takes about an eighth of what ``wfdb.rdrecord`` takes to read it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import firwin

from fedecg.data.leads import lead_permutation
from fedecg.errors import RecordError

UNIT_SCALE = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3}
"""Factor from each accepted unit (lower case) to mV."""
INVALID_16 = -32768
FS_RANGE_HZ = (50.0, 10_000.0)
"""Sampling rates accepted in a header (ECG recorders use 100 Hz to a few kHz)."""
FLAT_MV = 0.01
"""A lead whose peak-to-peak amplitude is below this (mV) carries no ECG."""


@dataclass(frozen=True)
class SignalSpec:
    """One signal line of a WFDB header."""

    file: str
    fmt: str
    gain: float
    baseline: int
    units: str
    name: str


@dataclass(frozen=True)
class Header:
    """The parts of a WFDB header that fedecg checks."""

    fs: float
    sig_len: int | None
    signals: tuple[SignalSpec, ...]


@dataclass(frozen=True)
class EcgRecord:
    """A 12-lead ECG in mV, leads in ``CANONICAL_LEADS`` order (NaN where samples are invalid)."""

    signal: np.ndarray  # [12, T] float32, mV
    fs: float
    path: Path


def _record_base(path: Path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".hea", ".dat", ".mat") else path


def read_header(path: Path) -> Header:
    """Parse the ``.hea`` of record ``path`` (with or without extension)."""
    hea = _record_base(path).with_name(_record_base(path).name + ".hea")
    try:
        lines = [ln.strip() for ln in hea.read_text(errors="replace").splitlines()]
    except FileNotFoundError:
        raise RecordError(f"{hea}: header file not found; expected a WFDB record "
                          f"{_record_base(path)} (.hea plus its signal file)") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise RecordError(f"{hea}: empty header; expected a WFDB record line")
    fields = lines[0].split()
    if len(fields) < 3:
        raise RecordError(f"{hea}: the record line {lines[0]!r} gives no sampling rate; wfdb "
                          "would assume 250 Hz silently. Add the rate, e.g. 'NAME 12 500 5000'")
    try:
        n_signals = int(fields[1])
        fs = float(fields[2].split("/")[0].split("(")[0])
        sig_len = int(fields[3]) if len(fields) > 3 else None
        signals = tuple(_signal_spec(ln) for ln in lines[1:1 + n_signals])
    except (ValueError, IndexError) as exc:
        raise RecordError(f"{hea}: malformed header ({exc}); expected WFDB header syntax") from None
    if len(signals) != n_signals:
        raise RecordError(f"{hea}: header announces {n_signals} signals but lists "
                          f"{len(signals)}; expected one line per signal")
    low, high = FS_RANGE_HZ
    if not (math.isfinite(fs) and low <= fs <= high):
        raise RecordError(f"{hea}: sampling rate {fields[2]!r} Hz in the record line; expected "
                          f"a number from {low:g} to {high:g} Hz. Fix the header's rate")
    return Header(fs=fs, sig_len=sig_len, signals=signals)


def _signal_spec(line: str) -> SignalSpec:
    parts = line.split(maxsplit=8)
    gain_text = parts[2] if len(parts) > 2 else "200"
    gain_part, _, units = gain_text.partition("/")
    gain_value, _, base = gain_part.partition("(")
    adc_zero = int(parts[4]) if len(parts) > 4 else 0
    gain = float(gain_value) or 200.0
    return SignalSpec(file=parts[0], fmt=parts[1], gain=gain,
                      baseline=int(base.rstrip(")")) if base else adc_zero,
                      units=units or "mV", name=parts[8].strip() if len(parts) > 8 else "")


def read_ecg(path: Path) -> EcgRecord:
    """Read record ``path`` as a checked ``EcgRecord`` (raises ``RecordError`` naming the path)."""
    base = _record_base(path)
    header = read_header(base)
    names = [spec.name for spec in header.signals]
    order = lead_permutation(names, str(base))
    scale = np.array([_unit_scale(header.signals[i], base) for i in order], dtype=np.float32)
    if _fast_path(header):
        signal = _read_fast(base, header, order)
    else:
        signal = _read_wfdb(base, header)[:, order].T.astype(np.float32)
    if (scale != 1).any():
        signal *= scale[:, None]
    maybe_dead = np.flatnonzero(np.isnan(signal[:, :1]).all(axis=1))  # NaN first sample
    dead = [names[order[i]] for i in maybe_dead if np.isnan(signal[i]).all()]
    if dead:
        raise RecordError(f"{base}: lead(s) {dead} hold no valid sample (all NaN); expected "
                          "signal in every standard lead")
    return EcgRecord(signal=signal, fs=header.fs, path=base)


def _unit_scale(spec: SignalSpec, base: Path) -> float:
    scale = UNIT_SCALE.get(spec.units.lower())
    if scale is None:
        raise RecordError(f"{base}: lead {spec.name!r} has units {spec.units!r}; expected mV "
                          "or uV (µV)")
    return scale


def _fast_path(header: Header) -> bool:
    files = {spec.file for spec in header.signals}
    return (len(files) == 1 and next(iter(files)).endswith(".dat")
            and all(spec.fmt == "16" for spec in header.signals))


def _read_fast(base: Path, header: Header, order: list[int]) -> np.ndarray:
    """The signals of ``order`` in mV before unit scaling, ``[len(order), T]`` float32, read
    from the single format-16 file with numpy (NaN where a sample is the invalid value)."""
    dat = base.parent / header.signals[0].file
    n_signals = len(header.signals)
    try:
        data = dat.read_bytes()  # with np.frombuffer, faster than np.fromfile
    except (FileNotFoundError, IsADirectoryError):
        raise RecordError(f"{dat}: signal file not found (named in {base}.hea)") from None
    digital = np.frombuffer(data, dtype="<i2", count=len(data) // 2)  # an odd byte: truncated
    expected = header.sig_len * n_signals if header.sig_len is not None else None
    if digital.size % n_signals or (expected is not None and digital.size < expected):
        raise RecordError(f"{dat}: truncated or corrupt: {digital.size} samples for "
                          f"{n_signals} leads; the header announces {expected}")
    frames = digital[:expected].reshape(-1, n_signals)[:, order]
    physical = np.empty(frames.T.shape, dtype=np.float32)  # [12, T] in C order
    np.copyto(physical, frames.T)
    specs = [header.signals[i] for i in order]
    physical -= np.array([[s.baseline] for s in specs], dtype=np.float32)
    physical /= np.array([[s.gain] for s in specs], dtype=np.float32)
    invalid = frames.T == INVALID_16
    if invalid.any():
        physical[invalid] = np.nan
    return physical


def _read_wfdb(base: Path, header: Header) -> np.ndarray:
    try:
        record = wfdb.rdrecord(str(base), physical=True, return_res=32)
    except Exception as exc:  # wfdb raises many kinds; all mean this record is unreadable
        raise RecordError(f"{base}: unreadable by wfdb ({type(exc).__name__}: {exc}); "
                          "the signal file may be truncated or corrupt") from None
    signal = record.p_signal
    if signal is None or (header.sig_len is not None and signal.shape[0] != header.sig_len):
        got = None if signal is None else signal.shape[0]
        raise RecordError(f"{base}: truncated or corrupt: {got} samples per lead; the header "
                          f"announces {header.sig_len}")
    return signal


def recorded_seconds(record: EcgRecord) -> float:
    """Seconds of ``record`` before a trailing run of exact zeros in every lead (padding)."""
    nonzero = np.flatnonzero((record.signal != 0).any(axis=0))  # NaN counts as non-zero
    return (int(nonzero[-1]) + 1 if len(nonzero) else 0) / record.fs


def quality_problem(record: EcgRecord, min_seconds: float) -> str | None:
    """Why ``record`` is no usable ECG, or None.

    Every lead flat (peak-to-peak below ``FLAT_MV``) is a flat line; fewer than ``min_seconds``
    before trailing zero padding (or in the whole record) would leave mostly padding.
    """
    span = np.nanmax(record.signal, axis=1) - np.nanmin(record.signal, axis=1)
    if (span < FLAT_MV).all():
        return (f"flat line: every lead varies by less than {FLAT_MV:g} mV (largest "
                f"{span.max():.3g} mV); expected a recorded ECG. Check the electrodes or the "
                "export")
    seconds, total = recorded_seconds(record), record.signal.shape[-1] / record.fs
    if seconds < min_seconds:
        padded = f", then {total - seconds:.1f} s of zeros in every lead" if seconds < total else ""
        return (f"only {seconds:.1f} s of signal{padded}; expected at least {min_seconds:g} s, "
                "or most of the ECG would be zero padding")
    return None


@dataclass(frozen=True)
class BlockFilter:
    """``resample_poly``'s filter as one matrix per input chunk: output block ``b`` (``block``
    samples) is ``sum_q chunk[b + q] @ weights[q]`` over chunks of ``chunk`` input samples,
    the input shifted right by ``pad`` zeros."""

    weights: np.ndarray  # [n_chunks, chunk, block] float64
    pad: int


@functools.lru_cache(maxsize=8)
def _block_filter(up: int, down: int) -> BlockFilter:
    """Output ``n`` is ``sum_j x[j] * taps[n * down - j * up + half]`` (what ``resample_poly``
    computes with zero padding); blocks of ``m * up`` outputs read chunks of ``m * down``
    inputs through the same matrix, ``m`` chosen so a chunk spans about half the filter."""
    rate = max(up, down)  # resample_poly's default filter:
    taps = up * firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))
    half = (len(taps) - 1) // 2
    m = max(1, round(len(taps) / (2 * up * down)))
    chunk, block, pad = m * down, m * up, -(-half // up)
    span = pad + ((block - 1) * down + half) // up + 1  # input samples one block reads
    inputs = np.arange(-(-span // chunk) * chunk)[:, None]
    tap = np.arange(block)[None, :] * down - (inputs - pad) * up + half
    weights = np.where((tap >= 0) & (tap < len(taps)), taps[np.clip(tap, 0, len(taps) - 1)], 0.0)
    return BlockFilter(weights.reshape(-1, chunk, block), pad)


def resample(signal: np.ndarray, up: int, down: int) -> np.ndarray:
    """``[leads, T]`` resampled by ``up / down`` along time, float64: equal (to float64
    rounding) to ``scipy.signal.resample_poly`` with its default filter, ~5x faster for 12
    leads as a few matrix products instead of one filter loop per output sample."""
    blocks = _block_filter(up, down)
    n_chunks, chunk, block = blocks.weights.shape
    leads, n_in = signal.shape
    n_out = -(-n_in * up // down)
    n_blocks = -(-n_out // block)
    total = max(n_blocks + n_chunks - 1, -(-(blocks.pad + n_in) // chunk))
    padded = np.zeros((leads, total * chunk))
    padded[:, blocks.pad:blocks.pad + n_in] = signal
    rows = padded.reshape(leads * total, chunk)
    out = np.zeros((leads, n_blocks, block))
    for q, weights in enumerate(blocks.weights):
        out += (rows @ weights).reshape(leads, total, block)[:, q:q + n_blocks]
    return out.reshape(leads, -1)[:, :n_out]


def resample_factors(fs_in: float, fs_out: float) -> tuple[int, int]:
    """Up/down factors of ``resample_poly`` from ``fs_in`` to ``fs_out``."""
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return ratio.numerator, ratio.denominator


def interpolate_nan(signal: np.ndarray) -> np.ndarray:
    """Fill NaN runs of each lead linearly (edges take the nearest valid sample)."""
    holes = np.isnan(signal)
    if not holes.any():
        return signal
    signal = signal.copy()
    positions = np.arange(signal.shape[-1])
    for lead in np.flatnonzero(holes.any(axis=-1)):
        ok = ~holes[lead]
        signal[lead, ~ok] = np.interp(positions[~ok], positions[ok], signal[lead, ok])
    return signal


def preprocess(record: EcgRecord, fs_out: float, clip_mv: float, n_samples: int) -> np.ndarray:
    """``[12, n_samples]`` float32: NaN runs interpolated, resampled to ``fs_out``, clipped to
    ±``clip_mv``, then trimmed (end) or zero-padded (end) to ``n_samples``."""
    signal = interpolate_nan(record.signal)
    up, down = resample_factors(record.fs, fs_out)
    if up != down:
        signal = resample(signal, up, down).astype(np.float32)
    np.clip(signal, -clip_mv, clip_mv, out=signal)
    out = np.zeros((signal.shape[0], n_samples), dtype=np.float32)
    keep = min(n_samples, signal.shape[-1])
    out[:, :keep] = signal[:, :keep]
    return out
