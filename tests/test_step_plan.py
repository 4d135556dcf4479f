"""Steps, epochs and stage boundaries (effv2.step_plan, effv2.progressive) against google/automl
``efficientnetv2/main.py``, whose lines are transcribed here as the reference:

    params = dict(steps_per_epoch=num_train_images / config.train.batch_size, ...)
    train_steps = max(config.train.min_steps, config.train.epochs * num_train_images // config.train.batch_size)
    for stage in range(curr_step // train_steps, total_stages):
        ratio = float(stage + 1) / float(total_stages)
        max_steps = int(ratio * train_steps)
        image_size = int(ibase + (input_image_size - ibase) * ratio)

and ``model_fn``: ``train_steps = max(min_steps, epochs * params['steps_per_epoch'])`` (a float)
for the decaying schedules; the data is ``shuffle().repeat()`` before ``batch()``
(``datasets.py``), one stream over the passes."""

from __future__ import annotations

import csv
import json
import signal
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import run_cli, sigterm_once_logged, tiny_data
from effv2.config.schema import StepCounting, register_configs
from effv2.data.pipeline import open_train_split
from effv2.data.sharding import epoch_order
from effv2.progressive import build_schedule
from effv2.recipes import CONF_DIR
from effv2.step_plan import build_step_plan, runs_of

# the official split sizes (datasets.py): ImageNet train without minival; CIFAR-10 train
IMAGENET_TRAIN, CIFAR10_TRAIN = 1_256_144, 50_000


def _train(counting: str, epochs: int, min_steps: int = 0) -> SimpleNamespace:
    return SimpleNamespace(step_counting=StepCounting(counting), epochs=epochs, min_steps=min_steps)


