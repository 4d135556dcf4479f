"""The training loop: epochs of compiled steps, periodic evaluation, checkpoints, metrics."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn
from tqdm import tqdm

from effv2.data.pipeline import build_eval_split, build_train_split
from effv2.errors import UserError
from effv2.models import build_model, model_summary
from effv2.training.checkpoint import save_atomic
from effv2.training.evaluate import evaluate
from effv2.training.metrics import EpochLog, write_json
from effv2.training.optim import build_optimizer, scaled_lr
from effv2.training.schedules import learning_rates
from effv2.training.step import TrainStep

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_top1: float
    final: dict[str, float]


def seed_everything(seed: int) -> None:
    import mindspore.dataset as ds

    ms.set_seed(seed)
    ds.config.set_seed(seed)
    np.random.seed(seed)


def _checkpoint_meta(cfg: Any, class_names: tuple[str, ...], epoch: int, metrics: dict[str, float]) -> dict:
    return {
        "variant": cfg.model.name,
        "num_classes": cfg.model.num_classes,
        "class_names": list(class_names),
        "epoch": epoch,
        "metrics": metrics,
        "eval_size": cfg.data.eval_size,
    }


def train(cfg: Any, run_dir: Path) -> TrainResult:
    seed_everything(cfg.seed)
    workers = cfg.hardware.num_workers
    train_data = build_train_split(cfg.data, workers)
    val_data = build_eval_split(cfg.data, workers)
    if train_data.split.class_names != val_data.split.class_names:
        raise UserError(
            f"train and val class folders differ under {train_data.split.path.parent}: "
            f"{len(train_data.split.class_names)} vs {len(val_data.split.class_names)}"
        )
    epochs = cfg.train.epochs
    if epochs <= 0:
        raise UserError(f"train.epochs={epochs} must be a positive integer")

    net = build_model(cfg.model, seed=cfg.seed)
    log.info("model %s", model_summary(net, cfg.data.train_size))
    steps_per_epoch = train_data.num_batches
    global_batch = cfg.data.batch_size
    base_lr = scaled_lr(cfg.optimizer, global_batch)
    lrs = learning_rates(cfg.scheduler, base_lr, steps_per_epoch, epochs)
    optimizer = build_optimizer(cfg.optimizer, net.trainable_params(), lrs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    step = TrainStep(net, loss_fn, optimizer, cfg.train.clip_grad_norm)
    log.info(
        "training %d epochs x %d steps, global batch %d, %s lr %.3g (%.3g per 256 images), %d train / %d val images",
        epochs, steps_per_epoch, global_batch, cfg.optimizer.name, base_lr, cfg.optimizer.lr,
        train_data.split.num_images, val_data.split.num_images,
    )  # fmt: skip

    epoch_log = EpochLog(run_dir / "metrics.csv")
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(exist_ok=True)
    best_top1 = -math.inf
    val: dict[str, float] = {}
    iterator = train_data.dataset.create_tuple_iterator(num_epochs=epochs)
    for epoch in range(1, epochs + 1):
        step.set_train(True)
        started = time.perf_counter()
        losses = []
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", disable=None, leave=False)
        for images, labels in iterator:
            loss = float(step(images, labels).asnumpy())
            if not math.isfinite(loss):
                raise UserError(
                    f"training loss became {loss} at epoch {epoch}; lower optimizer.lr or enable train.clip_grad_norm"
                )
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lrs[(epoch - 1) * steps_per_epoch + len(losses) - 1]:.3g}")
        bar.close()
        train_seconds = time.perf_counter() - started
        row = {
            "epoch": epoch,
            "lr": float(lrs[epoch * steps_per_epoch - 1]),
            "train_loss": float(np.mean(losses)),
            "images_per_s": steps_per_epoch * global_batch / train_seconds,
        }
        if epoch % cfg.train.eval_interval == 0 or epoch == epochs:
            val = evaluate(net, val_data)
            row.update(val_top1=val["top1"], val_top5=val["top5"])
            meta = _checkpoint_meta(cfg, train_data.split.class_names, epoch, val)
            save_atomic(net, ckpt_dir / "last.ckpt", meta)
            if val["top1"] > best_top1:
                best_top1 = val["top1"]
                save_atomic(net, ckpt_dir / "best.ckpt", meta)
        row["seconds"] = time.perf_counter() - started
        epoch_log.append(row)
        log.info(
            "epoch %d/%d  loss %.4f  lr %.3g  %s%.1f img/s  %.1f s",
            epoch, epochs, row["train_loss"], row["lr"],
            f"val top-1 {row['val_top1']:.2f}  top-5 {row['val_top5']:.2f}  " if "val_top1" in row else "",
            row["images_per_s"], row["seconds"],
        )  # fmt: skip

    final = {"val_top1": val["top1"], "val_top5": val["top5"], "best_val_top1": best_top1, "epochs": epochs}
    write_json(run_dir / "metrics.json", final)
    return TrainResult(best_top1=best_top1, final=final)
