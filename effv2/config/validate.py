"""Every check of a value that needs no data, in one pass that the launching process runs
(``effv2.tasks.run_task``) before any rank or SLURM job starts: on 16 devices a typo is one line,
not 16 processes, a scheduler and 16 MindSpore imports. The schema's types and choices are
checked by OmegaConf when the config is composed; what needs the data (image counts against the
global batch, class folders) or the device (AIR needs Ascend) is checked where those are known.
Importing this module never imports MindSpore."""

from __future__ import annotations

from effv2.config.schema import (
    REGULARISERS,
    DataConfig,
    ExportConfig,
    RunConfig,
    choice_name,
    task_of,
)
from effv2.errors import UserError


def require_positive(name: str, value: int, hint: str = "") -> None:
    """``name=value`` is a positive integer, else one line saying so (with ``hint`` after it)."""
    if value <= 0:
        raise UserError(f"{name}={value} must be a positive integer" + (f" ({hint})" if hint else ""))


def require_within(name: str, value: float, low: float, high: float, *, low_open: bool = False,
                   high_open: bool = False) -> None:  # fmt: skip
    """``low <= value <= high`` (strict at an open end), else one line naming the interval."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise UserError(f"{name}={value} is outside {interval}")


def validate(cfg: RunConfig) -> None:
    """Raise UserError for the first value of ``cfg`` that its task cannot run with."""
    task = task_of(cfg)
    if task == "convert":  # a checkpoint file in, one out: nothing else of the config is used
        return
    validate_data(cfg.data, sizes_used=task in ("train", "eval"))
    if task == "train":
        require_positive("train.epochs", cfg.train.epochs)
        require_positive("train.accumulation_steps", cfg.train.accumulation_steps)
        require_positive("train.eval_interval", cfg.train.eval_interval)
        if cfg.train.min_steps < 0:
            raise UserError(f"train.min_steps={cfg.train.min_steps} must be >= 0 (0: epochs alone decide)")
        best = choice_name(cfg.train.checkpoint.best_metric)
        if best.startswith("ema_") and not cfg.train.ema.enabled:
            raise UserError(f"train.checkpoint.best_metric={best} needs train.ema.enabled=true")
        _progressive(cfg)
    if task in ("export", "infer"):
        _export(cfg.export, cfg.data)
    if task == "infer":
        require_positive("infer.top_k", cfg.infer.top_k)
        if cfg.infer.print_limit < 0:
            raise UserError(f"infer.print_limit={cfg.infer.print_limit} must be >= 0 (0: the summary line alone)")


def validate_data(data: DataConfig, sizes_used: bool = True) -> None:
    """The data values (``sizes_used``: also the batch and image sizes, which train and eval use)."""
    if sizes_used:
        require_positive("data.batch_size", data.batch_size)
        require_positive("data.train_size", data.train_size)
        require_positive("data.eval_size", data.eval_size)
        require_positive("data.eval_batch_size", data.eval_batch_size)
    low, high = data.crop_scale
    if not 0.0 < low <= high <= 1.0:
        raise UserError(f"data.crop_scale={list(data.crop_scale)} must satisfy 0 < min <= max <= 1")
    low, high = data.crop_ratio
    if not 0.0 < low <= high:
        raise UserError(f"data.crop_ratio={list(data.crop_ratio)} must satisfy 0 < min <= max")
    require_positive("data.crop_attempts", data.crop_attempts)
    if not 0.0 < data.crop_pct <= 1.0:
        raise UserError(f"data.crop_pct={data.crop_pct} must be in (0, 1]")
    if choice_name(data.decode) == "fast" and choice_name(data.interpolation) != "bilinear":
        raise UserError(
            f"data.decode=fast resizes bilinearly from the downscaled decode; data.interpolation="
            f"{choice_name(data.interpolation)} needs data.decode=exact"
        )
    aug = data.augment
    if aug.randaug_layers > 0 and choice_name(aug.auto_augment) != "none":
        raise UserError("data.augment: choose RandAugment (randaug_layers > 0) or auto_augment, not both")
    if aug.randaug_magnitude < 0:
        raise UserError(
            f"data.augment.randaug_magnitude={aug.randaug_magnitude} must be >= 0 "
            "(the official level scale: 10 is each op's full range, higher levels extrapolate)"
        )
    if not 0.0 <= aug.cutout_ratio <= 1.0:
        raise UserError(f"data.augment.cutout_ratio={aug.cutout_ratio} must be in [0, 1]")


def _progressive(cfg: RunConfig) -> None:
    prog, epochs = cfg.progressive, cfg.train.epochs
    require_positive("progressive.stages", prog.stages, "1 turns it off")
    if prog.stages > epochs:
        raise UserError(f"progressive.stages={prog.stages} needs at least as many epochs; train.epochs={epochs}")
    if prog.stages == 1:
        ramps = [
            f"{name}_{end}" for name in REGULARISERS for end in ("min", "max") if prog[f"{name}_{end}"] is not None
        ]
        if prog.max_size != cfg.data.train_size:
            ramps.insert(0, "max_size")
        if ramps:
            raise UserError(
                f"progressive.{ramps[0]}={prog[ramps[0]]} has no effect with progressive.stages=1 "
                "(progressive=none); pick a schedule (progressive=paper|official_code|effnetv2_s|...) "
                "or set progressive.stages"
            )
        return
    if prog.min_size <= 0 or prog.max_size <= 0:
        raise UserError(f"progressive sizes must be positive: min_size={prog.min_size}, max_size={prog.max_size}")
    if prog.min_size > prog.max_size:
        raise UserError(
            f"progressive.min_size={prog.min_size} exceeds progressive.max_size={prog.max_size}; "
            "set progressive.min_size (the released code uses half the training size)"
        )
    for name, regulariser in REGULARISERS.items():
        low, high = prog[f"{name}_min"], prog[f"{name}_max"]
        if (low is None) != (high is None):
            raise UserError(f"set both progressive.{name}_min and progressive.{name}_max, or neither ({low}, {high})")
        if low is not None:
            for end, value in (("min", low), ("max", high)):
                require_within(
                    f"progressive.{name}_{end}", value, regulariser.lowest, regulariser.highest,
                    high_open=regulariser.highest_open,
                )  # fmt: skip
    if prog.randaug_min is not None and cfg.data.augment.randaug_layers <= 0:
        raise UserError(
            f"progressive.randaug_min/max ramp RandAugment, but data.augment.randaug_layers="
            f"{cfg.data.augment.randaug_layers}; set it (the official recipes use 2)"
        )


def _export(export: ExportConfig, data: DataConfig) -> None:
    size = export.image_size or data.eval_size
    if size <= 0 or export.batch_size <= 0:
        raise UserError(f"export.image_size={size} and export.batch_size={export.batch_size} must be positive")
    if any(b <= 0 for b in export.parity_batch_sizes):
        raise UserError(f"export.parity_batch_sizes={list(export.parity_batch_sizes)} must be positive batch sizes")
    if export.quantize.name == "int8":
        require_positive("export.calibration_images", export.calibration_images)
