"""task=infer: top-k predictions of an exported model (or of ``ckpt=``, exported first); returns
top-1 on a labelled ImageFolder, else 0."""

from __future__ import annotations

import logging
from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.deploy.infer import infer
from effv2.tracking.base import TaskResult
from effv2.tracking.epoch_log import write_json
from effv2.tracking.task_run import record_task

log = logging.getLogger(__name__)


def run(cfg: RunConfig, run_dir: Path) -> float:
    summary = infer(cfg, run_dir)
    write_json(run_dir / "metrics.json", summary)
    log.info(
        "infer %s on %d images with %s%s; predictions in %s",
        Path(summary["model"]).name, summary["images"], summary["backend"],
        f": top-1 {summary['top1']:.2f}  top-5 {summary['top5']:.2f}" if "top1" in summary else "",
        summary["predictions"],
    )  # fmt: skip
    metrics = {key: float(summary[key]) for key in ("images", "top1", "top5") if key in summary}
    params = {"model": summary["model"], "backend": summary["backend"], "input": str(cfg.infer.input)}
    record_task(cfg, run_dir, TaskResult("infer", metrics, params, [run_dir / "metrics.json"]))
    return float(summary.get("top1", 0.0))
