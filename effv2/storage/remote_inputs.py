"""The user paths each task reads, made local before the task starts: a remote one (``s3://``,
...) is downloaded once into a temporary folder; the config the run folder keeps still names
the URL."""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import OmegaConf

from effv2.storage.fetch import Kind, fetch
from effv2.storage.location import is_remote

# task -> (config key, what it names); data.root is not here: it is listed and streamed
TASK_INPUTS: dict[str, tuple[tuple[str, Kind], ...]] = {
    "train": (("model.pretrained", Kind.FILE), ("resume", Kind.ANY)),
    "eval": (("ckpt", Kind.FILE),),
    "export": (("ckpt", Kind.FILE),),
    "infer": (("ckpt", Kind.FILE), ("infer.model", Kind.FILE_SET), ("infer.input", Kind.ANY)),
    "convert": (("convert.source", Kind.FILE_SET),),
}


def with_local_inputs(cfg: Any, task: str) -> Any:
    """``cfg`` with every remote input of ``task`` replaced by its local copy (the same object
    when none is remote)."""
    remote = [(key, kind) for key, kind in TASK_INPUTS.get(task, ()) if is_remote(OmegaConf.select(cfg, key))]
    if task == "train" and cfg.resume:
        remote = [(key, kind) for key, kind in remote if key != "model.pretrained"]  # unused on resume
    if not remote:
        return cfg
    local = copy.deepcopy(cfg)
    for key, kind in remote:
        OmegaConf.update(local, key, str(fetch(OmegaConf.select(cfg, key), key, kind)), merge=False)
    return local
