"""Keep what the ServerApp logs short: Flower logs every ConfigRecord a strategy starts with.

fedecg's message config carries the whole run plan (config, manifest: several KB of JSON),
so Flower's ``ConfigRecord (train): {...}`` lines would repeat it in ``flwr log`` at every
stage. ``ShortRunPlan`` replaces the plan in those lines by its size.
"""

from __future__ import annotations

import logging
import re

from fedecg.federated import keys

_PLAN = re.compile(rf"'{re.escape(keys.RUN_PLAN)}': (\{{.*\}})(?=, '|\}}$)")


class ShortRunPlan(logging.Filter):
    """A ``logging.Filter`` that shortens the run plan in Flower's ConfigRecord lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "ConfigRecord" in str(record.msg) and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_shorten(arg) for arg in args)
        return True


def _shorten(value: object) -> object:
    if not isinstance(value, str):
        return value
    return _PLAN.sub(lambda m: f"'{keys.RUN_PLAN}': <run plan, {len(m.group(1))} characters>",
                     value)


SHORT_RUN_PLAN = ShortRunPlan()


def keep_flower_log_short() -> None:
    """Install ``ShortRunPlan`` on Flower's logger (once; adding it again does nothing)."""
    logging.getLogger("flwr").addFilter(SHORT_RUN_PLAN)
