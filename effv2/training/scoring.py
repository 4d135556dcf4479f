"""Top-1 / top-5 over every image of an evaluation split.

The last partial batch is padded to the full batch so one compiled graph serves every batch,
and only the real rows are scored: no image is dropped (the seed scored 49,984 of 50,000). An
image that does not decode is left out of the scores and counted (``data.on_bad_image=skip``),
or stops the evaluation naming it (``error``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mindspore import Tensor, nn

from effv2.data.pipeline import LoadedSplit
from effv2.errors import UserError
from effv2.launch.ranks import allreduce_sum, heartbeat
from effv2.metrics import topk_correct


def score_split(net: nn.Cell, loaded: LoadedSplit, heartbeat_dir: Path | None = None) -> dict[str, float]:
    net.set_train(False)
    correct1 = correct5 = seen = bad = 0
    for images, labels, bad_index in loaded.dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        rows = images.shape[0]
        if rows < loaded.batch_size:
            pad = np.zeros((loaded.batch_size - rows, *images.shape[1:]), images.dtype)
            images = np.concatenate([images, pad])
        logits = net(Tensor(images)).asnumpy()[:rows]
        good = bad_index < 0
        bad += loaded.bad_images.report(bad_index)
        correct1 += topk_correct(logits[good], labels[good], 1)
        correct5 += topk_correct(logits[good], labels[good], 5)
        seen += int(good.sum())
        if heartbeat_dir is not None:
            heartbeat(heartbeat_dir)
    totals = allreduce_sum(np.array([correct1, correct5, seen, bad], np.float64))
    correct1, correct5, seen, bad = (int(v) for v in totals)
    if seen + bad != loaded.split.num_images:
        raise RuntimeError(f"evaluated {seen + bad} images but {loaded.split.path} holds {loaded.split.num_images}")
    if seen == 0:
        raise UserError(f"no image of {loaded.split.path} decodes")
    return {"top1": 100.0 * correct1 / seen, "top5": 100.0 * correct5 / seen, "images": seen, "bad_images": bad}
