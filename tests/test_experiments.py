"""The seed recipe against SPEC.md (the official presets: test_recipes.py)."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from conftest import CONF_DIR, one_line_error, run_cli
from effv2.config import register_configs

register_configs()


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _value(node):
    return getattr(node, "name", node)


# SPEC section 1, "Seed recipe effnetv2_s_finetune", key by key
SEED_RECIPE = {
    "model.name": "effnetv2_s",
    "model.num_classes": 1000,
    "data.train_size": 384,
    "data.eval_size": 384,
    "data.interpolation": "bilinear",
    "optimizer.name": "rmsprop",
    "optimizer.decay": 0.9,
    "optimizer.momentum": 0.9,
    "optimizer.eps": 1e-3,
    "optimizer.lr": 5e-4,
    "optimizer.weight_decay": 1e-5,
    "scheduler.name": "constant",
    "scheduler.warmup_epochs": 1.0,
    "scheduler.warmup_lr": 0.0,
    "train.label_smoothing": 0.1,
    "train.epochs": 15,
    "data.batch_size": 32,
    "model.drop_path_rate": 0.2,
    "model.drop_rate": 1e-6,
    "train.clip_grad_norm": 5.0,
    "train.loss_scale.kind": "dynamic",
    "train.loss_scale.value": 4096.0,
    "train.loss_scale.factor": 2.0,
    "train.loss_scale.window": 1000,
    "hardware.amp_level": "O0",
    "hardware.name": "ascend910_16p",
    "data.hflip_prob": 0.5,
    "data.augment.cutout_ratio": 0.5,
    "data.eval_crop": "center",
    "data.crop_pct": 0.875,
}


def test_seed_recipe_matches_spec_key_by_key() -> None:
    cfg = _compose("experiment=effnetv2_s_finetune", "data.root=/data/imagenet")
    for key, expected in SEED_RECIPE.items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert _value(node) == expected, key
    assert cfg.hardware.devices_per_node * cfg.hardware.nodes == 16


def test_none_experiment_keeps_group_defaults() -> None:
    cfg = _compose("experiment=none")
    assert cfg.optimizer.lr == 1e-3 and cfg.train.epochs == 10


def test_seed_recipe_without_pretrained_weights_is_one_line(tmp_path) -> None:
    result = run_cli("experiment=effnetv2_s_finetune", "data.root=/data/imagenet", f"hydra.run.dir={tmp_path}")
    line = one_line_error(result)
    assert "this configuration needs model.pretrained=<the converted ImageNet-21k checkpoint" in line
