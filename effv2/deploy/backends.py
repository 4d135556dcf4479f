"""Inference backends over exported files: onnxruntime and MindSpore MINDIR (GraphCell)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from effv2.errors import UserError

Backend = Callable[[np.ndarray], np.ndarray]


def _onnxruntime(path: Path, provider: str) -> Backend:
    import onnxruntime as ort

    wanted = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}[provider]
    if wanted not in ort.get_available_providers():
        raise UserError(
            f"infer.provider={provider} needs onnxruntime's {wanted}, which this installation lacks "
            f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use provider=cpu"
        )
    session = ort.InferenceSession(str(path), providers=[wanted])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def _mindir(path: Path) -> Backend:
    import mindspore as ms
    from mindspore import Tensor, nn

    graph = nn.GraphCell(ms.load(str(path)))
    return lambda images: graph(Tensor(images)).asnumpy()


def open_backend(name: str, path: Path, provider: str = "cpu") -> Backend:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"infer.model={str(path)!r} does not exist")
    expected = {"onnxruntime": ".onnx", "mindir": ".mindir"}[name]
    if path.suffix != expected:
        raise UserError(f"infer.backend={name} reads {expected} files; got {path.name}")
    return _onnxruntime(path, provider) if name == "onnxruntime" else _mindir(path)
