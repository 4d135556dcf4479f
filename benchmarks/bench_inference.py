"""Inference latency (batch 1) and throughput (batch 32): MindSpore graph, MINDIR, onnxruntime
FP32 and INT8 (static QDQ, per-channel and per-tensor weight scales) on our own export, and
PyTorch eager on the same architecture (benchmarks/torch_reference.py, when torch is installed),
side by side in one run, alternating.

INT8 is calibrated on real images (the embedded digits, upscaled to --size, 64 of the training
split) through the evaluation preprocessing, exactly as ``task=export export.quantize=int8``
does. Its effect is measured on the 359 real validation images: top-1 agreement with FP32 and,
given --checkpoint (a trained checkpoint of --variant, e.g. the demo's best.ckpt at --size 32),
the top-1 of both.

    python benchmarks/bench_inference.py --variant effnetv2_s --size 224 --repeats 10
    python benchmarks/bench_inference.py --variant effnetv2_b0 --size 32 --checkpoint <run>/checkpoints/best.ckpt
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
from common import cpu_name, interleaved_medians, write_results  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

from effv2.checkpoints import load_weights, read_checkpoint  # noqa: E402
from effv2.data.digits import materialise_digits  # noqa: E402
from effv2.data.imagefolder import list_split  # noqa: E402
from effv2.data.transforms import EvalTransform  # noqa: E402
from effv2.deploy.dynamic_batch import make_batch_dynamic  # noqa: E402
from effv2.deploy.predictor import prepare_file  # noqa: E402
from effv2.deploy.quantize import quantize_int8  # noqa: E402
from effv2.models import VARIANTS, EfficientNetV2, get_variant, init_weights  # noqa: E402
from effv2.models.variants import MICRO  # noqa: E402

CALIBRATION_IMAGES = 64
# name: per-channel; both with the export's defaults otherwise (percentile, 7-bit weights)
INT8_MODES = {"onnxruntime_int8": True, "onnxruntime_int8_per_tensor": False}


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


def real_images(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(calibration images, val images, val labels): the digits through their eval preprocessing
    (conf/data/digits.yaml: the whole 8 x 8 image resized to the input, as the demo was trained)."""
    transform = EvalTransform.from_settings(
        {"image_size": size, "eval_crop": "squash", "crop_pct": 0.875, "interpolation": "bilinear",
         "mean": [127.5] * 3, "std": [127.5] * 3}
    )  # fmt: skip
    root = materialise_digits()
    train, val = list_split(root, "train"), list_split(root, "val")
    pick = np.random.default_rng(0).permutation(train.num_images)[:CALIBRATION_IMAGES]
    calibration = np.stack([prepare_file(transform, train.files[i]) for i in sorted(pick)])
    images = np.stack([prepare_file(transform, path) for path in val.files])
    return calibration, images, np.asarray(val.labels)


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_all(sess: ort.InferenceSession, images: np.ndarray, batch: int = 32) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i : i + batch]})[0] for i in range(0, len(images), batch)])


def build_files(net: EfficientNetV2, size: int, tmp: str, calibration: np.ndarray) -> dict[str, Path]:
    """A dynamic-batch FP32 ONNX export and its two INT8 quantizations."""
    stem = Path(tmp) / "model"
    ms.export(net, Tensor(np.zeros((1, 3, size, size), np.float32)), file_name=str(stem), file_format="ONNX")
    fp32 = stem.with_suffix(".onnx")
    reason = make_batch_dynamic(fp32, 1)
    if reason is not None:
        raise SystemExit(f"the dynamic-batch rewrite refused this graph: {reason}")
    files = {"onnxruntime": fp32}
    for name, per_channel in INT8_MODES.items():
        files[name] = Path(tmp) / f"{name}.onnx"
        batches = [calibration[i : i + 8] for i in range(0, len(calibration), 8)]
        quantize_int8(fp32, files[name], batches, per_channel=per_channel)
    return files


