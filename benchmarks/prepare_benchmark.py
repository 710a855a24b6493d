"""Benchmark of ``fedecg prepare`` and of reading a store (JSON out; not a timed test).

Measures, on synthetic-twin data (500 Hz, 10 s, format 16, MIMIC-IV-ECG v1.0 layout):

* prepare throughput: end to end and for the waveform stage alone, in ECG/s on one core;
* per-record speed against ``wfdb.rdrecord`` on the same records (``--ratio-records`` of the
  larger twin, one core, best of three rounds taken in turns): reading, checking and
  preprocessing a record as prepare does (format-16 ``.dat`` read by numpy), over wfdb reading
  it alone, as a ratio of ECG/s (> 1: prepare's whole path is faster than wfdb's read);
* ``--workers 2`` over one worker: the waveform stage on every record of the larger twin,
  best of two rounds taken in turns, as a speed-up (seconds with one over seconds with two);
* peak memory of prepare at two dataset sizes, each in its own subprocess: the peak resident
  set during prepare above the resident set just before it (the kernel's peak mark is reset
  after imports), and the ``tracemalloc`` peak of the prepare call; it must stay flat:
  ``peak_memory`` gives both sizes and their ratio (≈ 1.0 when flat, the ECG ratio if it
  grew in proportion);
* ``labevents`` read speed on one core (pyarrow held to one thread), in rows of the file per
  second, on the larger twin's rows repeated to ``--lab-rows`` (.csv.gz): keeping the twin's
  subjects (every row) and keeping none (the scan alone), for ``read_mimic_labs`` (what
  prepare calls) and for ``read_labevents`` alone (no conversion to the labs frame), best of
  two rounds taken in turns;
* store read throughput for random training batches versus one training step of the default
  ECG encoder (``EncoderConfig`` defaults) with a linear head, as a ratio;
* with ``--tables-twin DIR`` (a tables-only twin, ``fedecg synth --tables-only``): peak memory
  of prepare's table phase (tables read, cohort linked and fingerprinted, lab rows freed,
  ``cohort.parquet`` written) at ``--table-fractions`` of its patients, each in its own
  subprocess on one core: ``table_phase`` gives the peak resident set above the start per
  size, its growth per 1,000 ECGs between the smallest and the largest, and the ratio
  largest/smallest; and the ``labevents`` speeds on its own ``labevents`` table
  (``labevents_tables_twin``: its every patient's subject id asked for, as at MIMIC's size);
* with ``--baseline-src DIR`` (another fedecg source tree, e.g. ``git archive BASE fedecg | tar
  -x -C DIR``) the table phase and the ``labevents`` speeds are measured with it too, in the
  same run (``..._before``; speeds also as ratios after/before).

Speeds depend on the machine and its load (``load_average`` is recorded at the start and the
end); read them as ratios measured in one run. Examples (the second as committed in
``prepare_benchmark.json``, with ``fedecg synth --tables-only --patients 160000 --out TWIN``
and the tree before the change in ``BASE``):
    python benchmarks/prepare_benchmark.py --patients 60 240 --out benchmarks/prepare.json
    python benchmarks/prepare_benchmark.py --patients 600 2400 --tables-twin TWIN
        --table-fractions 0.1 1.0 --baseline-src BASE    (one command line)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
import torch
import wfdb
from benchmark_json import emit
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader

from fedecg.config.data import PrepareConfig
from fedecg.config.train import EncoderConfig
from fedecg.data import store_rows
from fedecg.data.cohort import build_cohort
from fedecg.data.labs import DEFAULT_LAB_PANEL, itemid_to_lab
from fedecg.data.mimic import read_mimic_labs, read_record_list
from fedecg.data.prepare import (
    MimicInput,
    load_input,
    prepare_fingerprint,
    prepare_store,
    stream_records,
)
from fedecg.data.store import EcgDataset, SiteStore, StoreWriter
from fedecg.data.synth import generate_twin
from fedecg.data.tables import Rejects, find_table, read_labevents
from fedecg.models.encoders import EcgEncoder


def _status_mib(field: str) -> float:
    """``VmRSS``/``VmHWM`` of this process from /proc (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) so imports do not hide prepare's peak."""
    Path("/proc/self/clear_refs").write_text("5")


