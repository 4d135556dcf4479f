"""The Ascend 310 offline path: images -> .bin files -> device runner -> .bin logits -> top-k.

``preprocess`` writes each image as float32 CHW (the shared eval preprocessing) and a manifest;
the runner (``python -m effv2.deploy.bin_runner``) executes the MINDIR on the chosen device and
writes ``<name>_0.bin`` logits, the seed's naming; ``postprocess`` reads them back in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from effv2.errors import UserError


def preprocess(files: list[Path], prepare: Callable[[Path], np.ndarray], out_dir: Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for index, path in enumerate(files):
        name = f"{index:06d}"
        prepare(path).tofile(out_dir / f"{name}.bin")
        names.append(name)
    (out_dir / "manifest.json").write_text(json.dumps({"files": [str(f) for f in files], "names": names}))
    return names


def run_device(model: Path, input_dir: Path, output_dir: Path, device: str) -> None:
    command = [
        sys.executable, "-m", "effv2.deploy.bin_runner", "--model", str(model), "--input", str(input_dir),
        "--output", str(output_dir), "--device", device,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        raise UserError(lines[-1][len("error: ") :] if lines else f"the offline runner failed: {result.stderr[-500:]}")


def postprocess(output_dir: Path, names: list[str], num_classes: int) -> np.ndarray:
    logits = []
    for name in names:
        path = output_dir / f"{name}_0.bin"
        if not path.is_file():
            raise UserError(f"the offline runner wrote no result for {name} ({path})")
        logits.append(np.fromfile(path, np.float32).reshape(num_classes))
    return np.stack(logits)