def accuracy(files: dict[str, Path], images: np.ndarray, labels: np.ndarray, trained: bool) -> list[dict]:
    logits = {name: run_all(session(path), images) for name, path in files.items()}
    reference = logits["onnxruntime"]
    rows = []
    for name, values in logits.items():
        row = {
            "backend": name,
            "top1_agreement_with_fp32": float((values.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(values - reference).max()),
        }
        if trained:
            row["top1"] = float(100.0 * (values.argmax(1) == labels).mean())
            row["top1_drop"] = float(100.0 * (reference.argmax(1) == labels).mean()) - row["top1"]
        rows.append(row)
    return rows


def measure(net: EfficientNetV2, files: dict[str, Path], batch: int, size: int, tmp: str, repeats: int) -> dict:
    images = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    stem = str(Path(tmp) / f"model_b{batch}")
    ms.export(net, Tensor(images), file_name=stem, file_format="MINDIR")
    graph = nn.GraphCell(ms.load(stem + ".mindir"))
    tensor = Tensor(images)
    candidates = {"mindspore_graph": lambda: net(tensor).asnumpy(), "mindir": lambda: graph(tensor).asnumpy()}
    for name, path in files.items():
        sess = session(path)
        feed = {sess.get_inputs()[0].name: images}
        candidates[name] = lambda sess=sess, feed=feed: sess.run(None, feed)
    pytorch = pytorch_candidate(net.spec.name, images)
    if pytorch is not None:
        candidates["pytorch_eager"] = pytorch
    return interleaved_medians(candidates, repeats=repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="effnetv2_s", choices=[*sorted(VARIANTS), MICRO.name])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--checkpoint", help="trained weights of --variant: report top-1 of FP32 and INT8")
    parser.add_argument("--out", default="benchmarks/results/inference.json")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    classes = 1000
    if args.checkpoint:
        classes = int(read_checkpoint(args.checkpoint)[1]["num_classes"])
    net = EfficientNetV2(get_variant(args.variant), num_classes=classes)
    init_weights(net, 0)
    if args.checkpoint:
        load_weights(net, args.checkpoint)
    net.set_train(False)
    calibration, images, labels = real_images(args.size)
    results, table = [], [["batch", "backend", "median ms", "images/s", "x onnxruntime"]]
    with tempfile.TemporaryDirectory() as tmp:
        files = build_files(net, args.size, tmp, calibration)
        quality = accuracy(files, images, labels, trained=bool(args.checkpoint))
        for batch in (int(b) for b in args.batches.split(",")):
            timings = measure(net, files, batch, args.size, tmp, args.repeats)
            base = timings["onnxruntime"]["median_s"]
            for name, timing in timings.items():
                row = {"batch": batch, "backend": name, **timing, "images_per_s": batch / timing["median_s"]}
                row["ratio_to_onnxruntime"] = timing["median_s"] / base
                results.append(row)
                table.append(
                    [str(batch), name, f"{timing['median_s'] * 1e3:.1f}", f"{row['images_per_s']:.1f}",
                     f"{row['ratio_to_onnxruntime']:.2f}"]
                )  # fmt: skip
    payload = {
        "variant": args.variant,
        "size": args.size,
        "repeats": args.repeats,
        "cpu": cpu_name(),
        "checkpoint": args.checkpoint,
        "results": results,
        "int8_quality": {"val_images": len(labels), "calibration_images": len(calibration), "rows": quality},
    }
    table.append(["", "", "", "", ""])
    for row in quality:
        table.append(
            ["val", row["backend"], f"agreement {row['top1_agreement_with_fp32']:.3f}",
             f"top-1 {row['top1']:.2f}" if "top1" in row else "-",
             f"drop {row['top1_drop']:.2f}" if "top1_drop" in row else "-"]
        )  # fmt: skip
    write_results(Path(args.out), payload, table)


if __name__ == "__main__":
    main()
