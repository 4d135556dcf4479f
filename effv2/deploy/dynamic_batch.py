"""Make a fixed-batch ONNX file (MindSpore 2.10 exports only those) accept any batch size.

The rewrite names the batch dimension of the graph's inputs and outputs (``batch``), drops the
intermediate shapes MindSpore recorded, and turns constant ``Reshape`` targets that start with the
exported batch into ``0`` (ONNX: copy that dimension from the input). Any other operator that can
bake a batch size into the graph (``Expand``, ``Tile``, ``ConstantOfShape``, shape constants read
by ``Slice`` ...) makes the rewrite refuse: :func:`make_batch_dynamic` then leaves the file
as it was and says why. A rewritten file is only kept after the export's parity check at several
batch sizes (``deploy/export.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BATCH_DIM = "batch"
# operators whose constant inputs may hold a batch size the rewrite cannot adjust
_SHAPE_OPS = {"Expand", "Tile", "ConstantOfShape", "Slice", "Shape", "Range", "Resize", "Upsample"}


def make_batch_dynamic(path: Path, batch: int) -> str | None:
    """Rewrite ``path`` in place; returns None on success, else the reason it was left fixed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    shape_ops = sorted({node.op_type for node in graph.node} & _SHAPE_OPS)
    if shape_ops:
        return f"the graph has {', '.join(shape_ops)}, whose shape inputs the rewrite does not adjust"
    initializers = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        target = initializers.get(node.input[1])
        if target is None:
            return f"Reshape {node.name!r} takes a computed shape"
        values = numpy_helper.to_array(target).copy()
        if values.size and values[0] == batch:
            values[0] = 0
            target.CopyFrom(numpy_helper.from_array(values.astype(np.int64), target.name))
        elif batch in values.tolist():
            return f"Reshape {node.name!r} has the batch size {batch} inside its target shape {values.tolist()}"
    inputs = [value for value in graph.input if value.name not in initializers]
    for value in (*inputs, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_value != batch:
            return f"{value.name!r} does not lead with the exported batch dimension {batch}"
        dims[0].ClearField("dim_value")
        dims[0].dim_param = BATCH_DIM
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return None
