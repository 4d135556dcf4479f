"""The log file of a node's launching run.py: node 0 logs to ``<run>/run.log``, node k of a
multi-node job to ``<run>/ranks/node<k>/run.log`` (conf/config.yaml), a folder that does not exist
yet when Hydra configures logging; this handler makes it."""

from __future__ import annotations

import logging
from pathlib import Path


class NodeFileHandler(logging.FileHandler):
    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = False) -> None:
        Path(filename).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(filename, mode, encoding, delay)
