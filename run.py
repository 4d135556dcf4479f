"""effv2's single entry point: ``python run.py task=train|eval|export|infer [overrides]``."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from effv2.config import register_configs
from effv2.errors import Interrupted, UserError
from effv2.sweep.summary import ERROR_FILE

register_configs()
log = logging.getLogger("effv2")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from effv2.tasks import run_task

    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return run_task(cfg, output_dir, multirun)
    except Interrupted as exc:
        kept = [o for o in hydra_cfg.overrides.task if not o.startswith("resume=")]
        command = " ".join(["python run.py", *kept, f"resume={output_dir}"])
        log.error("error: %s; resume command: %s", exc, command)
        sys.exit(exc.exit_code)
    except UserError as exc:
        log.error("error: %s", exc)
        if not multirun:
            sys.exit(exc.exit_code)
        (output_dir / ERROR_FILE).write_text(f"{exc}\n")
    except Exception as exc:
        if not multirun:
            raise
        # one failing job must not end the sweep: record it, the summary marks it failed
        log.error(
            "error: job %s failed: %s: %s\n%s", hydra_cfg.job.num, type(exc).__name__, exc, traceback.format_exc()
        )
        (output_dir / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    return float("nan")


if __name__ == "__main__":
    main()
