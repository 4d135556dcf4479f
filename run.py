"""effv2's single entry point: ``python run.py task=train|eval|export|infer [overrides]``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from effv2.config import register_configs
from effv2.errors import UserError

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from effv2.tasks import run_task

    try:
        return run_task(cfg, Path(HydraConfig.get().runtime.output_dir))
    except UserError as exc:
        logging.getLogger("effv2").error("error: %s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
