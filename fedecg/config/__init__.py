"""Validated configuration models (pydantic, ``extra='forbid'``) and YAML loading."""

from fedecg.config.base import StrictModel, apply_overrides, dump_config, load_config

__all__ = ["StrictModel", "apply_overrides", "dump_config", "load_config"]