class AnonPeak(threading.Thread):
    """Samples ``RssAnon`` (heap, not the file-backed pages of the memory map) every 5 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = _status_mib("RssAnon")
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            self.peak = max(self.peak, _status_mib("RssAnon"))


def child_prepare(twin: Path, out: Path, trace: bool) -> dict:
    """Prepare ``twin`` into ``out`` on one core; timings, memory peaks, tracemalloc peak."""
    torch.set_num_threads(1)
    config = PrepareConfig(on_error="skip", workers=1)
    _reset_peak()
    baseline, anon = _status_mib("VmRSS"), AnonPeak()
    anon_before = anon.peak
    if trace:
        tracemalloc.start()
    anon.start()
    start = time.perf_counter()
    result = prepare_store(MimicInput(twin, twin), out, config, overwrite=True)
    seconds = time.perf_counter() - start
    anon.done.set()
    anon.join()
    report = {"ecgs": result.manifest.n_records, "seconds": seconds,
              "ecg_per_s": result.manifest.n_records / seconds,
              "rss_before_mib": baseline, "rss_peak_mib": _status_mib("VmHWM"),
              "anon_growth_mib": anon.peak - anon_before}
    report["rss_growth_mib"] = report["rss_peak_mib"] - baseline
    if trace:
        report["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return report


class Discard(Exception):
    """Raised to leave a ``StoreWriter`` block so that it deletes what it wrote."""


def child_waveforms(twin: Path, out: Path) -> dict:
    """The waveform stage alone on one core: stream every record of ``twin`` into a store
    writer (tables read beforehand, not measured); throughput and heap growth."""
    config = PrepareConfig(on_error="skip", workers=1)
    paths = load_input(MimicInput(twin, twin), config, Rejects("skip")).ecgs["record_path"]
    anon = AnonPeak()
    anon_before = anon.peak
    anon.start()
    start = time.perf_counter()
    try:
        with StoreWriter(out, len(paths), config.waveform.n_samples, overwrite=True) as writer:
            for index, signal, _, _ in stream_records(paths.tolist(), config):
                if signal is not None:
                    writer.write(index, signal)
            raise Discard
    except Discard:
        seconds = time.perf_counter() - start
    anon.done.set()
    anon.join()
    return {"records": len(paths), "seconds": seconds, "ecg_per_s": len(paths) / seconds,
            "anon_growth_mib": anon.peak - anon_before}


def child_tables(twin: Path, out: Path) -> dict:
    """Prepare's table phase on ``twin`` (its tables only: no waveform is read) on one core, as
    ``prepare_store`` runs it before and after the waveforms: seconds, peak resident set above
    the start after reading the tables and at the end, ECGs and lab rows kept.

    A source tree older than the freeing of lab rows and the grouped cohort writer runs its
    own steps (``drop_labs`` skipped, ``to_parquet``)."""
    pyarrow.set_cpu_count(1)
    pyarrow.set_io_thread_count(1)
    config = PrepareConfig(on_error="skip", workers=1)
    _reset_peak()
    baseline = _status_mib("VmRSS")
    start = time.perf_counter()
    loaded = load_input(MimicInput(twin, twin), config, Rejects("skip"))
    read_peak, lab_rows = _status_mib("VmHWM"), len(loaded.tables.labs)
    cohort = build_cohort(loaded.ecgs, loaded.tables, loaded.config.cohort)
    prepare_fingerprint(loaded.config, loaded, cohort)
    if hasattr(loaded.tables, "drop_labs"):
        loaded.tables.drop_labs()
    write = getattr(store_rows, "write_cohort", None)
    if write is None:
        cohort.reset_index(drop=True).to_parquet(out, index=False)
    else:
        write(cohort, out)
    peak = _status_mib("VmHWM")
    return {"ecgs": len(cohort), "lab_rows_kept": lab_rows,
            "seconds": time.perf_counter() - start, "rss_before_mib": baseline,
            "rss_peak_mib": peak, "rss_growth_mib": peak - baseline,
            "rss_growth_reading_mib": read_peak - baseline,
            "cohort_mib": cohort.memory_usage(deep=True).sum() / 2**20}


def subset_twin(twin: Path, out: Path, fraction: float) -> Path:
    """``twin`` cut to the first ``fraction`` of its patients (record-list order): its record
    list and machine measurements hold only theirs, ``hosp/`` is linked (prepare reads only
    their rows of it)."""
    if fraction >= 1 or out.exists():
        return twin if fraction >= 1 else out
    out.mkdir(parents=True)
    records = pd.read_csv(find_table(twin, "record_list"), dtype="str", keep_default_na=False)
    subjects = records["subject_id"].drop_duplicates()
    chosen = set(subjects.iloc[:max(1, round(len(subjects) * fraction))])
    for name in ("record_list", "machine_measurements"):
        table = (records if name == "record_list" else
                 pd.read_csv(find_table(twin, name), dtype="str", keep_default_na=False))
        table[table["subject_id"].isin(chosen)].to_csv(out / f"{name}.csv", index=False)
    (out / "hosp").symlink_to((twin / "hosp").resolve())
    return out


def table_phase(twin: Path, fractions: list[float], tmp: Path, source: Path | None) -> dict:
    """``child_tables`` at each of ``fractions`` of ``twin``'s patients (with fedecg from
    ``source`` when given), and the peak's growth per 1,000 ECGs and ratio largest/smallest."""
    sizes = {}
    for fraction in fractions:
        cut = subset_twin(twin, tmp / f"cut{fraction:g}", fraction)
        sizes[f"{fraction:g}"] = _run_child("tables", str(cut), str(tmp / "cohort.parquet"),
                                            source=source)
    small, large = sizes[f"{min(fractions):g}"], sizes[f"{max(fractions):g}"]
    per_1000 = ((large["rss_growth_mib"] - small["rss_growth_mib"])
                / (large["ecgs"] - small["ecgs"]) * 1000)
    return {"sizes": sizes, "growth_mib_per_1000_ecgs": per_1000,
            "ratio_large_to_small": large["rss_growth_mib"] / small["rss_growth_mib"],
            "ecg_ratio_large_to_small": large["ecgs"] / small["ecgs"],
            "extrapolated_rss_peak_mib_at_800k_ecgs": (
                large["rss_peak_mib"] + per_1000 * (800 - large["ecgs"] / 1000))}


