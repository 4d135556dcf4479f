"""Checkpoints of the seed (the MindSpore ModelZoo EfficientNetV2 scripts,
``official/cv/EfficientNetV2/src/models/effnetv2.py``): recognised by their layout, read into
effv2's names for ``task=convert`` and ``model.pretrained=``.

The seed's network, read line by line against effv2's official architecture: the same stem (3x3
stride 2, ``same`` padding, BN eps 1e-3 / momentum 0.9, SiLU), the same stage tables for S, M, L
and XL, Fused-MBConv (3x3 expand + 1x1 project; with expansion 1 a single 3x3 conv, BN, SiLU,
which the seed builds with stride 1, as every expansion-1 stage of its tables has) and MBConv (1x1
expand, 3x3 depthwise, SE reducing to the block input's channels // 4 with two biased 1x1
convolutions, SiLU and sigmoid, 1x1 project), residuals where stride is 1 and channels agree,
1x1 head to 1280, mean pooling, dropout, a dense classifier. Every tensor maps one to one in
MindSpore's own layouts, and the converted network computes the seed's function (tested to 1e-5).
What the seed adds is training state (optimizer moments, counters), which is left out and counted.
"""

from __future__ import annotations

from typing import Any

from effv2.checkpoints import fit_pretrained, read_checkpoint
from effv2.conversion.names import seed_block_kind, seed_names
from effv2.errors import UserError
from effv2.models.efficientnetv2 import EfficientNetV2

SEED_MARKER = "features.0.0.weight"  # the stem convolution: every seed checkpoint has it
_SEED_MODEL_PREFIXES = ("features.", "conv.", "classifier.")


def is_seed_layout(names: set[str] | dict[str, Any]) -> bool:
    return SEED_MARKER in names


def seed_model_tensors(params: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The model's entries of a loaded seed checkpoint (names as the seed's model file has them)
    and how many entries were training state (optimizer moments such as ``moments.*``, the step)."""
    tensors = {name: value for name, value in params.items() if name.startswith(_SEED_MODEL_PREFIXES)}
    return tensors, len(params) - len(tensors)


def require_seed_blocks(net: EfficientNetV2, what: str) -> None:
    """Stop in one line when ``net`` has a block the seed's model file never builds."""
    for k, block in enumerate(net.blocks):
        if seed_block_kind(block) is None:
            kind = (
                type(block).__name__
                + ("" if block.has_se else " without SE")
                + ("" if block.has_expand else " without expansion")
            )
            raise UserError(
                f"{what} is a seed (ModelZoo) checkpoint, whose model file builds MBConv blocks with SE and "
                f"Fused-MBConv blocks without; model={net.spec.name} has a {kind} at block {k}"
            )


def seed_to_effv2(net: EfficientNetV2, tensors: dict[str, Any]) -> dict[str, Any]:
    """The seed's tensors under effv2's names; a tensor the mapping does not know keeps its own
    name (so the caller lists it as unexpected)."""
    effv2_name = {source.name: ours for ours, source in seed_names(net).items()}
    return {effv2_name.get(name, name): value for name, value in tensors.items()}


def load_pretrained_weights(net: EfficientNetV2, path: str) -> dict[str, Any]:
    """``model.pretrained=``: an effv2 checkpoint (effv2.checkpoints.load_pretrained) or the seed's
    own, whose names are read as effv2's first."""
    params, meta = read_checkpoint(path)
    if is_seed_layout(params):
        require_seed_blocks(net, f"model.pretrained={str(path)!r}")
        tensors, _ = seed_model_tensors(params)
        params, meta = seed_to_effv2(net, tensors), {"converted": {"format": "modelzoo"}}
    return fit_pretrained(net, path, params, meta)
