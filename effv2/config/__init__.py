"""Config schemas (dataclasses in Hydra's ConfigStore); importing this never imports MindSpore."""

from effv2.config.schema import RunConfig, load_run_config, register_configs

__all__ = ["RunConfig", "load_run_config", "register_configs"]
