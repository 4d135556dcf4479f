"""One compiled training step.

forward (optionally mixed precision) -> loss x scale -> gradients -> unscale -> (accumulate)
-> overflow check -> loss-scale update -> global-norm clip -> optimizer -> EMA -> rng_step + W.
Every piece of state (loss scale, accumulated gradients, EMA, the noise counter) is a
Parameter, so checkpoints carry it and a resumed run continues bit for bit.

In a data-parallel job the gradients are averaged over the ranks before accumulation, the
overflow decision is taken over all ranks (so every rank skips or applies the same steps), and
``rng_step`` numbers micro-batches globally: rank r's micro-batch i is number i * W + r, the
number the same micro-batch has in one process with W times the accumulation.

BN running statistics move once per optimizer step under accumulation too: each micro-batch
updates them from the step's starting value, and the step keeps the average of those updates.
The update is linear (``m * start + (1 - m) * batch``), so that is the update from the mean of the
micro-batches' batch statistics: exactly what W ranks averaging their own updates give (the ranks'
statistics are averaged before every evaluation and checkpoint), so W ranks and one process with
W x the accumulation agree on every tensor.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from effv2.config.schema import LossScaleConfig
from effv2.training.ema import EMA

# TrainStep phases (see TrainStep.construct)
STEP, ACCUMULATE, APPLY = "step", "accumulate", "apply"

_accumulate = ops.MultitypeFuncGraph("accumulate")


@_accumulate.register("Number", "Tensor", "Tensor")
def _accumulate_one(inverse_steps, buffer, grad):
    return ops.assign_add(buffer, grad * inverse_steps)


_unscale = ops.MultitypeFuncGraph("unscale")


@_unscale.register("Tensor", "Tensor")
def _unscale_one(scale, grad):
    return grad / scale


_copy = ops.MultitypeFuncGraph("copy")


@_copy.register("Tensor", "Tensor")
def _copy_one(target, source):
    return ops.assign(target, source)


_add_and_restore = ops.MultitypeFuncGraph("add_and_restore")


@_add_and_restore.register("Tensor", "Tensor", "Tensor")
def _add_and_restore_one(total, statistic, start):
    """Add the micro-batch's updated running statistic to the step's sum, then put back the
    value the step started from, so that every micro-batch updates from the same start."""
    added = ops.assign_add(total, statistic)
    return ops.assign(statistic, ops.depend(start, added))


_average_into = ops.MultitypeFuncGraph("average_into")


@_average_into.register("Number", "Tensor", "Tensor")
def _average_into_one(inverse_steps, statistic, total):
    averaged = ops.assign(statistic, total * inverse_steps)
    return ops.assign(total, ops.depend(ops.zeros_like(total), averaged))


_zero = ops.MultitypeFuncGraph("zero")


@_zero.register("Tensor")
def _zero_one(buffer):
    return ops.assign(buffer, ops.zeros_like(buffer))


class DeviceNormalise(nn.Cell):
    """uint8 NHWC images -> (x - mean) / std as float32 NCHW -> ``net``: the host pipeline's
    normalisation moved into the graph (a float32 subtraction and a division per value: on CPU the
    same bits as effv2.data.transforms.Normalise, tested; an accelerator whose division is not
    correctly rounded may differ in the last bit)."""

    def __init__(self, net: nn.Cell, mean: list[float], std: list[float]) -> None:
        super().__init__(auto_prefix=False)
        self.net = net
        self.mean = Tensor(np.asarray(mean, np.float32).reshape(1, 1, 1, 3))
        self.std = Tensor(np.asarray(std, np.float32).reshape(1, 1, 1, 3))

    def construct(self, images):
        normalised = (images.astype(ms.float32) - self.mean) / self.std
        return self.net(ops.transpose(normalised, (0, 3, 1, 2)))


class TrainStep(nn.Cell):
    def __init__(
        self,
        net: nn.Cell,
        forward_net: nn.Cell,
        loss_fn: nn.Cell,
        optimizer: nn.Optimizer,
        *,
        clip_grad_norm: float | None,
        loss_scale: LossScaleConfig,
        accumulation_steps: int = 1,
        noise_stride: int = 1,
        ema: EMA | None = None,
        grad_reducer: nn.Cell | None = None,
    ) -> None:
        super().__init__(auto_prefix=False)
        self.net = net  # the model whose parameters are saved; forward_net may wrap it for amp
        self.forward_net = forward_net
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.clip = clip_grad_norm is not None
        self.clip_value = float(clip_grad_norm or 0.0)
        self.dynamic_scale = loss_scale.kind.name == "dynamic"
        # without a loss scale the unscaling and the per-gradient overflow check are skipped:
        # profiled on CPU they cost ~15 % of a B0 step (one Div, IsFinite and ReduceAll per
        # parameter), and a non-finite loss already reveals a divergence
        self.scaled = loss_scale.kind.name != "none"
        initial = float(loss_scale.value) if self.scaled else 1.0
        self.scale = Parameter(Tensor(np.array([initial], np.float32)), name="loss_scale.value", requires_grad=False)
        self.good_steps = Parameter(Tensor(np.array([0], np.int32)), name="loss_scale.good_steps", requires_grad=False)
        self.scale_factor = float(loss_scale.factor)
        self.scale_window = int(loss_scale.window)
        self.accumulation_steps = accumulation_steps
        if accumulation_steps > 1:
            self.accumulated = self.weights.clone(prefix="accumulated", init="zeros")
            statistics = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
            self.bn_statistics = ms.ParameterTuple(statistics)
            self.bn_start = self.bn_statistics.clone(prefix="accumulated.bn_start", init="zeros")
            self.bn_sum = self.bn_statistics.clone(prefix="accumulated.bn_sum", init="zeros")
            if self.scaled:  # the step's micro-batches whose scaled loss overflowed
                self.loss_overflows = Parameter(
                    Tensor(np.zeros((1,), np.float32)), name="loss_scale.accumulated_overflows", requires_grad=False
                )
        self.has_ema = ema is not None
        self.ema = ema
        self.has_reducer = grad_reducer is not None
        self.grad_reducer = grad_reducer
        if self.has_reducer and self.scaled:
            self.sum_over_ranks = ops.AllReduce()
        self.noise_stride = Tensor(np.array([noise_stride], np.int64))
        self.hyper_map = ops.HyperMap()
        self.grad_fn = ms.value_and_grad(self._scaled_loss, None, self.weights)

    def _scaled_loss(self, images, targets):
        logits = self.forward_net(images).astype(ms.float32)
        loss = self.loss_fn(logits, targets)
        if self.scaled:
            loss = loss * self.scale.reshape(())
        return loss

    def _update_scale(self, finite):
        if self.dynamic_scale:
            grown = self.good_steps + 1 >= self.scale_window
            new_scale = ops.select(
                finite,
                ops.select(grown, self.scale * self.scale_factor, self.scale),
                ops.maximum(self.scale / self.scale_factor, ops.ones_like(self.scale)),
            )
            new_good = ops.select(finite & ~grown, self.good_steps + 1, ops.zeros_like(self.good_steps))
            ops.assign(self.scale, new_scale)
            ops.assign(self.good_steps, new_good)
        return finite

    def _apply(self, result, grads):
        result = ops.depend(result, self.optimizer(grads))
        if self.has_ema:
            result = ops.depend(result, self.ema())
        return result

    def construct(self, images, targets, phase: str = STEP):
        """``STEP``: a whole optimizer step on one batch (``accumulation_steps`` 1).
        ``ACCUMULATE``: add a micro-batch's gradients to the buffers; ``APPLY`` (no inputs): the
        optimizer step on the buffers. Each phase is its own compiled graph, so accumulation
        compiles the forward / backward pass once."""
        if phase == APPLY:
            averaged = self.hyper_map(
                ops.partial(_average_into, 1.0 / self.accumulation_steps), self.bn_statistics, self.bn_sum
            )
            overflows = self.loss_overflows if self.scaled else None
            return ops.depend(self._finish(self.accumulated, overflows, None), averaged)
        if phase == ACCUMULATE:  # the step's starting statistics, before this forward pass moves them
            images = ops.depend(images, self.hyper_map(_copy, self.bn_start, self.bn_statistics))
        loss, grads = self.grad_fn(images, targets)
        scaled_loss = loss
        if self.scaled:
            scale = self.scale.reshape(())
            loss = loss / scale
            grads = self.hyper_map(ops.partial(_unscale, scale), grads)
        if self.has_reducer:
            grads = self.grad_reducer(grads)
        loss_overflow = ops.logical_not(ops.isfinite(scaled_loss)).astype(ms.float32).reshape((1,))
        loss = ops.depend(loss, ops.assign_add(self.net.rng_step, self.noise_stride))
        if phase == ACCUMULATE:
            loss = ops.depend(
                loss, self.hyper_map(ops.partial(_accumulate, 1.0 / self.accumulation_steps), self.accumulated, grads)
            )
            loss = ops.depend(loss, self.hyper_map(_add_and_restore, self.bn_sum, self.bn_statistics, self.bn_start))
            if self.scaled:
                loss = ops.depend(loss, ops.assign_add(self.loss_overflows, loss_overflow))
            return loss, ops.ones((), ms.bool_)
        return loss, self._finish(grads, loss_overflow, loss)

    def _finish(self, grads, loss_overflow, loss):
        """Overflow decision, loss-scale update, clipping, optimizer and EMA; returns whether the
        step was finite. ``loss`` is None for accumulated gradients."""
        if self.scaled:
            # an overflow shows in any micro-batch's scaled loss or in any gradient, on any rank:
            # every rank (and one process accumulating the same micro-batches) decides alike
            overflows = loss_overflow + ops.logical_not(ms.amp.all_finite(grads)).astype(ms.float32).reshape((1,))
            if self.has_reducer:
                overflows = self.sum_over_ranks(overflows)
            finite = overflows.reshape(()) == 0
            self._update_scale(finite.reshape((1,)))
        elif loss is None:  # without a loss scale the trainer checks every micro-batch's loss
            finite = ops.ones((), ms.bool_)
        else:
            finite = ops.isfinite(loss)
        if self.clip:
            grads = ops.clip_by_global_norm(grads, self.clip_value)
        if self.dynamic_scale:
            # an overflowed step is skipped: no update, no EMA, only the scale shrinks
            if finite:
                finite = self._apply(finite, grads)
        else:
            finite = self._apply(finite, grads)
        if self.accumulation_steps > 1:
            finite = ops.depend(finite, self.hyper_map(_zero, self.accumulated))
            if self.scaled:
                finite = ops.depend(finite, ops.assign(self.loss_overflows, ops.zeros_like(self.loss_overflows)))
        return finite
