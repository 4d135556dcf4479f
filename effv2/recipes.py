"""The training recipes side by side, read from the composed presets (what ``python run.py
experiment=<x> --cfg job`` shows): ``python -m effv2.recipes`` prints the Markdown table
that docs/configuration.md carries, and tests/test_recipes.py checks every value against the official code."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from effv2.config.schema import choice_name, register_configs

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# the seed's recipe first, then the official ones in the order of the paper's tables
PRESETS = (
    "effnetv2_s_finetune",
    *(f"effnetv2_{v}_in1k" for v in ("s", "m", "l", "xl", "b0", "b1", "b2", "b3")),
    *(f"effnetv2_{v}_in21k" for v in ("s", "m", "l", "xl")),
    *(f"effnetv2_{v}_finetune_official" for v in ("s", "m", "l", "xl")),
)

# values the presets leave to the user: a data root, pretrained weights
PLACEHOLDERS = ("data.root=/data", "model.pretrained=/pretrained.ckpt")


def compose_preset(name: str, *overrides: str) -> DictConfig:
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[f"experiment={name}", *PLACEHOLDERS, *overrides])


def global_batch(cfg: DictConfig) -> int:
    hw = cfg.hardware
    return cfg.data.batch_size * hw.devices_per_node * hw.nodes * cfg.train.accumulation_steps


def _values(numbers: list[float]) -> str:
    """Each distinct value once, to three significant digits."""
    return ", ".join(dict.fromkeys(f"{n:.3g}" for n in numbers))


def recipe_row(name: str, cfg: DictConfig) -> dict[str, str]:
    """One preset's recipe; staged values are listed per stage (progressive learning)."""
    from effv2.progressive import build_schedule
    from effv2.step_plan import build_step_plan

    data, aug, train = cfg.data, cfg.data.augment, cfg.train
    # the stages' values do not depend on the image count: one step per epoch will do
    stages = build_schedule(cfg, build_step_plan(train, global_batch(cfg), global_batch(cfg)))
    parts = []
    if aug.randaug_layers > 0:
        parts.append(f"RandAugment {aug.randaug_layers} x ({_values([s['randaug'] for s in stages])})")
    if choice_name(aug.auto_augment) != "none":
        parts.append(f"AutoAugment {choice_name(aug.auto_augment)}")
    if aug.cutout_ratio > 0:
        parts.append(f"cutout {aug.cutout_ratio:g} ({choice_name(aug.cutout_fill)})")
    return {
        "preset": f"`{name}`",
        "train px per stage": _values([s.image_size for s in stages]),
        "eval px": f"{data.eval_size} ({choice_name(data.eval_crop)})",
        "augmentation": ", ".join(parts) or "-",
        "mixup / cutmix": f"{_values([s['mixup'] for s in stages])} / {_values([s['cutmix'] for s in stages])}",
        "dropout": _values([s["dropout"] for s in stages]),
        "drop path": f"{cfg.model.drop_path_rate:g}",
        "lr / 256": f"{cfg.optimizer.lr:g} {choice_name(cfg.scheduler.name)}",
        "batch": str(global_batch(cfg)),
        "epochs": str(train.epochs),
        "steps": choice_name(train.step_counting).replace("_", " ")
        + (f", >= {train.min_steps}" if train.min_steps else ""),
        "EMA": f"{train.ema.decay:g}" if train.ema.enabled else "-",
        "clip": "-" if train.clip_grad_norm is None else f"{train.clip_grad_norm:g}",
    }


def conformance_table() -> str:
    rows = [recipe_row(name, compose_preset(name)) for name in PRESETS]
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[c] for c in columns) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(conformance_table())
