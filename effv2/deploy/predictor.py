"""The inference API for code that embeds a model::

    from effv2 import Predictor

    predictor = Predictor.from_export("outputs/export/<run>/effnetv2_s.onnx")
    predictor.predict(["cat.jpg", pil_image, rgb_array], top_k=5)
    # [[{"class": "tabby, tabby cat", "index": 281, "prob": 0.83}, ...], ...]

It applies the evaluation preprocessing the export recorded (the one eval and ``task=infer``
use) and the class names the export carries, ImageNet names for a 1,000-class head without names.
``task=infer`` runs through this class, so both give identical outputs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from effv2.config.schema import DataConfig
from effv2.data.decode import BadImage, decode
from effv2.data.transforms import EvalTransform
from effv2.deploy.backends import Backend, open_backend
from effv2.deploy.class_names import default_class_names
from effv2.deploy.exported import ExportedModel
from effv2.errors import UserError
from effv2.storage.files import read_local

ImageInput = str | Path | bytes | np.ndarray | Any  # Any: a PIL image

_BACKEND_OF_SUFFIX = {".onnx": "onnxruntime", ".mindir": "mindir"}


log = logging.getLogger(__name__)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_k_predictions(logits: np.ndarray, class_names: Sequence[str], top_k: int = 5) -> list[list[dict[str, Any]]]:
    """The ``top_k`` classes of each row of ``logits``: class name, index, softmax probability.
    Without names, a 1,000- or 21,843-class head is named by :func:`default_class_names`."""
    probs = softmax(logits.astype(np.float64))
    names = list(class_names) or default_class_names(probs.shape[1])
    order = np.argsort(-probs, axis=1)[:, : min(top_k, probs.shape[1])]
    return [
        [
            {"class": names[i] if i < len(names) else str(i), "index": int(i), "prob": float(probs[row, i])}
            for i in order[row]
        ]
        for row in range(len(probs))
    ]


def run_batched(model: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int, pad: bool) -> np.ndarray:
    """``model`` over ``images`` in chunks of ``batch``; with ``pad`` (a model that takes exactly
    ``batch`` images) the last chunk is padded with zeros and the padding's outputs dropped."""
    outputs = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        if pad and len(chunk) < batch:
            padded = np.zeros((batch, *chunk.shape[1:]), chunk.dtype)
            padded[: len(chunk)] = chunk
            outputs.append(model(padded)[: len(chunk)])
        else:
            outputs.append(model(chunk))
    return np.concatenate(outputs)


def transform_for(exported: ExportedModel, data: DataConfig | None = None) -> EvalTransform:
    """The evaluation preprocessing the export recorded, else the one ``data`` describes."""
    if exported.preprocess is not None:
        return EvalTransform.from_settings(exported.preprocess)
    if data is not None:
        return EvalTransform(data, exported.image_size)
    raise UserError(f"{exported.path.name} has no recorded preprocessing (.export.json); pass data=<DataConfig>")


def prepare_file(
    transform: EvalTransform, path: str | Path, read: Callable[[str | Path], np.ndarray] = read_local
) -> np.ndarray:
    """One image file (read by ``read``: local by default) through ``transform``, with one-line
    errors for missing or broken files."""
    path = Path(path).expanduser() if read is read_local else path
    try:
        return transform(read(path))
    except FileNotFoundError:
        raise UserError(f"image {str(path)!r} does not exist") from None
    except (OSError, BadImage) as exc:
        raise UserError(f"cannot decode image {str(path)!r}: {str(exc).splitlines()[0]}") from None


