"""Counter-based random numbers for stochastic depth and dropout.

MindSpore's random kernels keep their state inside the compiled graph, where a checkpoint
cannot reach it, so a resumed run would draw other masks than an uninterrupted one. Here every
uniform number is a pure function of (seed, layer salt, training step, element index), hashed
with lowbias32 on int64 tensors. The step lives in the model as the ``rng_step`` parameter,
which checkpoints carry, so resuming replays exactly the same masks.
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import ops

# The graph functions spell their constants out: MindSpore's amp rewrite (O1) re-parses them
# outside this module, where module-level names are not visible.
_U32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B1
_STEP_MULTIPLIER = 0x85EBCA77
_SALT_MULTIPLIER = 0xC2B2AE3D


def _mix(h):
    # lowbias32 (Wellons); shifts are floor divisions because right_shift has no CPU kernel
    h = ops.bitwise_xor(h, h // 65536)
    h = (h * 0x7FEB352D) & 0xFFFFFFFF
    h = ops.bitwise_xor(h, h // 32768)
    h = (h * 0x846CA68B) & 0xFFFFFFFF
    return ops.bitwise_xor(h, h // 65536)


def salt_key(salt: int) -> int:
    """A layer's salt spread over 32 bits; computed in Python, outside the graph, because the
    graph compiler folds integer constants in int64 and this product can exceed it."""
    return (salt * _SALT_MULTIPLIER) & _U32


def counter_uniform(shape: tuple, step, key: int):
    """U[0, 1) float32 numbers of ``shape``; ``step`` is an int64 tensor of one element and
    ``key`` a layer's :func:`salt_key`."""
    key = _mix((step.reshape(()) * 0x85EBCA77 + key) & 0xFFFFFFFF)
    index = ops.arange(0, math.prod(shape), dtype=ms.int64).reshape(shape)
    return _mix((index * 0x9E3779B1 + key) & 0xFFFFFFFF).astype(ms.float32) / 4294967296.0


def _mix_numpy(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> 16)
    h = (h * np.int64(0x7FEB352D)) & _U32
    h = h ^ (h >> 15)
    h = (h * np.int64(0x846CA68B)) & _U32
    return h ^ (h >> 16)


def counter_uniform_numpy(shape: tuple, step: int, salt: int) -> np.ndarray:
    """The same numbers computed with numpy, as a reference for tests."""
    with np.errstate(over="ignore"):
        key = _mix_numpy(np.int64((step * _STEP_MULTIPLIER + salt_key(salt)) & _U32))
        index = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
        return (_mix_numpy((index * np.int64(_GOLDEN) + key) & _U32) / 4294967296.0).astype(np.float32)
