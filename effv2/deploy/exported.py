"""An exported model: the file, its input shape, its class names and the export report.

``task=export`` writes the two sidecars beside the file (``<stem>.export.json``,
``<stem>.classes.json``); inference, the backends and the offline runner read them back through
:meth:`ExportedModel.read`, the one reader of that layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effv2.errors import UserError


@dataclass
class ExportedModel:
    path: Path
    input_shape: tuple[int, int, int, int]  # N, C, H, W
    class_names: list[str] = field(default_factory=list)
    # format, bytes, weights (ema / raw), checkpoint, parity figures, ...
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return self.input_shape[0]

    @property
    def image_size(self) -> int:
        return self.input_shape[-1]

    @property
    def dynamic_batch(self) -> bool:
        """Whether the file accepts any batch size (else exactly :attr:`batch_size`)."""
        return bool(self.report.get("dynamic_batch"))

    @property
    def preprocess(self) -> dict[str, Any] | None:
        """The evaluation preprocessing the export recorded (``EvalTransform.settings()``)."""
        return self.report.get("preprocess")

    @staticmethod
    def report_file(path: Path) -> Path:
        return path.parent / f"{path.stem}.export.json"

    @staticmethod
    def classes_file(path: Path) -> Path:
        return path.parent / f"{path.stem}.classes.json"

    def write(self) -> None:
        self.classes_file(self.path).write_text(json.dumps(self.class_names))
        report = {**self.report, "input_shape": list(self.input_shape)}
        self.report_file(self.path).write_text(json.dumps(report, indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path, image_size: int | None = None) -> ExportedModel:
        """What is known of an exported file: its sidecars when present; without them an ONNX
        file's own input shape (``image_size`` stands in for a dynamic height / width)."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"infer.model={str(path)!r} does not exist")
        report = json.loads(cls.report_file(path).read_text()) if cls.report_file(path).is_file() else {}
        classes = json.loads(cls.classes_file(path).read_text()) if cls.classes_file(path).is_file() else []
        if "input_shape" in report:
            shape = tuple(int(v) for v in report["input_shape"])
        elif path.suffix == ".onnx":
            import onnxruntime as ort

            dims = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
            fixed = [d if isinstance(d, int) else None for d in dims]
            if (fixed[2] is None or fixed[3] is None) and image_size is None:
                raise UserError(f"{path.name} has a dynamic image size and no .export.json; set data.eval_size")
            shape = (fixed[0] or 1, fixed[1] or 3, fixed[2] or image_size, fixed[3] or image_size)
            report["dynamic_batch"] = fixed[0] is None
        else:
            raise UserError(f"cannot tell the input shape of {path.name}: its .export.json report is missing")
        return cls(path, shape, classes, report)  # type: ignore[arg-type]