def _main_py(num_train_images: int, batch_size: int, epochs: int, min_steps: int, total_stages: int) -> dict:
    train_steps = max(min_steps, epochs * num_train_images // batch_size)
    stage_ends = [int(float(stage + 1) / float(total_stages) * train_steps) for stage in range(total_stages)]
    return {
        "steps_per_epoch": num_train_images / batch_size,
        "train_steps": train_steps,
        "stage_ends": stage_ends,
        "decay_steps": max(min_steps, epochs * (num_train_images / batch_size)),
    }


def _compose(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=["data.root=/data", "model.pretrained=/p.ckpt", *overrides])


@pytest.mark.parametrize("preset", ["effnetv2_s_in1k", "effnetv2_m_in1k", "effnetv2_l_in1k"])
def test_official_stages_end_at_main_py_steps_inside_epochs(preset: str) -> None:
    cfg = _compose(f"experiment={preset}")
    batch = 4096  # the paper's global batch; 16 x 256 would give the same boundaries in steps
    steps = build_step_plan(cfg.train, IMAGENET_TRAIN, batch)
    reference = _main_py(IMAGENET_TRAIN, batch, cfg.train.epochs, cfg.train.min_steps, cfg.progressive.stages)
    assert steps.counting is StepCounting.official
    assert steps.steps_per_epoch == reference["steps_per_epoch"]  # 306.67..., not 306
    assert steps.total_steps == reference["train_steps"] == 107_336
    assert steps.decay_steps == reference["decay_steps"]
    stages = build_schedule(cfg, steps)
    assert [s.end_step for s in stages] == reference["stage_ends"]
    assert [s.first_step for s in stages] == [0, *reference["stage_ends"][:-1]]
    # the boundaries fall inside epochs: whole epochs of 306 steps could not hold them
    assert [s.end_step % 306 for s in stages[:-1]] != [0, 0, 0]
    # epoch e ends after step e x N // B; the stage's epochs are those its steps belong to
    assert steps.epoch_ends[:3] == (306, 613, 920) and steps.epochs == 350
    assert stages[1].first_epoch == steps.epoch_of(stages[1].first_step) == 88  # step 26834 / 306.68 = 87.5


def test_official_fine_tune_trains_its_minimum_steps() -> None:
    # ImagenetFt / Cifar10Ft: 15 epochs of CIFAR-10 at 512 are 1464 steps; min_steps makes them 10000
    cfg = _compose("experiment=effnetv2_s_finetune_official")
    assert (cfg.train.min_steps, cfg.train.epochs) == (10_000, 15)
    steps = build_step_plan(cfg.train, CIFAR10_TRAIN, 512)
    reference = _main_py(CIFAR10_TRAIN, 512, 15, 10_000, 1)
    assert steps.total_steps == reference["train_steps"] == 10_000
    assert steps.decay_steps == reference["decay_steps"] == 10_000
    assert steps.epochs == 103 and steps.epoch_ends[-2:] == (9960, 10_000)  # the last epoch is partial
    # on ImageNet the rule does not bite: 15 x 1,281,167 // 512 steps
    assert build_step_plan(cfg.train, 1_281_167, 512).total_steps == 37_534


def test_the_seed_preset_keeps_whole_epochs() -> None:
    cfg = _compose("experiment=effnetv2_s_finetune")
    steps = build_step_plan(cfg.train, 1_281_167, 512)
    assert steps.counting is StepCounting.whole_epochs
    assert (steps.steps_per_epoch, steps.total_steps, steps.dropped_per_epoch()) == (2502, 15 * 2502, 143)


@pytest.mark.parametrize("min_steps", [0, 7, 12])
def test_whole_epochs_round_min_steps_up_to_epochs(min_steps: int) -> None:
    steps = build_step_plan(_train("whole_epochs", 2, min_steps), 25, 8)  # 3 steps per epoch
    assert steps.epoch_ends == {0: (3, 6), 7: (3, 6, 9), 12: (3, 6, 9, 12)}[min_steps]


def _order(num_images: int):
    return lambda pass_number: np.random.default_rng(pass_number).permutation(num_images)


def test_official_stream_is_the_passes_end_to_end_in_global_batches() -> None:
    num_images, batch = 10, 4
    steps = build_step_plan(_train("official", 5), num_images, batch)
    assert (steps.total_steps, steps.epoch_ends) == (12, (2, 5, 7, 10, 12))
    passes, indices = steps.stream(0, steps.total_steps, _order(num_images))
    # 48 images: passes 1-4 whole and 8 of pass 5, in order; a batch straddles passes 1 and 2
    expected = np.concatenate([_order(num_images)(p) for p in range(1, 6)])[:48]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(passes, np.repeat([1, 2, 3, 4, 5], 10)[:48])
    # any window of steps is the same slice of that stream: what a resume or a stage switch reads
    for first, end in [(2, 5), (3, 4), (7, 12)]:
        window_passes, window = steps.stream(first, end, _order(num_images))
        np.testing.assert_array_equal(window, expected[first * batch : end * batch])
        np.testing.assert_array_equal(window_passes, passes[first * batch : end * batch])
    runs = runs_of(*steps.stream(2, 5, _order(num_images)))
    assert [(p, len(part)) for p, part in runs] == [(1, 2), (2, 10)]


def test_whole_epoch_stream_is_each_epochs_own_order_cut_to_whole_steps() -> None:
    steps = build_step_plan(_train("whole_epochs", 3), 10, 4)
    assert (steps.epoch_ends, steps.dropped_per_epoch()) == ((2, 4, 6), 2)
    passes, indices = steps.stream(3, 4, _order(10))
    np.testing.assert_array_equal(indices, _order(10)(2)[4:8])
    assert set(passes) == {2}
    with pytest.raises(ValueError, match="cross the end of epoch 2"):
        steps.stream(3, 5, _order(10))


# 80 training images at a global batch of 12: 6.67 steps per epoch, 3 epochs = 20 steps; two
# stages end at steps 10 and 20, the first inside epoch 2 (steps 6-12)
OFFICIAL = (
    "train.epochs=3", "train.step_counting=official", "progressive=paper", "progressive.stages=2",
    "progressive.min_size=16", "progressive.randaug_min=null", "progressive.randaug_max=null",
    "data.augment.randaug_layers=0", "data.record_reads=true", "hardware.num_workers=1", "scheduler=cosine",
)  # fmt: skip


@pytest.fixture(scope="module")
def official_run(tiny_folder, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("official")
    overrides = (*tiny_data(tiny_folder, batch_size=12), *OFFICIAL)
    result = run_cli(*overrides, f"hydra.run.dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, overrides


def test_an_official_run_reads_the_continuous_stream_and_switches_stage_inside_an_epoch(
    official_run, tiny_folder
) -> None:
    run_dir, _ = official_run
    cfg = _compose(*tiny_data(tiny_folder, batch_size=12), *OFFICIAL)
    split = open_train_split(cfg.data)
    # main.py's stream: the shuffled passes end to end, 12 images a step
    stream = np.concatenate([epoch_order(80, cfg.seed, p) for p in (1, 2, 3)])
    for epoch, (first, end) in enumerate([(0, 6), (6, 13), (13, 20)], start=1):
        reads = (run_dir / "reads" / f"epoch{epoch:04d}_rank0.txt").read_text().splitlines()
        assert reads == [str(split.files[i]) for i in stream[first * 12 : end * 12]], f"epoch {epoch}"
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["stage"], r["image_size"], r["train_images"], r["dropped_images"]) for r in rows] == [
        ("0", "16", "72", "0"), ("1", "32", "84", "0"), ("1", "32", "84", "0"),
    ]  # fmt: skip
    log = (run_dir / "run.log").read_text()
    assert "training 3 epochs 20 steps, 6.66667 steps per epoch" in log
    assert "stage 1/2 (steps 0-9, in epochs 1-2): image size 16" in log
    assert "stage 2/2 (steps 10-19, in epochs 2-3): image size 32" in log


def test_an_official_run_stopped_inside_a_stage_resumes_to_the_same_weights(official_run, tmp_path) -> None:
    reference, overrides = official_run
    stopped = tmp_path / "stopped"
    # stopped once stage 2 begins: at step 10, inside epoch 2
    assert sigterm_once_logged(overrides, stopped, "stage 2/2") == 128 + signal.SIGTERM
    meta = json.loads(str(ms.load_checkpoint(str(stopped / "checkpoints" / "recovery.ckpt"))["effv2_meta"]))
    assert meta["stage"] == 1 and meta["steps"]["counting"] == "official"

    resumed = tmp_path / "resumed"
    result = run_cli(*overrides, f"resume={stopped}", f"hydra.run.dir={resumed}")
    assert result.returncode == 0, result.stderr[-3000:]
    expected = ms.load_checkpoint(str(reference / "checkpoints" / "last.ckpt"))
    actual = ms.load_checkpoint(str(resumed / "checkpoints" / "last.ckpt"))
    assert set(expected) == set(actual)
    for name in sorted(set(expected) - {"effv2_meta"}):
        np.testing.assert_array_equal(actual[name].asnumpy(), expected[name].asnumpy(), err_msg=name)
    # and it cannot be continued as a whole-epoch run: that maps the epochs to other images
    refused = run_cli(
        *overrides, "train.step_counting=whole_epochs", f"resume={stopped}", f"hydra.run.dir={tmp_path / 'x'}"
    )
    assert refused.returncode == 2 and "set train.step_counting=official" in refused.stdout + refused.stderr
