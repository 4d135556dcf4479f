"""MindSpore's compile cache across runs, keyed by everything that shapes the compiled graphs.

MindSpore reloads cached graphs in the order a process compiles them and does not check that
they belong to the network at hand: a cache written by B0 made an S run crash inside a
BatchNorm kernel (measured). So each cache folder serves exactly one configuration: its name
is a hash of the resolved config without the values that never reach a graph (checkpoint and
resume paths, distributed.* settings). A resumed run compiles in another order and does not use
it, nor does a multirun (its jobs share one process and MindSpore one cache path).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import OmegaConf

from effv2.cache import compile_cache_dir
from effv2.config.schema import RunConfig, task_of

log = logging.getLogger(__name__)

# config keys that never reach a compiled graph
_UNRELATED = ("ckpt", "resume", "distributed", "export", "infer", "convert")
_TASKS = ("train", "eval")


def cache_key(cfg: RunConfig) -> str:
    config = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in _UNRELATED:
        config.pop(key, None)
    import mindspore

    config["mindspore"] = mindspore.__version__
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def enable_compile_cache(cfg: RunConfig, multirun: bool = False) -> Path | None:
    """Point MindSpore's compile cache at this configuration's folder, when that is safe."""
    if not cfg.hardware.compile_cache or task_of(cfg) not in _TASKS:
        return None
    if cfg.resume or multirun:
        log.info("hardware.compile_cache is off for %s runs (their compile order differs)",
                 "resumed" if cfg.resume else "multirun")  # fmt: skip
        return None
    import mindspore as ms

    path = compile_cache_dir(cache_key(cfg))
    path.mkdir(parents=True, exist_ok=True)
    ms.set_context(enable_compile_cache=True, compile_cache_path=str(path))
    log.info("compile cache %s", path)
    return path
