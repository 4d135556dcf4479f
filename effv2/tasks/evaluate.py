"""task=eval: top-1 / top-5 of ``ckpt=`` over every validation image."""

from __future__ import annotations

import logging
from pathlib import Path

from effv2.checkpoints import load_weights
from effv2.config.schema import RunConfig
from effv2.data.pipeline import build_eval_split
from effv2.errors import UserError
from effv2.kernels import cpu_kernels_wanted
from effv2.launch import ranks
from effv2.models import EfficientNetV2, build_model
from effv2.models.cpu_kernels import use_cpu_kernels
from effv2.tracking.base import TaskResult
from effv2.tracking.epoch_log import write_json
from effv2.tracking.task_run import record_task

log = logging.getLogger(__name__)


def run(cfg: RunConfig, run_dir: Path) -> float:
    if not cfg.ckpt:
        raise UserError("task=eval needs ckpt=<path to a .ckpt file>")
    net = build_model(cfg.model, seed=cfg.seed)
    if cpu_kernels_wanted(cfg.hardware):
        use_cpu_kernels(net)
    meta = load_weights(net, cfg.ckpt)
    val = evaluate_split(cfg, net, run_dir)
    payload = {
        "ckpt": str(Path(cfg.ckpt).expanduser().resolve()),
        "val_top1": val["top1"],
        "val_top5": val["top5"],
        "images": val["images"],
        "bad_images": val["bad_images"],
        "weights": meta["weights"],
    }
    if ranks.current().is_main:
        write_json(run_dir / "metrics.json", payload)
        metrics = {key: float(payload[key]) for key in ("val_top1", "val_top5", "images", "bad_images")}
        params = {"checkpoint": payload["ckpt"], "weights": meta["weights"], "eval_size": str(cfg.data.eval_size)}
        record_task(cfg, run_dir, TaskResult("eval", metrics, params, [run_dir / "metrics.json"]))
    left_out = f" ({val['bad_images']} bad images left out)" if val["bad_images"] else ""
    log.info(
        "eval %s (%s weights): top-1 %.2f  top-5 %.2f over %d images%s; run folder %s",
        cfg.ckpt, meta["weights"], val["top1"], val["top5"], val["images"], left_out, run_dir,
    )  # fmt: skip
    return val["top1"]


def evaluate_split(cfg: RunConfig, net: EfficientNetV2, run_dir: Path | None = None) -> dict[str, float]:
    """Every validation image once: on several ranks each scores its shard and the counts are
    summed over the ranks."""
    from effv2.training.scoring import score_split

    info = ranks.current()
    pinned_in = run_dir if info.distributed else None  # a launched rank: the launching process's manifests
    split = build_eval_split(
        cfg.data, cfg.hardware.num_workers, shard=(info.rank, info.world_size), run_dir=pinned_in,
        node=info.rank // cfg.hardware.devices_per_node,
    )  # fmt: skip
    return score_split(net, split)
