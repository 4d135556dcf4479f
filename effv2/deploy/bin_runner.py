"""Run a MINDIR over a folder of .bin inputs, writing ``<name>_0.bin`` logits (the device step
of the offline path). On an Ascend 310 host it runs with ``--device Ascend``; with
``--device CPU`` any machine stands in for the device. The input shape comes from the export's
``.export.json`` beside the model."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--device", default="Ascend", choices=["Ascend", "CPU", "GPU"])
    args = parser.parse_args()
    from effv2.launch.device import CPU_ISA_CAP, CPU_ISA_VARIABLE, backend_available

    if args.device == "CPU":
        os.environ.setdefault(CPU_ISA_VARIABLE, CPU_ISA_CAP)

    if args.device != "CPU" and not backend_available(args.device):
        print(f"error: the offline runner needs {args.device} devices; found none on this machine", file=sys.stderr)
        return 2
    import mindspore as ms
    from mindspore import Tensor, nn

    ms.set_device(args.device)
    from effv2.deploy.exported import ExportedModel
    from effv2.errors import UserError

    try:
        batch, *chw = ExportedModel.read(args.model).input_shape
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    graph = nn.GraphCell(ms.load(args.model))
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(p.stem for p in Path(args.input).glob("*.bin"))
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        images = np.zeros((batch, *chw), np.float32)
        for row, name in enumerate(chunk):
            images[row] = np.fromfile(Path(args.input) / f"{name}.bin", np.float32).reshape(chw)
        logits = graph(Tensor(images)).asnumpy()
        for row, name in enumerate(chunk):
            logits[row].astype(np.float32).tofile(out_dir / f"{name}_0.bin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
