"""Which images each rank trains at each step: data parallelism as sharded gradient accumulation.

An epoch's permutation (keyed by seed and epoch) is cut into optimizer steps of ``G = b x W x A``
images (per-device batch ``b``, ``W`` ranks, ``A`` accumulation micro-batches). Step ``k``
consumes the block ``order[k*G : (k+1)*G]``; inside it the ``W x A`` micro-batches of ``b``
images are numbered ``g = m*W + r`` for micro-batch ``m`` of rank ``r``. So rank ``r``'s
``i``-th micro-batch of the epoch is global micro-batch ``i*W + r``, and

- ranks train disjoint images whose union is the epoch minus the ``N mod G`` remainder;
- ``W`` ranks with accumulation ``A`` run the same micro-batches as one process with
  accumulation ``W x A``: averaged gradients of the same batches, the same BN batch statistics;
- a run resumes on another device count with the same global batch: the position is a number
  of optimizer steps, and every plan with the same ``G`` cuts the epoch into the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def epoch_order(num_images: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of image indices, a pure function of (seed, epoch)."""
    return np.random.default_rng((seed, epoch)).permutation(num_images)


@dataclass(frozen=True)
class BatchPlan:
    batch_size: int  # images per device and micro-batch
    world_size: int = 1
    accumulation: int = 1

    @property
    def micro_per_step(self) -> int:
        """Micro-batches of one optimizer step over all ranks."""
        return self.world_size * self.accumulation

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.micro_per_step

    def describe(self) -> str:
        return f"{self.batch_size} x {self.world_size} devices x {self.accumulation} accumulation = {self.global_batch}"

    def steps_per_epoch(self, num_images: int) -> int:
        return num_images // self.global_batch

    def dropped(self, num_images: int) -> int:
        """Images of each epoch that no step trains (the last partial global batch)."""
        return num_images - self.steps_per_epoch(num_images) * self.global_batch

    def rank_indices(self, order: np.ndarray, rank: int) -> np.ndarray:
        """Rank ``rank``'s image indices for the epoch, in training order: its micro-batch ``i``
        is ``order[g*b : (g+1)*b]`` with ``g = i*W + rank``."""
        micro_batches = self.steps_per_epoch(len(order)) * self.micro_per_step
        blocks = order[: micro_batches * self.batch_size].reshape(-1, self.world_size, self.batch_size)
        return blocks[:, rank].reshape(-1)

    def global_micro(self, local_micro: int, rank: int) -> int:
        """The number, counted over all ranks, of rank ``rank``'s micro-batch ``local_micro`` (both
        counted from the start of the run): the key of its dropout / drop-path masks and mixing."""
        return local_micro * self.world_size + rank
