"""Static INT8 post-training quantization of an exported ONNX file with onnxruntime's tools.

QDQ format (QuantizeLinear / DequantizeLinear pairs around each quantized operator, which
onnxruntime fuses into integer kernels), signed 8-bit weights, unsigned 8-bit activations (the
combination onnxruntime's x86 kernels are built for), calibration on real images through the
evaluation preprocessing, 7-bit weights by default (``reduce_range``: no int16 saturation on CPUs
without VNNI). The file is first prepared with ``quant_pre_process`` (shape inference
and graph optimisation: BatchNormalization folds into the convolutions, so the folded weights are
what gets quantized). The model's outputs stay float: onnxruntime would otherwise round the
logits onto a uint8 grid (a step of 0.48 on the demo), so images whose top two classes lie closer
than one step swap or tie (a tie goes to the lower class).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

QDQ_OPSET = 13


def _calibration_reader(input_name: str, batches: Sequence[np.ndarray]):
    """onnxruntime's reader protocol, with the range selection that lets its calibration run one
    batch at a time (``CalibStridedMinMax``, used by every calibrator despite the name): the
    histogram calibrators otherwise hold every intermediate tensor of every batch at once, which
    exhausted 24 GiB on EfficientNetV2-S at 384 px with 64 images."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._pending: Iterator[np.ndarray] = iter(batches)

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._pending = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._pending, None)
            return None if batch is None else {input_name: batch}

    return Batches()


def _upgrade_opset(source: Path, out: Path) -> None:
    """MindSpore writes opset 11; per-channel DequantizeLinear (its ``axis``) needs opset 13."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(source))
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if opset < QDQ_OPSET:
        model = version_converter.convert_version(model, QDQ_OPSET)
    onnx.save(model, str(out))


def _keep_outputs_float(path: Path) -> int:
    """Drop the QuantizeLinear -> DequantizeLinear pair in front of each graph output of the QDQ
    model at ``path``, so the operator before it (the classifier's Gemm) writes the output in
    float; returns how many outputs it freed. Integer kernels gain nothing there: the consumer
    reads floats, and the rounding only costs ranking."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output}
    readers = Counter([name for node in graph.node for name in node.input] + [out.name for out in graph.output])
    quantized: set[str] = set()  # each dropped pair's int8 tensor, between its two nodes
    renamed: set[str] = set()  # the float tensors the pairs read, now written as the outputs
    scales: set[str] = set()  # the pairs' scales and zero points
    for output in graph.output:
        dequantize = producer.get(output.name)
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        quantize = producer.get(dequantize.input[0])
        if quantize is None or quantize.op_type != "QuantizeLinear" or readers[quantize.output[0]] != 1:
            continue
        source = producer.get(quantize.input[0])
        if source is None or readers[quantize.input[0]] != 1:
            continue  # the float value feeds other nodes too (or is the graph input): leave it
        source.output[list(source.output).index(quantize.input[0])] = output.name
        quantized.add(quantize.output[0])
        renamed.add(quantize.input[0])
        scales.update((*quantize.input[1:], *dequantize.input[1:]))
    if quantized:

        def in_a_pair(node: onnx.NodeProto) -> bool:
            return (node.op_type == "QuantizeLinear" and node.output[0] in quantized) or (
                node.op_type == "DequantizeLinear" and node.input[0] in quantized
            )

        kept = [node for node in graph.node if not in_a_pair(node)]
        del graph.node[:]
        graph.node.extend(kept)
        used = {name for node in kept for name in node.input} | {value.name for value in graph.input}
        for init in [init for init in graph.initializer if init.name in scales and init.name not in used]:
            graph.initializer.remove(init)
        stale = quantized | renamed  # shapes recorded for names no node writes any more
        for value in [value for value in graph.value_info if value.name in stale]:
            graph.value_info.remove(value)
        onnx.save(model, str(path))
    return len(quantized)


def quantize_int8(
    fp32: Path,
    out: Path,
    batches: Sequence[np.ndarray],
    *,
    method: str = "percentile",
    per_channel: bool = True,
    reduce_range: bool = True,
    op_types: list[str] | None = None,
) -> None:
    """Write the INT8 QDQ model of ``fp32`` to ``out``, calibrated on ``batches`` (NCHW float32)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
        "distribution": CalibrationMethod.Distribution,
    }
    input_name = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory(prefix="effv2-quantize-") as tmp:
        upgraded, prepared = Path(tmp) / "opset.onnx", Path(tmp) / "prepared.onnx"
        _upgrade_opset(fp32, upgraded)
        quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
        chatter = io.StringIO()  # the histogram calibrators print their progress
        with contextlib.redirect_stdout(chatter):
            quantize_static(
                str(prepared),
                str(out),
                _calibration_reader(input_name, batches),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
                op_types_to_quantize=op_types or None,
                extra_options={"CalibStridedMinMax": 1},
            )
        log.debug("onnxruntime quantization: %s", chatter.getvalue().strip())
    _keep_outputs_float(out)
