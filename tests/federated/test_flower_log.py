"""What the ServerApp leaves in ``flwr log``: Flower's ConfigRecord lines without the run plan."""

from __future__ import annotations

import json
import logging

from flwr.app import ConfigRecord
from flwr.serverapp.strategy.strategy_utils import config_to_str

from fedecg.federated import keys
from fedecg.federated.flower_log import ShortRunPlan


def test_flowers_config_record_line_names_the_plan_by_its_size_only():
    plan = json.dumps({"config": {"train": {"models": ["transfer"]}}, "manifest": "x" * 5000})
    config = ConfigRecord({keys.RUN_PLAN: plan, keys.STAGE_INDEX: 2})
    record = logging.LogRecord("flwr", logging.INFO, __file__, 1,
                               "\t├── ConfigRecord (train): %s", (config_to_str(config),), None)
    assert ShortRunPlan().filter(record)
    assert record.getMessage() == (f"\t├── ConfigRecord (train): {{'{keys.RUN_PLAN}': <run plan, "
                                   f"{len(plan)} characters>, '{keys.STAGE_INDEX}': 2}}")
    other = logging.LogRecord("flwr", logging.INFO, __file__, 1, "[ROUND %s/%s]", (1, 8), None)
    assert ShortRunPlan().filter(other) and other.getMessage() == "[ROUND 1/8]"