def child_labevents(path: Path, twin: Path) -> dict:
    """Rows per second of reading the ``labevents`` table at ``path`` on one core, as prepare
    does (``read_mimic_labs``) and by ``read_labevents`` alone: keeping the subjects of
    ``twin``'s record list, and keeping none (the scan alone); wall and CPU time."""
    pyarrow.set_cpu_count(1)
    pyarrow.set_io_thread_count(1)
    rows = sum(len(b) for b in pd.read_csv(path, usecols=["itemid"], chunksize=1_000_000))
    subjects = read_record_list(twin, Rejects("skip"))["subject_id"].unique()
    reads = {"cohort_subjects": lambda: read_mimic_labs(path, subjects, DEFAULT_LAB_PANEL,
                                                         Rejects("skip")),
             "no_subjects": lambda: read_mimic_labs(path, [], DEFAULT_LAB_PANEL, Rejects("skip")),
             "read_labevents_cohort_subjects": lambda: read_labevents(
                 path, itemid_to_lab(DEFAULT_LAB_PANEL), subjects, Rejects("skip"))}
    result: dict = {"rows": rows}
    for name, timing in _best_in_turns(reads, rounds=2).items():
        result[name] = {"kept_rows": len(timing.result), "seconds": timing.wall,
                        "rows_per_s": rows / timing.wall, "cpu_rows_per_s": rows / timing.cpu}
    return result


@dataclass
class Timing:
    """Least wall seconds, least CPU seconds (this process and its ended children) and least
    CPU seconds of this process alone over the rounds, and the last result."""

    wall: float
    cpu: float
    own_cpu: float
    result: object


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process and its ended children, and of this process alone."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = time.process_time()
    return own + children.ru_utime + children.ru_stime, own


def _best_in_turns(runs: dict, rounds: int) -> dict:
    """Run each of ``runs`` in turn, ``rounds`` times, and time it (taking turns spreads the
    machine's load over all of them)."""
    best: dict = {}
    for _ in range(rounds):
        for name, run in runs.items():
            wall, (cpu, own) = time.perf_counter(), _cpu_seconds()
            result = run()
            after = _cpu_seconds()
            timing = Timing(time.perf_counter() - wall, after[0] - cpu, after[1] - own, result)
            if name in best:
                timing.wall, timing.cpu, timing.own_cpu = (
                    min(timing.wall, best[name].wall), min(timing.cpu, best[name].cpu),
                    min(timing.own_cpu, best[name].own_cpu))
            best[name] = timing
    return best


def child_record_speed(twin: Path, n_records: int) -> dict:
    """ECG/s on one core of prepare's per-record path (read, check, preprocess) and of
    ``wfdb.rdrecord`` reading the same first ``n_records`` records of ``twin``, and their
    ratio (wall and CPU time, best of three rounds taken in turns)."""
    config = PrepareConfig(on_error="skip", workers=1)
    paths = load_input(MimicInput(twin, twin), config, Rejects("skip")).ecgs["record_path"]
    paths = paths.astype(str).tolist()[:n_records]
    runs = {"fedecg": lambda: list(stream_records(paths, config)),
            "wfdb_rdrecord": lambda: [wfdb.rdrecord(path) for path in paths]}
    with threadpool_limits(limits=1):
        best = _best_in_turns(runs, rounds=4)  # the first round warms the page cache
    result: dict = {"records": len(paths)}
    for name, timing in best.items():
        result[name] = {"ecg_per_s": len(paths) / timing.wall,
                        "cpu_ecg_per_s": len(paths) / timing.cpu}
    result["fedecg_over_wfdb"] = best["wfdb_rdrecord"].wall / best["fedecg"].wall
    result["fedecg_over_wfdb_cpu"] = best["wfdb_rdrecord"].cpu / best["fedecg"].cpu
    return result


