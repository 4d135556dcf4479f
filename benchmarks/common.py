"""Shared helpers for the benchmark scripts: interleaved timing, JSON and Markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

# MindSpore 2.10's CPU convolutions fall onto oneDNN's reference kernels above AVX2 (the product
# caps it too: effv2.launch.device). The cap is MindSpore's need, not PyTorch's: a PyTorch worker
# runs at its own default, and one with hardware.cpu_kernels where the product runs it, unless the
# user set the variable (USER_CPU_ISA)
USER_CPU_ISA = os.environ.get("ONEDNN_MAX_CPU_ISA")
PYTORCH_CPU_ISA = USER_CPU_ISA or "ALL"
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")


def interleaved_medians(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, dict]:
    """Run every candidate once per round, alternating, and report median / min seconds.

    Alternating rounds keep slow drifts of the machine (other load, thermal state) from
    favouring whichever candidate happens to run first."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            started = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - started)
    return {
        name: {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}
        for name, times in samples.items()
    }


def cpu_name() -> str:
    """The CPU's model name (benchmark figures are ratios from one run on one named CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(path: Path, payload: dict, table: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    header, *rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
