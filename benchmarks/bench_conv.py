"""effv2's oneDNN convolution kernel (effv2/kernels/conv_onednn.cc) against MindSpore's nn.Conv2d,
layer by layer: every distinct convolution of the network (stem, blocks, head) at its real shape,
forward + backward (input and weight gradients) of ``sum(conv(x) * dy)`` in a compiled graph,
alternating rounds, medians. Per kind (depthwise, regular kxk, 1x1), the time of all the network's
layers of that kind (each shape times how often it occurs) with each implementation.

    python benchmarks/bench_conv.py --variant effnetv2_b0 --size 128 --batch 8
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import cpu_name, interleaved_medians, write_results  # noqa: E402


def layer_shapes(variant: str, size: int) -> Counter:
    """(kind, in, out, kernel, stride, input size) -> how many layers of the network have it."""
    from effv2.models import EfficientNetV2, get_variant
    from effv2.models.blocks import ConvBNAct
    from effv2.models.convolution import conv_kind

    net = EfficientNetV2(get_variant(variant), num_classes=1000)
    shapes: Counter = Counter()
    height = size
    for _, cell in net.cells_and_names():  # construction order: stem, blocks (expand, dw, project), head
        if isinstance(cell, ConvBNAct):
            shapes[(conv_kind(cell.conv), cell.in_channels, cell.out_channels, cell.kernel, cell.stride, height)] += 1
            height = math.ceil(height / cell.stride)
    return shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="effnetv2_b0")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--kinds", default="depthwise,regular,pointwise")
    parser.add_argument("--out", default="benchmarks/results/conv.json")
    args = parser.parse_args()

    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from effv2.models.convolution import OneDNNConv, onednn_conv_library

    ms.set_device("CPU")
    library = onednn_conv_library()
    if library is None:
        raise SystemExit("the oneDNN kernel cannot be built here: no oneDNN headers or no C++ compiler")

    class Convolution(nn.Cell):
        def __init__(self, conv: nn.Conv2d, kernel: nn.Cell | None) -> None:
            super().__init__()
            self.conv, self.kernel = conv, kernel

        def construct(self, x):
            return self.conv(x) if self.kernel is None else self.kernel(x, self.conv.weight)

    def gradient_step(net: nn.Cell, weight):
        def weighted_sum(inputs, sens):
            return (net(inputs) * sens).sum()

        return ms.jit(ms.value_and_grad(weighted_sum, grad_position=0, weights=[weight]))

    kinds = args.kinds.split(",")
    rows = []
    for (kind, cin, cout, k, stride, height), count in sorted(layer_shapes(args.variant, args.size).items()):
        if kind not in kinds:
            continue
        groups = cin if kind == "depthwise" else 1
        conv = nn.Conv2d(cin, cout, k, stride=stride, pad_mode="same", group=groups, has_bias=False)
        rng = np.random.default_rng(0)
        x = Tensor(rng.normal(0, 1, (args.batch, cin, height, height)).astype(np.float32))
        out = math.ceil(height / stride)
        dy = Tensor(rng.normal(0, 1, (args.batch, cout, out, out)).astype(np.float32))
        candidates = {}
        for name, kernel in (("MindSpore nn.Conv2d", None), ("oneDNN kernel (effv2)", OneDNNConv(library, stride))):
            step = gradient_step(Convolution(conv, kernel), conv.weight)
            candidates[name] = lambda step=step, x=x, dy=dy: step(x, dy)[1][0].asnumpy()
        timings = interleaved_medians(candidates, args.repeats, warmup=2)
        stock, ours = timings["MindSpore nn.Conv2d"]["median_s"], timings["oneDNN kernel (effv2)"]["median_s"]
        rows.append({"kind": kind, "in": cin, "out": cout, "kernel": k, "stride": stride, "size": height,
                     "layers": count, "mindspore_s": stock, "onednn_s": ours, "speedup": stock / ours})  # fmt: skip
        print(f"{kind} {cin}->{cout} k{k} s{stride} {height}px: {stock / ours:.2f}x", file=sys.stderr)
    table = [["kind", "in->out", "k/s", "px", "layers", "MindSpore ms", "oneDNN ms", "speedup"]]
    for row in rows:
        table.append([row["kind"], f"{row['in']}->{row['out']}", f"{row['kernel']}/{row['stride']}", str(row["size"]),
                      str(row["layers"]), f"{row['mindspore_s'] * 1000:.2f}", f"{row['onednn_s'] * 1000:.2f}",
                      f"{row['speedup']:.2f}"])  # fmt: skip
    per_kind = {}
    for kind in kinds:
        chosen = [r for r in rows if r["kind"] == kind]
        if chosen:
            stock = sum(r["mindspore_s"] * r["layers"] for r in chosen)
            ours = sum(r["onednn_s"] * r["layers"] for r in chosen)
            per_kind[kind] = {"layers": sum(r["layers"] for r in chosen), "mindspore_s": stock, "onednn_s": ours,
                              "speedup": stock / ours}  # fmt: skip
            table.append([f"**all {kind}**", "", "", "", str(per_kind[kind]["layers"]), f"{stock * 1000:.1f}",
                          f"{ours * 1000:.1f}", f"**{stock / ours:.2f}**"])  # fmt: skip
    payload = {"config": vars(args), "cpu": cpu_name(), "results": rows, "per_kind": per_kind}
    write_results(Path(args.out), payload, table)


if __name__ == "__main__":
    main()
