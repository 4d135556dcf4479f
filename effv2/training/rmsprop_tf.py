"""RMSProp with TensorFlow 1 semantics, as the official EfficientNet(V2) recipes train.

    g   <- g + weight_decay * w                          (decayed parameters only)
    ms  <- decay * ms + (1 - decay) * g^2              (ms starts at 1, not 0)
    mom <- momentum * mom + lr * g / sqrt(ms + eps)     (eps inside the square root)
    w   <- w - mom

MindSpore's ``nn.RMSProp`` starts ms at 1 as well, but its CPU kernel divides by
``sqrt(ms) + eps`` (measured), which differs from TensorFlow once eps is as large as the
recipe's 1e-3; hence this optimizer.

The slots are single flat buffers over all parameters and the update runs once over the
concatenated gradients: per-parameter updates cost ~10 kernel launches per parameter per
step, which on CPU made the optimizer a sixth of a B0 training step (benchmarks/
profile_train_step.py). Only the final ``w -= mom`` stays per parameter. On CPU (unless
``hardware.cpu_kernels=false``) :func:`use_fused_update` runs the whole step as one AOT custom
operator (``effv2/kernels/rmsprop.cc``) that updates the slots and the parameters in place: one
pass where MindSpore's graph makes ~15 and ~500 launches, with the same values bit for bit.
"""

from __future__ import annotations

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from effv2.kernels.build import kernel_library

_flatten = ops.MultitypeFuncGraph("flatten")


@_flatten.register("Tensor")
def _flatten_one(tensor):
    return tensor.reshape((-1,))


_apply = ops.MultitypeFuncGraph("apply")


@_apply.register("Tensor", "Tensor", "Number", "Number")
def _apply_one(moment, param, start, end):
    return ops.assign_sub(param, moment[start:end].reshape(param.shape))


class TFRMSProp(nn.Optimizer):
    def __init__(self, params, learning_rate, decay: float = 0.9, momentum: float = 0.9, epsilon: float = 1e-3):
        """``params``: parameters, or groups ``{"params": [...], "weight_decay": wd}``."""
        params = list(params)
        groups = params if params and isinstance(params[0], dict) else [{"params": params, "weight_decay": 0.0}]
        decay_of = {id(p): float(g.get("weight_decay", 0.0)) for g in groups for p in g["params"]}
        # nn.Optimizer would apply the decay per parameter; it is folded into the flat update instead
        super().__init__(learning_rate, [{"params": g["params"]} for g in groups])
        sizes = [int(p.size) for p in self._parameters]
        total = sum(sizes)
        # each parameter's slice of the flat buffers (SplitV has no CPU kernel)
        ends = np.cumsum(sizes)
        self.starts = tuple(int(e - n) for e, n in zip(ends, sizes, strict=True))
        self.ends = tuple(int(e) for e in ends)
        self.mean_square = Parameter(Tensor(np.ones(total, np.float32)), name="mean_square", requires_grad=False)
        self.moment = Parameter(Tensor(np.zeros(total, np.float32)), name="moment", requires_grad=False)
        coefficients = np.concatenate([np.full(int(p.size), decay_of[id(p)], np.float32) for p in self._parameters])
        self.has_decay = bool(coefficients.any())
        self.decay_coefficients = Tensor(coefficients)
        self.decay = float(decay)
        # 1 - decay in float32, as TensorFlow's kernel has it (0.100000024 for 0.9) and as GRAPH mode
        # folded the expression; PYNATIVE folded it in float64 (0.1): one value in both modes now
        self.one_minus_decay = float(np.float32(1.0) - np.float32(decay))
        self.momentum = float(momentum)
        self.eps = float(epsilon)
        self.hyper_map = ops.HyperMap()
        # the whole step as one fused CPU operator (use_fused_update), or None: MindSpore's operators
        self.fused_step: ops.Custom | None = None
        self.constants = Tensor(np.array([decay, self.one_minus_decay, momentum, epsilon, self.has_decay], np.float32))
        self.parameter_decay = Tensor(np.array([decay_of[id(p)] for p in self._parameters], np.float32))

    def construct(self, gradients):
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        if self.fused_step is not None:
            return self.fused_step(
                *gradients, *self._parameters, self.mean_square, self.moment, lr.reshape((1,)), self.constants,
                self.parameter_decay,
            )  # fmt: skip
        grad = ops.concat(self.hyper_map(_flatten, gradients))
        if self.has_decay:
            weights = ops.concat(self.hyper_map(_flatten, self._parameters))
            grad = grad + self.decay_coefficients * weights
        mean_square = self.mean_square * self.decay + grad * grad * self.one_minus_decay
        moment = self.moment * self.momentum + lr * grad / ops.sqrt(mean_square + self.eps)
        ops.assign(self.mean_square, mean_square)
        ops.assign(self.moment, moment)
        return self.hyper_map(ops.partial(_apply, moment), self._parameters, self.starts, self.ends)


def fused_step() -> ops.Custom | None:
    """TF RMSProp's whole step as one AOT custom operator (CPU) that updates the slots and the
    parameters in place, or None when its kernel cannot be built here (logged)."""
    library = kernel_library("rmsprop", exact=True)
    if library is None:
        return None
    step = ops.Custom(
        f"{library}:TFRMSPropStep", out_shape=lambda *shapes: [1], out_dtype=lambda *dtypes: dtypes[0], func_type="aot"
    )
    # it writes memory it was handed (the parameters and the slots): marked so, the graph orders it
    # among the other operators that read or write memory (without it the EMA after it in the same
    # graph read the weights before the update: tests/test_training.py)
    step.add_prim_attr("side_effect_mem", True)
    return step


def use_fused_update(optimizer: nn.Optimizer) -> str:
    """Run ``optimizer``'s step through the fused kernel where it is a TFRMSProp and the kernel
    builds; returns what runs, for the log."""
    if not isinstance(optimizer, TFRMSProp):
        return f"MindSpore's {type(optimizer).__name__}"
    step = fused_step()
    if step is None:
        return "MindSpore's operators (the fused RMSProp update is not available here)"
    optimizer.fused_step = step
    optimizer.decay_coefficients = None  # one value per element, for MindSpore's graph only: a buffer less
    return f"the fused update over {int(optimizer.mean_square.size):,} values"
