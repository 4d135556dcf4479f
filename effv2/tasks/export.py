"""task=export: write ``export.format`` of ``ckpt=`` with its parity report; returns the max abs
difference against the MindSpore graph."""

from __future__ import annotations

import logging
from pathlib import Path

from effv2.config.schema import RunConfig
from effv2.deploy.export import export_checkpoint

log = logging.getLogger(__name__)


def run(cfg: RunConfig, run_dir: Path) -> float:
    exported = export_checkpoint(cfg, run_dir)
    report = exported.report
    diff = report.get("max_abs_diff")
    log.info(
        "exported %s (%s, %.1f MB, input %s, %s weights); %s",
        exported.path, report["format"], report["bytes"] / 1e6, list(exported.input_shape), report["weights"],
        f"max abs diff vs MindSpore {diff:.3g}, top-1 agreement {report['top1_agreement']:.3f}"
        if diff is not None else "no parity check for AIR",
    )  # fmt: skip
    return float(diff or 0.0)
