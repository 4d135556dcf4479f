"""Config schemas (dataclasses in Hydra's ConfigStore); importing this never imports MindSpore."""

from effv2.config.schema import RunConfig, register_configs

__all__ = ["RunConfig", "register_configs"]
