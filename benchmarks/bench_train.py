"""Training step time and throughput: effv2 on MindSpore (the product's compiled TrainStep with
TF-style RMSProp) against the same architecture in PyTorch eager (benchmarks/torch_reference.py,
torch.optim.RMSprop), side by side in one run.

Each framework lives in its own worker process for the whole measurement (so thread pools and
memory never mix, and peak memory is per framework); the parent alternates single steps
between them and reports medians. The first MindSpore step includes graph compilation, which is
reported separately (first step minus the median step).

    python benchmarks/bench_train.py --variants effnetv2_s,effnetv2_b0 --sizes 128,224 --batch 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import PYTORCH_CPU_ISA, USER_CPU_ISA, write_results  # noqa: E402

CLASSES = 1000


def _batch(batch: int, size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, CLASSES, batch)
    return images, labels


# the kernel choices: MindSpore's own operators (hardware.cpu_kernels=false), effv2's kernels as the
# product runs them by default on CPU (cpu_kernels), or one of effv2's CPU kernels alone
KERNELS = (
    "mindspore",
    "cpu_kernels",
    "cpu_kernels-fused_rmsprop",
    "cpu_kernels-fused_bn",
    "fused_silu",
    "fused_se",
    "fused_rmsprop",
    "sigmoid_mul",
    "onednn_depthwise",
    "onednn_depthwise+regular",
    "onednn_depthwise+regular+pointwise",
    "fused_silu+onednn_depthwise+regular",
)


def _use_kernels(net, kernels: str) -> None:
    from effv2.models.activation import SigmoidMul, fused_silu, set_silu
    from effv2.models.convolution import onednn_conv_library, set_onednn_conv
    from effv2.models.cpu_kernels import use_cpu_kernels

    if kernels == "cpu_kernels-fused_bn":  # MindSpore's BatchNorm (+ the fused SiLU) in the network
        from effv2.models.blocks import ConvBNAct

        print(f"hardware.cpu_kernels: {use_cpu_kernels(net)}; then MindSpore's BatchNorm", file=sys.stderr)
        for _, cell in net.cells_and_names():
            if isinstance(cell, ConvBNAct):
                cell.fused_bn = None
    elif kernels == "cpu_kernels-fused_rmsprop":  # the network's kernels, MindSpore's operators in the optimizer
        print(f"hardware.cpu_kernels' network kernels: {use_cpu_kernels(net)}", file=sys.stderr)
    elif kernels == "cpu_kernels":
        print(f"hardware.cpu_kernels (the default): {use_cpu_kernels(net)}", file=sys.stderr)
    elif kernels == "sigmoid_mul":
        set_silu(net, SigmoidMul())
    elif kernels == "fused_silu":
        if set_silu(net, fused_silu() or sys.exit("the fused SiLU cannot be built here")) == 0:
            sys.exit("no SiLU to replace")
    elif kernels == "fused_se":
        from effv2.models.blocks import SqueezeExcite
        from effv2.models.fused_se import use_fused_se

        what = use_fused_se(net)
        if not any(isinstance(cell, SqueezeExcite) and cell.gate is not None for _, cell in net.cells_and_names()):
            sys.exit(f"fused_se: {what}")  # the label would time MindSpore's operators
        print(f"SE: {what}", file=sys.stderr)
    elif kernels == "fused_rmsprop":
        pass  # the optimizer's (_mindspore_step)
    elif kernels == "fused_silu+onednn_depthwise+regular":  # cpu_kernels without the fused SE kernels
        set_silu(net, fused_silu() or sys.exit("the fused SiLU cannot be built here"))
        _use_kernels(net, "onednn_depthwise+regular")
    elif kernels.startswith("onednn_"):
        library = onednn_conv_library() or sys.exit("the oneDNN kernel cannot be built here")
        kinds = tuple(kernels.removeprefix("onednn_").split("+"))
        print(f"oneDNN in {set_onednn_conv(net, library, kinds)} convolutions", file=sys.stderr)


def _mindspore_step(variant: str, size: int, batch: int, jit_level: str, compile_cache: str | None, kernels: str):
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor
    from omegaconf import OmegaConf

    from effv2.config.schema import LossScaleConfig, RMSPropConfig
    from effv2.models import EfficientNetV2, get_variant, init_weights
    from effv2.training.loss import SoftTargetCrossEntropy, smoothed_one_hot
    from effv2.training.optim import build_optimizer
    from effv2.training.step import TrainStep

    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": jit_level})
    if compile_cache:
        ms.set_context(enable_compile_cache=True, compile_cache_path=compile_cache)
    ms.set_device("CPU")
    net = EfficientNetV2(get_variant(variant), num_classes=CLASSES)
    init_weights(net, 0)
    _use_kernels(net, kernels)
    optimizer_cfg = OmegaConf.structured(RMSPropConfig(lr=0.016, weight_decay=1e-5))
    optimizer = build_optimizer(optimizer_cfg, net.trainable_params(), np.full(1_000_000, 1e-3, np.float32))
    if kernels in ("cpu_kernels", "cpu_kernels-fused_bn", "fused_rmsprop"):
        from effv2.training.rmsprop_tf import use_fused_update

        what = use_fused_update(optimizer)
        if optimizer.fused_step is None:
            sys.exit(f"fused_rmsprop: {what}")  # the label would time MindSpore's operators
        print(f"optimizer: {what}", file=sys.stderr)
    loss_scale = OmegaConf.structured(LossScaleConfig())
    step = TrainStep(net, net, SoftTargetCrossEntropy(), optimizer, clip_grad_norm=None, loss_scale=loss_scale)
    step.set_train(True)
    images, labels = _batch(batch, size)
    images, targets = Tensor(images), Tensor(smoothed_one_hot(labels, CLASSES, 0.1))

    def run() -> None:
        loss, _ = step(images, targets, True)
        loss.asnumpy()

    return run


def _pytorch_step(variant: str, size: int, batch: int):
    import torch
    import torch_reference

    torch.set_num_threads(os.cpu_count() or 1)
    model = torch_reference.build(variant, CLASSES).train()
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-5)
    images, labels = _batch(batch, size)
    images, labels = torch.from_numpy(images), torch.from_numpy(labels)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        loss.item()

    return run


def worker(
    framework: str, variant: str, size: int, batch: int, jit_level: str, compile_cache: str | None, kernels: str
) -> None:
    """Build, take the first step, then one step per "step" line on stdin; "quit" ends."""
    started = time.perf_counter()
    if framework == "mindspore":
        run = _mindspore_step(variant, size, batch, jit_level, compile_cache, kernels)
    else:
        run = _pytorch_step(variant, size, batch)
    built = time.perf_counter()
    run()
    print(json.dumps({"build_s": built - started, "first_step_s": time.perf_counter() - built}), flush=True)
    for line in sys.stdin:
        if line.strip() != "step":
            break
        t0 = time.perf_counter()
        run()
        print(json.dumps({"step_s": time.perf_counter() - t0}), flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": peak_mb}), flush=True)


class Worker:
    """One framework's training step in its own process; ``env`` and ``extra`` vary its settings."""

    def __init__(
        self, framework: str, variant: str, size: int, batch: int, jit_level: str = "O0",
        env: dict[str, str] | None = None, extra: tuple[str, ...] = (), label: str | None = None,
    ) -> None:  # fmt: skip
        self.framework = label or framework
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", framework, "--variants", variant, "--sizes", str(size),
             "--batch", str(batch), "--jit-level", jit_level, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(HERE.parent), **(env or {})},
        )  # fmt: skip
        self.first = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.framework} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def step(self) -> float:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()["step_s"]

    def close(self) -> float:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        peak = self._read()["peak_rss_mb"]
        self.proc.wait()
        return peak