def child_workers(twin: Path) -> dict:
    """Seconds of the waveform stage on every record of ``twin`` with one and with two
    workers (best of two rounds taken in turns), and the speed-up of two over one; and the
    CPU seconds of all processes and of the parent alone (on a loaded machine the speed-up
    understates; ``cpu_seconds`` of two near one's, and a small parent share, mean the pool
    adds little work, so the speed-up on free cores nears two)."""
    paths = load_input(MimicInput(twin, twin), PrepareConfig(on_error="skip"), Rejects("skip"))
    paths = paths.ecgs["record_path"].astype(str).tolist()
    runs = {workers: lambda workers=workers: sum(1 for _ in stream_records(
        paths, PrepareConfig(on_error="skip", workers=workers))) for workers in (1, 2)}
    best = _best_in_turns(runs, rounds=2)
    return {"records": len(paths), "cpu_count": os.cpu_count(),
            "seconds": {str(w): best[w].wall for w in runs},
            "cpu_seconds": {str(w): best[w].cpu for w in runs},
            "parent_cpu_seconds": {str(w): best[w].own_cpu for w in runs},
            "speedup_2_over_1": best[1].wall / best[2].wall}


def repeated_labevents(twin: Path, out: Path, rows: int) -> Path:
    """``twin``'s ``labevents`` rows repeated to at least ``rows`` rows, as ``out`` (.csv.gz,
    MIMIC's own form), for a read speed not dominated by fixed costs."""
    with gzip.open(find_table(twin / "hosp", "labevents"), "rb") as source:
        header, *body = source.read().splitlines(keepends=True)
    with gzip.open(out, "wb", compresslevel=1) as target:
        target.write(header)
        for _ in range(-(-rows // len(body))):
            target.writelines(body)
    return out


def _run_child(*args: str, source: Path | None = None) -> dict:
    """Run ``--child ARGS`` in a subprocess (importing fedecg from ``source`` when given)."""
    command = [sys.executable, __file__, "--child", *args]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), env.get("PYTHONPATH", "")])
    output = subprocess.run(command, check=True, capture_output=True, text=True,
                            env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def _measure(report: dict, key: str, baseline: Path | None, *child: str) -> None:
    """``report[key]``: the child's result; with ``baseline`` also ``report[key + '_before']``,
    the same child run with fedecg from that source tree."""
    report[key] = _run_child(*child)
    if baseline is not None:
        report[f"{key}_before"] = _run_child(*child, source=baseline)


def read_versus_step(store_path: Path, batch: int = 64, batches: int = 20) -> dict:
    """Seconds per random batch read from the store vs. per training step of the encoder."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    store = SiteStore.open(store_path)
    dataset = EcgDataset(store, store.indices())
    loader = DataLoader(dataset, batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    start, count = time.perf_counter(), 0
    while count < batches:
        for _ in loader:
            count += 1
            if count == batches:
                break
    read = (time.perf_counter() - start) / batches
    encoder = EcgEncoder(**EncoderConfig().model_dump())
    head = torch.nn.Linear(encoder.embedding_dim, len(store.manifest.diagnosis_labels))
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)
    x = torch.randn(batch, 12, store.manifest.n_samples)
    y = torch.randint(0, 2, (batch, head.out_features)).float()
    steps = []
    for _ in range(4):
        begin = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(encoder(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps.append(time.perf_counter() - begin)
    step = float(np.median(steps[1:]))
    return {"batch": batch, "read_s_per_batch": read, "train_step_s": step,
            "read_batches_per_train_step": step / read, "read_ecg_per_s": batch / read}


def main() -> None:
    """Generate twins, run the measurements, write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs=2, default=[60, 240])
    parser.add_argument("--lab-rows", type=int, default=2_000_000,
                        help="rows of the labevents table read for its speed")
    parser.add_argument("--ratio-records", type=int, default=500,
                        help="records of the larger twin read against wfdb.rdrecord")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/prepare_benchmark.json"))
    parser.add_argument("--tables-twin", type=Path,
                        help="a tables-only twin whose table phase is measured")
    parser.add_argument("--table-fractions", type=float, nargs="+", default=[0.1, 0.35, 1.0],
                        help="fractions of the tables twin's patients measured")
    parser.add_argument("--baseline-src", type=Path,
                        help="a fedecg source tree measured beside (table phase, labevents)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = (child_waveforms(Path(rest[0]), Path(rest[1])) if kind == "waveforms" else
                  child_labevents(Path(rest[0]), Path(rest[1])) if kind == "labevents" else
                  child_record_speed(Path(rest[0]), int(rest[1])) if kind == "records" else
                  child_workers(Path(rest[0])) if kind == "workers" else
                  child_tables(Path(rest[0]), Path(rest[1])) if kind == "tables" else
                  child_prepare(Path(rest[0]), Path(rest[1]), trace=kind == "trace"))
        print(json.dumps(result))
        return
    report: dict = {"load_average": {"start": os.getloadavg()}, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for patients in args.patients:
            twin, out = Path(tmp) / f"twin{patients}", Path(tmp) / f"store{patients}"
            generate_twin(twin, patients=patients, sites=2, seed=0)
            report["sizes"][str(patients)] = {
                "prepare": _run_child("time", str(twin), str(out)),
                "prepare_tracemalloc": _run_child("trace", str(twin), str(out)),
                "waveform_stage": _run_child("waveforms", str(twin), str(out) + "-w")}
        report["record_speed"] = _run_child("records", str(twin), str(args.ratio_records))
        report["workers"] = _run_child("workers", str(twin))
        labevents = repeated_labevents(twin, Path(tmp) / "labevents.csv.gz", args.lab_rows)
        _measure(report, "labevents", args.baseline_src, "labevents", str(labevents), str(twin))
        if args.tables_twin:
            _measure(report, "labevents_tables_twin", args.baseline_src, "labevents",
                     str(find_table(args.tables_twin / "hosp", "labevents")),
                     str(args.tables_twin))
            report["table_phase"] = table_phase(args.tables_twin, args.table_fractions,
                                                Path(tmp), None)
            if args.baseline_src:
                report["table_phase_before"] = table_phase(
                    args.tables_twin, args.table_fractions, Path(tmp), args.baseline_src)
        report["store_read"] = read_versus_step(Path(tmp) / f"store{args.patients[-1]}")
    small, large = (report["sizes"][str(p)] for p in args.patients)
    report["peak_memory"] = {
        "ecgs": [small["prepare"]["ecgs"], large["prepare"]["ecgs"]],
        "rss_growth_mib": [small["prepare"]["rss_growth_mib"], large["prepare"]["rss_growth_mib"]],
        "ratio_large_to_small": (large["prepare"]["rss_growth_mib"]
                                 / small["prepare"]["rss_growth_mib"])}
    reads = ("cohort_subjects", "no_subjects", "read_labevents_cohort_subjects")
    report["labevents_rows_per_s"] = {kept: report["labevents"][kept]["rows_per_s"]
                                      for kept in reads}
    for name in ("labevents", "labevents_tables_twin"):
        if f"{name}_before" in report:
            report[f"{name}_cpu_rows_per_s_after_over_before"] = {
                kept: (report[name][kept]["cpu_rows_per_s"]
                       / report[f"{name}_before"][kept]["cpu_rows_per_s"]) for kept in reads}
    report["speed_ratios"] = {
        "fedecg_record_path_over_wfdb_rdrecord": report["record_speed"]["fedecg_over_wfdb"],
        "workers_2_over_1": report["workers"]["speedup_2_over_1"],
        "labevents_keeping_every_row_over_scan": (
            report["labevents"]["cohort_subjects"]["rows_per_s"]
            / report["labevents"]["no_subjects"]["rows_per_s"])}
    report["load_average"]["end"] = os.getloadavg()
    report["memory_ratio_large_to_small"] = {
        "ecgs": large["prepare"]["ecgs"] / small["prepare"]["ecgs"],
        "rss_growth": large["prepare"]["rss_growth_mib"] / small["prepare"]["rss_growth_mib"],
        "anon_growth": large["prepare"]["anon_growth_mib"] / small["prepare"]["anon_growth_mib"],
        "waveform_stage_anon_growth": (large["waveform_stage"]["anon_growth_mib"]
                                       / small["waveform_stage"]["anon_growth_mib"]),
        "tracemalloc_peak": (large["prepare_tracemalloc"]["tracemalloc_peak_mib"]
                             / small["prepare_tracemalloc"]["tracemalloc_peak_mib"])}
    emit(report, args.out)


if __name__ == "__main__":
    main()
