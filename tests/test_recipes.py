"""Every official preset against the official code, value by value.

Each expected value cites where google/automl's efficientnetv2 code sets it (file: key); the
presets are composed exactly as ``python run.py experiment=<x>`` composes them. Where the paper
and the code differ the code wins (e.g. dropout is not ramped: main.py deletes ``dp_list``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from effv2.recipes import PRESETS, compose_preset, conformance_table, global_batch

IN1K = {
    "optimizer.name": ("rmsprop", "hparams.py: train.optimizer"),
    "optimizer.lr": (0.016, "datasets.py ImageNet: train.lr_base (per 256: main.py scaled_lr)"),
    "optimizer.decay": (0.9, "utils.py build_optimizer: decay"),
    "optimizer.momentum": (0.9, "utils.py build_optimizer: momentum"),
    "optimizer.eps": (1e-3, "utils.py build_optimizer: epsilon"),
    "optimizer.weight_decay": (1e-5, "hparams.py: train.weight_decay (excluding bias|gamma|beta)"),
    "scheduler.name": ("exponential", "datasets.py ImageNet: train.lr_sched"),
    "scheduler.warmup_epochs": (5.0, "datasets.py ImageNet: train.lr_warmup_epoch"),
    "scheduler.decay_rate": (0.97, "hparams.py: train.lr_decay_factor"),
    "scheduler.decay_epochs": (2.4, "hparams.py: train.lr_decay_epoch"),
    "global_batch": (4096, "hparams.py: train.batch_size"),
    "train.epochs": (350, "datasets.py ImageNet: train.epochs"),
    "train.step_counting": (
        "official",
        "main.py: steps_per_epoch=num_train_images / batch_size; max_steps=int(ratio * train_steps)",
    ),
    "train.min_steps": (0, "hparams.py: train.min_steps"),
    "train.label_smoothing": (0.1, "datasets.py ImageNet: train.label_smoothing"),
    "train.clip_grad_norm": (None, "hparams.py: train.gclip 0"),
    "train.ema.enabled": (True, "hparams.py: train.ema_decay > 0"),
    "train.ema.decay": (0.9999, "hparams.py: train.ema_decay"),
    "train.ema.warmup": (True, "main.py: ExponentialMovingAverage(num_updates=global_step)"),
    "model.drop_path_rate": (0.2, "hparams.py: model.survival_prob 0.8"),
    "model.bn_momentum": (0.9, "hparams.py: model.bn_momentum"),
    "model.bn_eps": (1e-3, "hparams.py: model.bn_epsilon"),
    "hardware.sync_bn": (False, "hparams.py: model.bn_type None (per-replica batch norm)"),
    "progressive.stages": (4, "effnetv2_configs.py efficientnetv2_config: train.stages"),
    "progressive.formula": ("official_code", "main.py: int(ibase + (isize - ibase) * (stage + 1) / stages)"),
    "progressive.min_size": (128, "hparams.py: data.ibase"),
    "progressive.dropout_min": (None, "main.py: del dp_list (dropout is not ramped)"),
    "progressive.mixup_min": (0.0, "main.py: mixup_list = np.linspace(0, mixup_alpha, stages)"),
    "progressive.cutmix_min": (0.0, "main.py: cutmix_list = np.linspace(0, cutmix_alpha, stages)"),
    "data.augment.mix_mode": ("official", "datasets.py: mixup / cutmix / mixing"),
    "data.hflip_prob": (0.5, "preprocessing.py: tf.image.random_flip_left_right"),
}
# preprocessing.py (augname 'randaug'), for S / M / L / XL
OFFICIAL_PREPROCESSING = {
    "data.train_crop": ("random_resized_crop", "preprocessing.py: sample_distorted_bounding_box"),
    "data.crop_scale": ([0.05, 1.0], "preprocessing.py: area_range=(0.05, 1.0)"),
    "data.crop_ratio": ([0.75, 1.33], "tf.image.sample_distorted_bounding_box: aspect_ratio_range default"),
    "data.crop_min_covered": (0.0, "preprocessing.py: min_object_covered=0"),
    "data.crop_attempts": (100, "tf.image.sample_distorted_bounding_box: max_attempts default"),
    "data.crop_fallback": ("full", "preprocessing.py: use_image_if_no_bounding_boxes=True"),
    "data.interpolation": ("bilinear", "preprocessing.py: tf.image.resize"),
    "data.eval_crop": ("official", "preprocessing.py preprocess_for_eval: crop below 320 px"),
    "data.mean": ([128.0] * 3, "preprocessing.py preprocess_image: (image - 128) / 128"),
    "data.std": ([128.0] * 3, "preprocessing.py preprocess_image: (image - 128) / 128"),
    "data.augment.randaug_layers": (2, "hparams.py: data.ra_num_layers"),
    "data.augment.auto_augment": ("none", "effnetv2_configs.py efficientnetv2_params: aug 'randaug'"),
    "progressive.randaug_min": (5.0, "main.py: ram_list = np.linspace(5, ram, stages)"),
}
# effnetv2_configs.py efficientnetv2_params: train_size, eval_size, dropout, randaug, mixup
VARIANTS = {
    "s": (300, 384, 0.2, 10, 0.0),
    "m": (384, 480, 0.3, 15, 0.2),
    "l": (384, 480, 0.4, 20, 0.5),
    "xl": (384, 512, 0.4, 20, 0.5),
    "b0": (192, 224, 0.2, 0, 0.0),
    "b1": (192, 240, 0.2, 0, 0.0),
    "b2": (208, 260, 0.3, 0, 0.0),
    "b3": (240, 300, 0.3, 0, 0.0),
}
# preprocess_legacy.py (augname 'effnetv1_autoaug'), for B0-B3
LEGACY_PREPROCESSING = {
    "data.train_crop": ("random_resized_crop", "preprocess_legacy.py: distorted_bounding_box_crop"),
    "data.crop_scale": ([0.08, 1.0], "preprocess_legacy.py _decode_and_random_crop: area_range"),
    "data.crop_ratio": ([0.75, 1.3333333], "preprocess_legacy.py _decode_and_random_crop: (3/4, 4/3)"),
    "data.crop_min_covered": (0.1, "preprocess_legacy.py _decode_and_random_crop: min_object_covered"),
    "data.crop_attempts": (10, "preprocess_legacy.py _decode_and_random_crop: max_attempts"),
    "data.crop_fallback": ("center", "preprocess_legacy.py: bad -> _decode_and_center_crop"),
    "data.interpolation": ("bicubic", "preprocess_legacy.py _resize_image: resize_bicubic"),
    "data.eval_crop": ("official_v1", "preprocess_legacy.py _decode_and_center_crop"),
    "data.mean": ([123.675, 116.28, 103.53], "preprocess_legacy.py: mean_rgb"),
    "data.std": ([58.395, 57.12, 57.375], "preprocess_legacy.py: stddev_rgb"),
    "data.augment.randaug_layers": (0, "effnetv2_configs.py efficientnetv2_params: aug 'effnetv1_autoaug'"),
    "data.augment.auto_augment": ("v0", "autoaugment.py distort_image: 'autoaug' -> policy v0"),
}
IN21K = {
    "optimizer.name": ("rmsprop", "hparams.py: train.optimizer"),
    "optimizer.lr": (0.008, "datasets.py ImageNet21k: train.lr_base"),
    "optimizer.weight_decay": (1e-5, "hparams.py: train.weight_decay"),
    "scheduler.name": ("cosine", "datasets.py ImageNet21k: train.lr_sched"),
    "scheduler.warmup_epochs": (1.0, "datasets.py ImageNet21k: train.lr_warmup_epoch"),
    "scheduler.min_lr": (0.0, "hparams.py: train.lr_min"),
    "global_batch": (4096, "hparams.py: train.batch_size"),
    "train.epochs": (60, "datasets.py ImageNet21k: train.epochs"),
    "train.step_counting": ("official", "main.py: steps_per_epoch=num_train_images / batch_size"),
    "train.min_steps": (0, "hparams.py: train.min_steps"),
    "train.label_smoothing": (0.0, "datasets.py ImageNet21k: train.label_smoothing"),
    "train.clip_grad_norm": (None, "hparams.py: train.gclip 0"),
    "train.ema.decay": (0.9999, "hparams.py: train.ema_decay"),
    "model.num_classes": (21843, "datasets.py ImageNet21kInput: num_classes"),
    "model.drop_rate": (1e-6, "datasets.py ImageNet21k: model.dropout_rate"),
    "model.drop_path_rate": (0.0, "datasets.py ImageNet21k: model.survival_prob 1.0"),
    "data.train_size": (224, "datasets.py ImageNet21k: train.isize"),
    "data.eval_size": (224, "datasets.py ImageNet21k: eval.isize"),
    "progressive.stages": (1, "datasets.py ImageNet21k: train.stages 0"),
    "data.augment.randaug_layers": (0, "datasets.py ImageNet21k: data.augname None"),
    "data.augment.mixup_alpha": (0.0, "datasets.py ImageNet21k: data.mixup_alpha"),
    "data.augment.cutmix_alpha": (0.0, "datasets.py ImageNet21k: data.cutmix_alpha"),
    "data.crop_scale": ([0.05, 1.0], "preprocessing.py: area_range=(0.05, 1.0)"),
    "data.eval_crop": ("official", "preprocessing.py preprocess_for_eval"),
    "data.mean": ([128.0] * 3, "preprocessing.py preprocess_image"),
    "hardware.sync_bn": (False, "hparams.py: model.bn_type None"),
}
FINETUNE = {
    "optimizer.name": ("rmsprop", "datasets.py ImagenetFt: train.optimizer"),
    "optimizer.lr": (5e-4, "datasets.py ImagenetFt: train.lr_base"),
    "optimizer.weight_decay": (1e-5, "datasets.py ImagenetFt: train.weight_decay"),
    "scheduler.name": ("constant", "datasets.py ImagenetFt: train.lr_sched"),
    "scheduler.warmup_epochs": (1.0, "datasets.py ImagenetFt: train.lr_warmup_epoch"),
    "global_batch": (512, "datasets.py ImagenetFt: train.batch_size"),
    "train.epochs": (15, "datasets.py ImagenetFt: train.epochs"),
    "train.step_counting": ("official", "main.py: steps_per_epoch=num_train_images / batch_size"),
    "train.min_steps": (10_000, "datasets.py ImagenetFt: train.min_steps (main.py: max(min_steps, epochs * N // B))"),
    "train.label_smoothing": (0.1, "datasets.py ImagenetFt: train.label_smoothing"),
    "train.clip_grad_norm": (None, "hparams.py: train.gclip 0"),
    "train.ema.enabled": (True, "datasets.py ImagenetFt: train.ema_decay > 0"),
    "train.ema.decay": (0.9996, "datasets.py ImagenetFt: train.ema_decay"),
    "model.drop_rate": (1e-6, "datasets.py ImagenetFt: model.dropout_rate"),
    "model.drop_path_rate": (0.2, "datasets.py ImagenetFt: model.survival_prob 0.8"),
    "progressive.stages": (1, "datasets.py ImagenetFt: train.stages 0"),
    "data.train_crop": ("squash", "preprocessing.py preprocess_for_finetune: tf.image.resize, no crop"),
    "data.eval_crop": ("squash", "preprocessing.py preprocess_for_finetune: is_training False"),
    "data.interpolation": ("bilinear", "preprocessing.py preprocess_for_finetune: tf.image.resize"),
    "data.hflip_prob": (0.5, "preprocessing.py preprocess_for_finetune: random_flip_left_right"),
    "data.mean": ([127.5] * 3, "preprocessing.py preprocess_for_finetune: (image / 255 - 0.5) / 0.5"),
    "data.augment.randaug_layers": (0, "datasets.py ImagenetFt: data.augname 'ft'"),
    "data.augment.cutout_ratio": (0.5, "preprocessing.py preprocess_for_finetune: pad_size=image_size // 4"),
    "data.augment.cutout_fill": ("uniform", "preprocessing.py preprocess_for_finetune: tf.random.uniform"),
    "data.augment.mixup_alpha": (0.0, "datasets.py ImagenetFt: data.mixup_alpha"),
    "hardware.sync_bn": (False, "hparams.py: model.bn_type None"),
}
# preprocessing ("ft") trains at int(eval_size * 1.0) // 16 * 16 (main.py, train.isize 1.0)
FINETUNE_SIZES = {"s": 384, "m": 480, "l": 480, "xl": 512}


def expected_values(preset: str) -> dict[str, tuple]:
    variant, kind = preset.removeprefix("effnetv2_").split("_", 1)
    if kind == "in1k":
        train_size, eval_size, dropout, randaug, mix = VARIANTS[variant]
        where = f"effnetv2_configs.py efficientnetv2_params['efficientnetv2-{variant}']"
        values = {**IN1K, **(LEGACY_PREPROCESSING if variant.startswith("b") else OFFICIAL_PREPROCESSING)}
        values.update({
            "model.name": (f"effnetv2_{variant}", where),
            "data.train_size": (train_size, f"{where}: train_size"),
            "progressive.max_size": (train_size, f"{where}: train_size (main.py stages end at it)"),
            "data.eval_size": (eval_size, f"{where}: eval_size"),
            "model.drop_rate": (dropout, f"{where}: dropout"),
            "data.augment.mixup_alpha": (mix, f"{where}: mixup"),
            "data.augment.cutmix_alpha": (mix, f"{where}: mixup (cutmix_alpha=mix)"),
        })  # fmt: skip
        if randaug:
            values["data.augment.randaug_magnitude"] = (float(randaug), f"{where}: randaug")
            values["progressive.randaug_max"] = (float(randaug), f"{where}: randaug (main.py linspace end)")
        return values
    if kind == "in21k":
        return {**IN21K, "model.name": (f"effnetv2_{variant}", "effnetv2_configs.py")}
    size = FINETUNE_SIZES[variant]
    return {
        **FINETUNE,
        "model.name": (f"effnetv2_{variant}", "effnetv2_configs.py"),
        "data.train_size": (size, "datasets.py ImagenetFt: train.isize 1.0 (main.py: of the eval size)"),
        "data.eval_size": (size, "effnetv2_configs.py efficientnetv2_params: eval_size"),
    }


def _lookup(cfg, key: str):
    if key == "global_batch":
        return global_batch(cfg)
    node = cfg
    for part in key.split("."):
        node = node[part]
    value = getattr(node, "name", node)
    return list(value) if hasattr(value, "__iter__") and not isinstance(value, str) else value


OFFICIAL = [p for p in PRESETS if p != "effnetv2_s_finetune"]


@pytest.mark.parametrize("preset", OFFICIAL)
def test_preset_equals_the_official_code(preset: str) -> None:
    cfg = compose_preset(preset)
    wrong = []
    for key, (expected, source) in expected_values(preset).items():
        actual = _lookup(cfg, key)
        same = actual == pytest.approx(expected) if isinstance(expected, float) else actual == expected
        if not same:
            wrong.append(f"{key}: {actual!r}, official {expected!r} ({source})")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("preset", ["effnetv2_s_finetune", "effnetv2_m_finetune_official"])
def test_fine_tune_presets_need_pretrained_weights_to_train_only(preset: str) -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from effv2.recipes import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        train = compose(config_name="config", overrides=[f"experiment={preset}", "data.root=/data"])
        evaluate = compose(config_name="config", overrides=[f"experiment={preset}", "data.root=/data", "task=eval"])
    with pytest.raises(Exception, match="this configuration needs model.pretrained"):
        OmegaConf.to_container(train, resolve=True)
    assert OmegaConf.to_container(evaluate, resolve=True)["model"]["pretrained"] is None


def test_readme_carries_the_generated_recipe_table() -> None:
    from conftest import REPO

    assert conformance_table() in (REPO / "docs" / "configuration.md").read_text(), "run python -m effv2.recipes"


# one short run per preset family on the tiny digits ImageFolder: the micro network at 32 px with
# the preset's own preprocessing, 2 epochs (2 stages where the recipe is staged)
FAMILIES = {
    "effnetv2_l_in1k": ("progressive.stages=2", "progressive.min_size=16"),  # RandAugment, official mixing
    "effnetv2_b0_in1k": ("progressive.stages=2", "progressive.min_size=16"),  # V1 preprocessing, AutoAugment
    "effnetv2_s_in21k": (),
    # its min_steps=10000 would make 2 epochs of 80 images 2000 epochs (tests/test_step_plan.py)
    "effnetv2_s_finetune_official": ("model.pretrained={pretrained}", "train.min_steps=0"),
    "effnetv2_s_finetune": ("model.pretrained={pretrained}",),
}


@pytest.fixture(scope="module")
def micro_pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A micro checkpoint with a 21-class head, standing in for a converted 21k checkpoint."""
    from types import SimpleNamespace

    from effv2.checkpoints import model_entries, save_atomic
    from effv2.models import build_model

    spec = SimpleNamespace(
        name="effnetv2_micro", num_classes=21, in_channels=3, drop_rate=None, drop_path_rate=0.2, bn_eps=1e-3,
        bn_momentum=0.9,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("pretrained") / "micro21.ckpt"
    save_atomic(model_entries(build_model(spec, seed=1)), path, {"variant": "effnetv2_micro", "num_classes": 21})
    return path


@pytest.mark.parametrize("preset", sorted(FAMILIES))
def test_each_preset_family_trains_and_walks_its_stages(preset: str, tiny_folder, micro_pretrained, tmp_path) -> None:
    import csv

    from conftest import run_cli

    staged = any(o.startswith("progressive.stages") for o in FAMILIES[preset])
    overrides = [o.format(pretrained=micro_pretrained) for o in FAMILIES[preset]]
    result = run_cli(
        f"experiment={preset}", "hardware=cpu", "model=effnetv2_micro", "model.num_classes=10", "data=imagefolder",
        f"data.root={tiny_folder}", "data.num_classes=10", "data.batch_size=16", "data.train_size=32",
        "data.eval_size=32", "train.epochs=2", *overrides, f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with (tmp_path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected = [("0", "24"), ("1", "32")] if staged else [("0", "32")] * 2
    assert [(r["stage"], r["image_size"]) for r in rows] == expected
    assert all(float(r["train_loss"]) > 0 for r in rows)
    if "pretrained" in "".join(overrides):
        assert (
            "classifier re-initialised: the checkpoint has 21 classes, this model 10" in result.stdout + result.stderr
        )