def decodable_files(
    transform: EvalTransform, files: Sequence[str | Path], read: Callable[[str | Path], np.ndarray], policy: str
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of the files that decode, their positions in ``files``): a bad image is logged and
    left out (``data.on_bad_image=skip``) or stops naming it (``error``)."""
    pixels, kept = [], []
    for position, path in enumerate(files):
        try:
            pixels.append(transform(read(path)))
        except BadImage as exc:
            if policy == "error":
                raise UserError(f"bad image {str(path)!r}: {exc} (data.on_bad_image=skip would leave it out)") from None
            log.warning("bad image %s: %s; left out (data.on_bad_image=skip)", path, exc)
            continue
        kept.append(position)
    return np.stack(pixels) if pixels else np.zeros((0,)), np.asarray(kept, np.int64)


class Predictor:
    def __init__(
        self,
        exported: ExportedModel,
        backend: Backend,
        transform: EvalTransform,
        class_names: Sequence[str] = (),
        batch_size: int = 32,
    ) -> None:
        self.exported = exported
        self.backend = backend
        self.transform = transform
        self.class_names = list(class_names)
        # a fixed-batch file takes exactly its batch (the last chunk is padded)
        self.batch_size = batch_size if exported.dynamic_batch else exported.batch_size

    @classmethod
    def from_export(
        cls,
        path: str | Path | ExportedModel,
        *,
        class_names: Sequence[str] | None = None,
        data: DataConfig | None = None,
        provider: str = "cpu",
        batch_size: int = 32,
    ) -> Predictor:
        """A predictor over an exported ``.onnx`` / ``.mindir`` file and its sidecars.

        ``class_names`` overrides the export's; ``data`` supplies the preprocessing for a file
        exported without a record of it (older exports, foreign ONNX files)."""
        if not isinstance(path, ExportedModel):
            path = ExportedModel.read(path, image_size=data.eval_size if data is not None else None)
        exported = path
        backend_name = _BACKEND_OF_SUFFIX.get(exported.path.suffix)
        if backend_name is None:
            raise UserError(f"{exported.path.name}: a Predictor reads .onnx or .mindir files")
        transform = transform_for(exported, data)
        backend = open_backend(backend_name, exported.path, provider)
        names = list(class_names) if class_names is not None else exported.class_names
        return cls(exported, backend, transform, names, batch_size)

    def _pixels(self, image: ImageInput) -> np.ndarray:
        if isinstance(image, str | Path):
            return prepare_file(self.transform, image)
        if isinstance(image, bytes):
            return self.transform.pixels(decode(image))
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise UserError(f"an image array must be uint8 RGB height x width x 3; got {image.dtype} {image.shape}")
            return self.transform.pixels(image)
        if hasattr(image, "convert"):  # a PIL image
            return self.transform.pixels(np.asarray(image.convert("RGB")))
        raise UserError(f"cannot predict a {type(image).__name__}: give a path, encoded bytes, a PIL image or an array")

    def run(self, pixels: np.ndarray) -> np.ndarray:
        """The model on preprocessed NCHW ``pixels``, in batches the file accepts."""
        return run_batched(self.backend, pixels, self.batch_size, pad=not self.exported.dynamic_batch)

    def logits(self, images: Iterable[ImageInput]) -> np.ndarray:
        """Raw model outputs, one row per image."""
        items = list(images)
        if not items:
            return np.zeros((0, 0), np.float32)
        step = self.batch_size
        chunks = (np.stack([self._pixels(item) for item in items[i : i + step]]) for i in range(0, len(items), step))
        return np.concatenate([self.run(chunk) for chunk in chunks])

    def top_k(self, logits: np.ndarray, top_k: int = 5) -> list[list[dict[str, Any]]]:
        return top_k_predictions(logits, self.class_names, top_k)

    def predict(self, images: ImageInput | Iterable[ImageInput], top_k: int = 5) -> list[list[dict[str, Any]]]:
        """Top-k predictions for each image (paths, encoded bytes, PIL images or uint8 RGB arrays)."""
        single = isinstance(images, str | Path | bytes) or hasattr(images, "convert")  # hasattr: a PIL image
        if single or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        return self.top_k(self.logits(images), top_k)
