"""What the tests read back from a run folder."""

from __future__ import annotations

import json
from pathlib import Path

from fedecg.run_folder import RunFolder


def metrics_history(run: Path) -> list[dict]:
    """RUN/metrics.jsonl without timings and memory (the only values a rerun changes)."""
    records = [json.loads(x) for x in RunFolder(run).metrics.read_text().splitlines()]
    return [{k: v for k, v in r.items()
             if not k.endswith(("seconds", "per_second")) and k != "peak-rss-mb"}
            for r in records]
