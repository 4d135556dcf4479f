"""Inference latency (batch 1) and throughput (batch 32): MindSpore graph, MINDIR and
onnxruntime on our own export, and PyTorch eager on the same architecture
(benchmarks/torch_reference.py, when torch is installed), side by side in one run, alternating.

    python benchmarks/bench_inference.py --variant effnetv2_s --size 224 --repeats 10
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from common import interleaved_medians, write_results  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

from effv2.models import VARIANTS, EfficientNetV2, init_weights  # noqa: E402


def pytorch_candidate(variant: str, images: np.ndarray):
    """PyTorch eager inference of the reference model, or None without torch."""
    try:
        import torch
        import torch_reference
    except ImportError:
        return None
    model = torch_reference.build(variant).eval()
    batch = torch.from_numpy(images)

    def run() -> None:
        with torch.no_grad():
            model(batch).numpy()

    return run


def measure(net: EfficientNetV2, batch: int, size: int, tmp: str, repeats: int) -> dict[str, dict]:
    images = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    stem = str(Path(tmp) / f"model_b{batch}")
    ms.export(net, Tensor(images), file_name=stem, file_format="MINDIR")
    ms.export(net, Tensor(images), file_name=stem, file_format="ONNX")
    graph = nn.GraphCell(ms.load(stem + ".mindir"))
    session = ort.InferenceSession(stem + ".onnx", providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images}
    tensor = Tensor(images)
    candidates = {
        "mindspore_graph": lambda: net(tensor).asnumpy(),
        "mindir": lambda: graph(tensor).asnumpy(),
        "onnxruntime": lambda: session.run(None, feed),
    }
    pytorch = pytorch_candidate(net.spec.name, images)
    if pytorch is not None:
        candidates["pytorch_eager"] = pytorch
    return interleaved_medians(candidates, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="effnetv2_s", choices=sorted(VARIANTS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    net = EfficientNetV2(VARIANTS[args.variant])
    init_weights(net, 0)
    net.set_train(False)
    results, table = [], [["batch", "backend", "median ms", "images/s", "x onnxruntime"]]
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (int(b) for b in args.batches.split(",")):
            timings = measure(net, batch, args.size, tmp, args.repeats)
            base = timings["onnxruntime"]["median_s"]
            for name, timing in timings.items():
                row = {"batch": batch, "backend": name, **timing, "images_per_s": batch / timing["median_s"]}
                row["ratio_to_onnxruntime"] = timing["median_s"] / base
                results.append(row)
                table.append(
                    [str(batch), name, f"{timing['median_s'] * 1e3:.1f}", f"{row['images_per_s']:.1f}",
                     f"{row['ratio_to_onnxruntime']:.2f}"]
                )  # fmt: skip
    payload = {"variant": args.variant, "size": args.size, "repeats": args.repeats, "results": results}
    write_results(Path(args.out), payload, table)


if __name__ == "__main__":
    main()
