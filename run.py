"""effv2's single entry point: ``python run.py task=train|eval|export|infer [overrides]``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from effv2.config import register_configs
from effv2.errors import Interrupted, UserError

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from effv2.tasks import run_task

    hydra_cfg = HydraConfig.get()
    try:
        return run_task(cfg, Path(hydra_cfg.runtime.output_dir))
    except Interrupted as exc:
        kept = [o for o in hydra_cfg.overrides.task if not o.startswith("resume=")]
        command = " ".join(["python run.py", *kept, f"resume={hydra_cfg.runtime.output_dir}"])
        logging.getLogger("effv2").error("error: %s; resume command: %s", exc, command)
        sys.exit(exc.exit_code)
    except UserError as exc:
        logging.getLogger("effv2").error("error: %s", exc)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