def measure(variant: str, size: int, batch: int, repeats: int, jit_level: str, kernels: list[str]) -> list[dict]:
    from effv2.config.schema import HardwareConfig
    from effv2.launch.device import cpu_isa_cap

    def isa(choice: str) -> str:  # the cap run.py would set for a training run with these kernels
        return USER_CPU_ISA or cpu_isa_cap(HardwareConfig(name="cpu", cpu_kernels=choice == "cpu_kernels"), "train")

    workers = [
        Worker("mindspore", variant, size, batch, jit_level, env={"ONEDNN_MAX_CPU_ISA": isa(choice)},
               extra=("--kernels", choice), label="mindspore" if choice == "mindspore" else f"mindspore + {choice}")
        for choice in kernels
    ]  # fmt: skip
    workers.append(Worker("pytorch", variant, size, batch, jit_level, env={"ONEDNN_MAX_CPU_ISA": PYTORCH_CPU_ISA}))
    for w in workers:
        w.step()  # warm-up beyond the first step
    times: dict[str, list[float]] = {w.framework: [] for w in workers}
    for r in range(repeats):
        for w in workers if r % 2 == 0 else workers[::-1]:
            times[w.framework].append(w.step())
    rows = []
    for w in workers:
        median = statistics.median(times[w.framework])
        rows.append({
            "variant": variant, "size": size, "batch": batch, "framework": w.framework,
            "step_median_s": median, "step_min_s": min(times[w.framework]), "images_per_s": batch / median,
            "first_step_s": w.first["first_step_s"], "compile_s": max(w.first["first_step_s"] - median, 0.0),
            "peak_rss_mb": w.close(), "runs": repeats,
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="effnetv2_s,effnetv2_b0")
    parser.add_argument("--sizes", default="128,224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--jit-level", default="O0", help="MindSpore jit_level (O0, O1)")
    parser.add_argument("--out", default="benchmarks/results/train.json")
    parser.add_argument("--compile-cache", help="MindSpore compile cache folder (enable_compile_cache)")
    parser.add_argument(
        "--kernels", default="mindspore,cpu_kernels",
        help=f"the kernels, one worker each (comma-separated, from {', '.join(KERNELS)}): MindSpore's "
        "own (hardware.cpu_kernels=false), the product's default (cpu_kernels: fused SiLU and SE + oneDNN "
        "depthwise and regular convolutions), or one of effv2's kernels alone",
    )  # fmt: skip
    parser.add_argument("--worker", choices=["mindspore", "pytorch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
        size = int(args.sizes)
        worker(args.worker, args.variants, size, args.batch, args.jit_level, args.compile_cache, args.kernels)
        return
    kernels = args.kernels.split(",")
    if unknown := sorted(set(kernels) - set(KERNELS)):
        parser.error(f"--kernels {','.join(unknown)}: not one of {', '.join(KERNELS)}")
    rows = []
    for variant in args.variants.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            rows += measure(variant, size, args.batch, args.repeats, args.jit_level, kernels)
            print(f"{variant} {size}px done", file=sys.stderr)
    table = [["variant", "px", "framework", "step ms", "img/s", "compile s", "peak MB", "x PyTorch"]]
    for row in rows:
        peer = next(
            r for r in rows if (r["variant"], r["size"], r["framework"]) == (row["variant"], row["size"], "pytorch")
        )
        row["ratio_to_pytorch"] = row["step_median_s"] / peer["step_median_s"]
        table.append([row["variant"], str(row["size"]), row["framework"], f"{row['step_median_s'] * 1000:.0f}",
                      f"{row['images_per_s']:.1f}", f"{row['compile_s']:.1f}", f"{row['peak_rss_mb']:.0f}",
                      f"{row['ratio_to_pytorch']:.2f}"])  # fmt: skip
    payload = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "compile_cache")}, "results": rows}
    write_results(Path(args.out), payload, table)


if __name__ == "__main__":
    main()
