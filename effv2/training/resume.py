"""The resume protocol: what a checkpoint must agree on with the run that continues it. The
model and the global batch must be the same (the epoch is cut into the same optimizer steps, on
any device count); a changed schedule, data split or micro-batch is allowed with a warning."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from effv2.data.sharding import BatchPlan
from effv2.errors import UserError
from effv2.training.run_folder import Progress

log = logging.getLogger(__name__)


def check_resumable(path: Path, meta: dict[str, Any], identity: dict[str, Any], plan: BatchPlan) -> None:
    """Raise UserError where the checkpoint at ``path`` (its metadata ``meta``) cannot continue
    as this run (its ``identity``, effv2.training.run_folder.run_identity, with batch ``plan``);
    log what continues differently."""
    if (meta.get("variant"), meta.get("num_classes")) != (identity["variant"], identity["num_classes"]):
        raise UserError(
            f"resume={str(path)!r} is a {meta.get('variant')}/{meta.get('num_classes')} classes run; "
            f"this config trains {identity['variant']}/{identity['num_classes']} classes"
        )
    counted = meta.get("steps", {}).get("counting", "whole_epochs")  # older checkpoints: whole epochs
    if counted != identity["steps"]["counting"]:
        raise UserError(
            f"resume={str(path)!r} counted its steps with train.step_counting={counted}; this run uses "
            f"{identity['steps']['counting']}, which maps epochs to other steps and images: set "
            f"train.step_counting={counted}"
        )
    if meta.get("schedule") != identity["schedule"]:
        log.warning("resume: the progressive schedule differs from the one %s was trained with", path)
    _check_plan(path, meta, plan)
    _check_same_data(path, meta, identity)


def _check_same_data(path: Path, meta: dict[str, Any], identity: dict[str, Any]) -> None:
    """The epoch order is a permutation of the split's indices: another split (images added or
    removed, a pack that left images out) continues training, but not the original order."""
    images, fingerprint = meta.get("train_images"), meta.get("train_fingerprint")
    if images is not None and images != identity["train_images"]:
        log.warning(
            "resume: %s trained on %d images, the training split now holds %d: the epoch order and "
            "the step count differ from the original run's from here on", path, images, identity["train_images"],
        )  # fmt: skip
    elif fingerprint and fingerprint != identity["train_fingerprint"]:
        log.warning("resume: the training split's listing (names or sizes) changed since %s was written", path)


def _check_plan(path: Path, meta: dict[str, Any], plan: BatchPlan) -> None:
    """A run continues on any device count whose global batch is the same. Another global batch
    would change the data order and the schedule, so it is refused."""
    before = meta.get("plan")
    if before is None:
        raise UserError(
            f"resume={str(path)!r} was written by an older effv2 without the batch plan and cannot be resumed; "
            f"start from its weights with model.pretrained={path}"
        )
    if before["global_batch"] != plan.global_batch:
        raise UserError(
            f"resume={str(path)!r} trained with a global batch of {before['global_batch']} "
            f"({before['batch_size']} x {before['world_size']} devices x {before['accumulation']} accumulation); "
            f"this run's is {plan.describe()}: set data.batch_size and train.accumulation_steps so that "
            f"batch x devices x accumulation = {before['global_batch']}"
        )
    if (before["world_size"], before["accumulation"]) != (plan.world_size, plan.accumulation):
        log.info(
            "resume: %d devices x %d accumulation continue a run of %d x %d, same global batch %d",
            plan.world_size, plan.accumulation, before["world_size"], before["accumulation"], plan.global_batch,
        )  # fmt: skip
    if before["batch_size"] != plan.batch_size:
        log.warning(
            "resume: micro-batches of %d images instead of %d: same steps and data order, but other BN batch "
            "statistics and dropout masks than the original run", plan.batch_size, before["batch_size"],
        )  # fmt: skip


def continued_progress(meta: dict[str, Any], main: bool) -> Progress:
    """Where a run continues from a checkpoint's metadata: the next epoch after an evaluated one,
    else the same epoch's next step. The epoch's losses and bad images so far were summed over all
    ranks, so only the main rank carries them on."""
    progress = Progress.from_meta(meta)
    if progress.evaluated:
        progress.next_epoch()
    elif not main:
        progress.loss_sum, progress.loss_count, progress.bad_images = 0.0, 0, 0
    return progress
