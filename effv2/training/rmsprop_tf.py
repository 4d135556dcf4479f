"""RMSProp with TensorFlow 1 semantics, as the official EfficientNet(V2) recipes train.

    ms  <- decay * ms + (1 - decay) * g^2              (ms starts at 1, not 0)
    mom <- momentum * mom + lr * g / sqrt(ms + eps)     (eps inside the square root)
    w   <- w - mom

MindSpore's ``nn.RMSProp`` starts ms at 1 as well, but its CPU kernel divides by
``sqrt(ms) + eps`` (measured), which differs from TensorFlow once eps is as large as the
recipe's 1e-3; hence this optimizer.
"""

from __future__ import annotations

from mindspore import nn, ops

_update = ops.MultitypeFuncGraph("rmsprop_tf")


@_update.register("Tensor", "Number", "Number", "Number", "Tensor", "Tensor", "Tensor", "Tensor")
def _update_one(lr, decay, momentum, eps, param, mean_square, moment, grad):
    new_mean_square = mean_square * decay + grad * grad * (1.0 - decay)
    new_moment = moment * momentum + lr * grad / ops.sqrt(new_mean_square + eps)
    ops.assign(mean_square, new_mean_square)
    ops.assign(moment, new_moment)
    return ops.assign_sub(param, new_moment)


class TFRMSProp(nn.Optimizer):
    def __init__(self, params, learning_rate, decay: float = 0.9, momentum: float = 0.9, epsilon: float = 1e-3):
        super().__init__(learning_rate, params)
        self.mean_square = self._parameters.clone(prefix="mean_square", init="ones")
        self.moment = self._parameters.clone(prefix="moment", init="zeros")
        self.decay = float(decay)
        self.momentum = float(momentum)
        self.eps = float(epsilon)
        self.hyper_map = ops.HyperMap()

    def construct(self, gradients):
        gradients = self.flatten_gradients(gradients)
        gradients = self.decay_weight(gradients)
        gradients = self.scale_grad(gradients)
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        update = ops.partial(_update, lr, self.decay, self.momentum, self.eps)
        return self.hyper_map(update, self._parameters, self.mean_square, self.moment, gradients)
