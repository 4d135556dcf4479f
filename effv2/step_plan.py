"""How a run's epochs map to optimizer steps, and which images each step trains
(``train.step_counting``; N training images, B the global batch, E = ``train.epochs``).

whole_epochs  S = N // B steps per epoch; epoch e is steps (e - 1) x S .. e x S - 1 and trains
              the first S x B images of its own shuffled order, the rest of it is dropped.
official      google/automl ``efficientnetv2/main.py``: S = N / B as a float
              (``steps_per_epoch=num_train_images / batch_size``), T = max(min_steps, E x N // B)
              steps (``train_steps``). The images are one stream, the shuffled orders of pass 1,
              2, ... end to end (the released input repeats the shuffled data before batching it,
              ``datasets.py``); step s trains stream positions s x B .. (s + 1) x B - 1, so a
              batch can hold the end of one pass and the start of the next. Epoch e ends after
              step min(T, e x N // B): the epoch a step's images mostly come from.

Both honour ``train.min_steps``; whole_epochs rounds it up to whole epochs.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from effv2.config.schema import StepCounting, TrainConfig


@dataclass(frozen=True)
class StepPlan:
    counting: StepCounting
    num_images: int
    global_batch: int
    steps_per_epoch: float  # a whole number for whole_epochs
    total_steps: int
    epoch_ends: tuple[int, ...]  # the step count after each epoch; the last is total_steps
    # the step count a decaying schedule (cosine) spans: model_fn's float train_steps officially
    decay_steps: float

    @property
    def epochs(self) -> int:
        return len(self.epoch_ends)

    @property
    def continuous(self) -> bool:
        return self.counting is StepCounting.official

    def epoch_start(self, epoch: int) -> int:
        return 0 if epoch == 1 else self.epoch_ends[epoch - 2]

    def epoch_end(self, epoch: int) -> int:
        return self.epoch_ends[epoch - 1]

    def epoch_of(self, step: int) -> int:
        """The epoch (1-based) that step ``step`` (0-based) belongs to."""
        return bisect.bisect_right(self.epoch_ends, step) + 1

    def dropped_per_epoch(self) -> int:
        """Images of each epoch that no step trains (official: none, they start the next batch)."""
        return 0 if self.continuous else self.num_images - int(self.steps_per_epoch) * self.global_batch

    def stream(
        self, first_step: int, end_step: int, order_of: Callable[[int], np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The images steps ``first_step`` .. ``end_step - 1`` train, over all ranks in training
        order: (pass of each, image index of each). A pass is one shuffled order of the whole
        split, ``order_of(pass)``, and keys its images' augmentation; with whole_epochs the pass
        is the epoch and the steps must lie in one epoch."""
        batch = self.global_batch
        if not self.continuous:
            epoch = self.epoch_of(first_step)
            if end_step > self.epoch_end(epoch):
                raise ValueError(f"steps {first_step}..{end_step - 1} cross the end of epoch {epoch}")
            start = self.epoch_start(epoch)
            indices = order_of(epoch)[(first_step - start) * batch : (end_step - start) * batch]
            return np.full(len(indices), epoch, np.int64), indices
        passes, parts = [], []
        position, end = first_step * batch, end_step * batch
        while position < end:
            pass_number = position // self.num_images + 1
            offset = position - (pass_number - 1) * self.num_images
            take = min(end - position, self.num_images - offset)
            parts.append(order_of(pass_number)[offset : offset + take])
            passes.append(np.full(take, pass_number, np.int64))
            position += take
        return np.concatenate(passes), np.concatenate(parts)

    def describe(self) -> str:
        if self.continuous:
            return f"{self.steps_per_epoch:.6g} steps per epoch (one continuous stream, the official counting)"
        return f"{int(self.steps_per_epoch)} steps per epoch"


def build_step_plan(train: TrainConfig, num_images: int, global_batch: int) -> StepPlan:
    """The run's steps for ``num_images`` training images (at least ``global_batch``, checked
    where the split is opened) at ``global_batch`` images per step."""
    counting = StepCounting(train.step_counting)
    if counting is StepCounting.whole_epochs:
        per_epoch = num_images // global_batch
        epochs = max(train.epochs, math.ceil(train.min_steps / per_epoch))
        ends = tuple(per_epoch * e for e in range(1, epochs + 1))
        return StepPlan(counting, num_images, global_batch, per_epoch, ends[-1], ends, ends[-1])
    total = max(train.min_steps, train.epochs * num_images // global_batch)
    ends = []
    while not ends or ends[-1] < total:
        ends.append(min(total, (len(ends) + 1) * num_images // global_batch))
    decay = max(train.min_steps, train.epochs * num_images / global_batch)
    return StepPlan(counting, num_images, global_batch, num_images / global_batch, total, tuple(ends), decay)


def runs_of(passes: np.ndarray, indices: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``indices`` cut where their pass changes: [(pass, indices of it), ...] in order."""
    cuts = np.flatnonzero(np.diff(passes)) + 1
    pieces = zip(np.split(passes, cuts), np.split(indices, cuts), strict=True)
    return [(int(p[0]), part) for p, part in pieces if len(part)]
