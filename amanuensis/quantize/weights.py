"""How a static QDQ graph stores its weights: int8 per output channel where one scale is too coarse.

onnxruntime's QNN configuration gives every weight one uint8 scale, and its per-channel option
skips MatMul/Gemm (QNN has no per-channel MatMul). A product's output channels can differ in range
by an order of magnitude, and one scale for all of them spends most of the 256 levels on the
loudest channel. One symmetric int8 scale per output channel costs an NPU nothing at run time (the
scale folds into the output requantization), and the HTP's FullyConnected (a Gemm after
onnxruntime's QNN preprocessing) and Conv take it. The bias, stored in int32 with scale = input
scale × weight scale, gets one scale per channel to match.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import numpy_helper

from amanuensis.export.graph_index import GraphIndex, drop_unread_initializers
from amanuensis.quantize.per_row import symmetric_int8
from amanuensis.quantize.targets import Target

WIDE_TYPES = (onnx.TensorProto.UINT16, onnx.TensorProto.INT16)
PASS_THROUGH = ("QuantizeLinear", "DequantizeLinear", "Reshape", "Transpose", "Squeeze", "Unsqueeze")


def output_channel_axis(node: onnx.NodeProto) -> int:
    """The weight axis of a product's output channels: rows of a Conv kernel or a transposed Gemm
    weight, else columns."""
    if node.op_type == "Conv":
        return 0
    transposed = any(a.name == "transB" and a.i for a in node.attribute)
    return 0 if transposed else 1


def per_channel_weight_nodes(model: onnx.ModelProto, target: Target) -> list[onnx.NodeProto]:
    """The products whose weights the target takes per channel: its op types, weight a
    DequantizeLinear of a constant, and not one of ``target.per_tensor_products``."""
    index = GraphIndex(model.graph)
    found = []
    for node in model.graph.node:
        if node.op_type not in target.per_channel_op_types or len(node.input) < 2:
            continue
        dequantize = index.producer.get(node.input[1])
        constant = dequantize is not None and dequantize.input[0] in index.initializers
        if not constant or dequantize.op_type != "DequantizeLinear":
            continue
        if (node.op_type, _fed_by(index, node.input[0])) not in target.per_tensor_products:
            found.append(node)
    return found


def _fed_by(index: GraphIndex, name: str) -> str | None:
    """The op type that computes a tensor, looking through Q/DQ pairs and reshapes."""
    node = index.producer.get(name)
    while node is not None and node.op_type in PASS_THROUGH and node.input:
        node = index.producer.get(node.input[0])
    return node.op_type if node is not None else None


def store_weights_per_channel(
    model: onnx.ModelProto,
    float_values: dict[str, np.ndarray],
    select: Callable[[onnx.NodeProto, onnx.TensorProto], bool],
) -> int:
    """Give each product ``select`` picks (given the node and its stored weight) int8 weights with
    one symmetric scale per output channel, in place, from the float values (keyed by the quantized
    initializer's name). A weight another node shares keeps its old form for that node: each picked
    product gets a copy of its own. Returns how many products changed."""
    graph = model.graph
    index = GraphIndex(graph)
    changed = 0
    for node in [n for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) >= 2]:
        dequantize = index.producer.get(node.input[1])
        if dequantize is None or dequantize.op_type != "DequantizeLinear":
            continue
        stored = index.initializers.get(dequantize.input[0])
        values = float_values.get(dequantize.input[0])
        if stored is None or values is None or not index.is_scalar(dequantize.input[1]) or not select(node, stored):
            continue
        axis = output_channel_axis(node)
        quantized, scale = symmetric_int8(values, axis)
        name = f"{node.name}/weight_int8"
        node.input[1] = _add_dequantized(graph, node, name, quantized, scale, np.zeros(scale.shape, np.int8), axis)
        if len(node.input) > 2 and node.input[2]:
            _rescale_bias(graph, index, node, scale, float_values)
        changed += 1
    if changed:
        _drop_unread(graph)
    return changed


def give_wide_weights_an_8bit_copy(model: onnx.ModelProto, float_values: dict[str, np.ndarray]) -> int:
    """Give each product whose weight is stored in 16 bits int8 per-channel weights of its own.

    onnxruntime's QNN configuration stores a table that a Gather also reads (Whisper's tied token
    embedding, whose transpose is the vocabulary projection) with the activations' 16-bit type.
    The HTP has no FullyConnected for 16-bit activations × 16-bit weights and leaves that Gemm,
    most of a decoder step's MACs, to the CPU. The Gather keeps the 16-bit table; the product gets
    its own int8 copy (one uint8 scale for the whole 51864-row table cost 1.2 WER points on clean
    speech). Returns how many.
    """
    return store_weights_per_channel(model, float_values, lambda _node, stored: stored.data_type in WIDE_TYPES)


def _add_dequantized(
    graph: onnx.GraphProto,
    before: onnx.NodeProto,
    name: str,
    quantized: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    axis: int,
) -> str:
    """Store a per-axis quantized constant and its DequantizeLinear just before ``before``; returns
    the dequantized tensor's name."""
    graph.initializer.extend(
        [
            numpy_helper.from_array(quantized, name),
            numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
            numpy_helper.from_array(zero_point, f"{name}_zero_point"),
        ]
    )
    dequantize = onnx.helper.make_node(
        "DequantizeLinear",
        [name, f"{name}_scale", f"{name}_zero_point"],
        [f"{name}_dequantized"],
        name=f"{name}_DequantizeLinear",
        axis=axis,
    )
    graph.node.insert(list(graph.node).index(before), dequantize)
    return dequantize.output[0]


def _rescale_bias(
    graph: onnx.GraphProto,
    index: GraphIndex,
    node: onnx.NodeProto,
    weight_scale: np.ndarray,
    float_values: dict[str, np.ndarray],
) -> None:
    """Requantize an int32 bias to scale = input scale × each channel's weight scale, the form an
    integer kernel adds to its accumulator as it is."""
    bias = index.producer.get(node.input[2])
    data = index.producer.get(node.input[0])
    if bias is None or data is None or bias.op_type != "DequantizeLinear" or data.op_type != "DequantizeLinear":
        return
    stored = index.initializers.get(bias.input[0])
    data_scale = index.scalar(data.input[1])
    if stored is None or stored.data_type != onnx.TensorProto.INT32 or data_scale is None:
        return
    values = float_values.get(bias.input[0])
    if values is None:
        old_scale = index.scalar(bias.input[1])
        if old_scale is None:
            return
        values = numpy_helper.to_array(stored).astype(np.float64) * float(old_scale)
    scale = (float(data_scale) * weight_scale).astype(np.float32)
    info = np.iinfo(np.int32)
    quantized = np.clip(np.round(values / scale), info.min, info.max).astype(np.int32)
    name = f"{node.name}/bias_int32"
    node.input[2] = _add_dequantized(graph, node, name, quantized, scale, np.zeros(scale.shape, np.int32), 0)


def _drop_unread(graph: onnx.GraphProto) -> None:
    """Remove DequantizeLinear nodes nothing reads any more, and initializers no node reads."""
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        unread = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in read]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    drop_unread_initializers(graph)
