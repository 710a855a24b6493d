"""Benchmark of ``fedecg synth`` at growing sizes: seconds and peak memory (JSON out).

Each size runs ``fedecg synth`` in its own process tree; a sampler polls it every 0.1 s with
psutil and keeps the peaks of: the parent's resident set, the largest worker's resident set,
and the whole tree's proportional set size (PSS: pages shared between forked processes counted
once, so it is the memory the run really takes). ``cpu_seconds`` (user + system of the whole
tree) is the time to read on a busy machine, where wall seconds mostly measure others' load.
``memory_ratio`` divides each peak at the largest size by the one at the smallest: about 1 when
memory is bounded, the patient ratio if it grew in proportion. Speeds depend on the machine;
read them as ratios. Example:

    python benchmarks/synth_benchmark.py --patients 2000 20000 --workers 2 --out synth.json
    python benchmarks/synth_benchmark.py --patients 2000 20000 --tables-only
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from benchmark_json import emit

MB = 1024 * 1024


def _pss(process: psutil.Process) -> int:
    try:
        return int(process.memory_full_info().pss)
    except (psutil.Error, AttributeError):
        return 0


def _sample(parent: psutil.Process, peaks: dict[str, int]) -> None:
    try:
        children = parent.children(recursive=True)
        rss = parent.memory_info().rss
    except psutil.Error:
        return
    worker_rss = []
    for child in children:
        try:
            worker_rss.append(child.memory_info().rss)
        except psutil.Error:
            continue
    pss = _pss(parent) + sum(_pss(child) for child in children)
    peaks["parent_rss"] = max(peaks["parent_rss"], rss)
    peaks["worker_rss"] = max(peaks["worker_rss"], max(worker_rss, default=0))
    peaks["tree_pss"] = max(peaks["tree_pss"], pss)


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_synth(patients: int, workers: int, extra: list[str], folder: Path) -> dict[str, Any]:
    """Run one ``fedecg synth`` into ``folder``; its seconds, peak memory (MB) and output size."""
    out = folder / f"twin_{patients}"
    command = [sys.executable, "-m", "fedecg.cli", "synth", "--out", str(out), "--patients",
               str(patients), "--workers", str(workers), *extra]
    peaks = {"parent_rss": 0, "worker_rss": 0, "tree_pss": 0}
    cpu_before = _children_cpu()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    watched = psutil.Process(process.pid)
    while process.poll() is None:
        _sample(watched, peaks)
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    cpu_seconds = _children_cpu() - cpu_before
    output = process.stdout.read() if process.stdout else ""
    if process.returncode != 0:
        raise SystemExit(f"synth_benchmark: fedecg synth --patients {patients} failed: {output}")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    return {"patients": patients, "seconds": round(seconds, 1),
            "cpu_seconds": round(cpu_seconds, 1), "output_mb": round(size / MB, 1),
            **{f"peak_{k}_mb": round(v / MB) for k, v in peaks.items()},
            "message": " ".join(output.split())}


def main() -> None:
    """Run each size, then print and write the JSON with the memory ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--lab-fraction", type=float, default=None)
    parser.add_argument("--folder", type=Path, default=None,
                        help="Where the twins are written (deleted after each size).")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    extra = ["--tables-only"] if args.tables_only else []
    if args.lab_fraction is not None:
        extra += ["--lab-fraction", str(args.lab_fraction)]
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        runs = [run_synth(n, args.workers, extra, Path(folder)) for n in sorted(args.patients)]
    small, large = runs[0], runs[-1]
    emit({
        "workers": args.workers, "mode": " ".join(extra) or "full twin", "runs": runs,
        "patient_ratio": large["patients"] / small["patients"],
        "seconds_ratio": round(large["seconds"] / small["seconds"], 2),
        "cpu_seconds_ratio": round(large["cpu_seconds"] / small["cpu_seconds"], 2),
        "memory_ratio": {k: round(large[k] / max(small[k], 1), 2)
                         for k in ("peak_parent_rss_mb", "peak_worker_rss_mb",
                                   "peak_tree_pss_mb")},
    }, args.out)


if __name__ == "__main__":
    main()
