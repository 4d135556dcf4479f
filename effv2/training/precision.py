"""Mixed precision levels O0-O3 through MindSpore's own amp."""

from __future__ import annotations

import contextlib
from pathlib import Path

import mindspore as ms
from mindspore import nn

from effv2.errors import UserError

AMP_LEVELS = ("O0", "O1", "O2", "O3")


def apply_amp(net: nn.Cell, level: str, workdir: Path) -> nn.Cell:
    """The network that runs the forward pass at ``level``; ``net`` keeps owning the weights.

    O1 rewrites the network's source into ``./rewritten_network``; it runs inside ``workdir``
    (the run folder) so nothing lands in the user's current directory.
    """
    if level not in AMP_LEVELS:
        raise UserError(f"hardware.amp_level={level!r} is not one of {', '.join(AMP_LEVELS)}")
    if level == "O0":
        return net
    with contextlib.chdir(workdir):
        return ms.amp.auto_mixed_precision(net, level)
