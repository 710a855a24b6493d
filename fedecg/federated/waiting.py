"""Waiting for sites: Flower's grid waits forever for nodes; fedecg waits a bounded time.

``run_server`` waits for every expected site before the first round
(``orchestration.await_sites``), each stage's strategy for ``min_sites`` before each round
(``StageRounds``); both poll ``wait_for_sites``.
"""

from __future__ import annotations

import time

from flwr.serverapp import Grid


def wait_for_sites(grid: Grid, wanted: int, timeout: float) -> int:
    """Poll ``grid`` every second until ``wanted`` sites are connected or ``timeout`` seconds
    have passed; return how many are connected."""
    deadline = time.monotonic() + timeout
    while (online := len(list(grid.get_node_ids()))) < wanted:
        if time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    return online
