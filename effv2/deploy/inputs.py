"""What task=infer reads: one image, a list file, a folder of images or a labelled ImageFolder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effv2.data.bad_images import image_problem
from effv2.data.imagefolder import IMAGE_EXTENSIONS, images_in, list_split
from effv2.errors import UserError
from effv2.storage.fetch import Kind, fetch
from effv2.storage.location import is_remote, local_path

log = logging.getLogger(__name__)


@dataclass
class InferInputs:
    files: list[Path]
    labels: list[int] | None  # indices into the model's classes, for a labelled ImageFolder


def collect_inputs(source: str | None, class_names: list[str], on_bad_image: str = "skip") -> InferInputs:
    if not source:
        raise UserError("task=infer needs infer.input=<image | list .txt | folder of images | labelled ImageFolder>")
    path = Path(source).expanduser()
    if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
        return InferInputs([path], None)
    if path.is_file() and path.suffix.lower() == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        files = [fetch(line, "infer.input", Kind.FILE) if is_remote(line) else local_path(line) for line in lines]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UserError(f"infer.input={source!r} lists {len(missing)} missing images, e.g. {missing[0]!r}")
        return InferInputs(files, None)
    if not path.is_dir():
        raise UserError(
            f"infer.input={source!r} is not an image ({', '.join(IMAGE_EXTENSIONS)}), a .txt list or a folder"
        )
    direct = images_in(path)
    if direct or not any(p.is_dir() and images_in(p) for p in path.iterdir()):
        if not direct:
            raise UserError(f"infer.input={source!r} holds no images")
        return InferInputs(direct, None)
    # a labelled ImageFolder split, read by the same scanner as training and eval
    split = list_split(path.parent, path.name)
    folder_names = list(split.class_names)
    if class_names and set(folder_names) <= set(class_names):
        index = {name: i for i, name in enumerate(class_names)}
    elif not class_names or len(folder_names) == len(class_names):
        index = {name: i for i, name in enumerate(folder_names)}  # ImageFolder order, as in training
    else:
        unknown = sorted(set(folder_names) - set(class_names))[:5]
        raise UserError(f"infer.input={source!r} has class folders the model does not know: {unknown}")
    files, labels = [], []
    for file, label in zip(split.files, split.labels.tolist(), strict=True):
        problem = image_problem(np.fromfile(file, np.uint8))
        if problem is not None:
            if on_bad_image == "error":
                raise UserError(f"bad image {file!r}: {problem} (data.on_bad_image=skip would leave it out)")
            log.warning("bad image %s: %s; left out (data.on_bad_image=skip)", file, problem)
            continue
        files.append(Path(file))
        labels.append(index[folder_names[label]])
    return InferInputs(files, labels)
