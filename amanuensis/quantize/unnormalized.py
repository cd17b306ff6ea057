"""Attention weights an 8-bit scale can hold: ``softmax(s) @ V`` as ``(exp(s − max s) @ V) / Σ exp(s − max s)``.

A softmax row over 1500 frames is mostly far below 1/255, so one 8-bit scale for a whole tensor of
probabilities rounds most of each row to zero. The unnormalized weights are the same numbers up
to each row's sum, but every row's largest weight is exactly 1, so the scale 1/255 is in effect
one per row. Both the CPU flavour (run-time scales) and the 8-bit static flavours use it; the
range of those weights is [0, 1] by construction.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amanuensis.export.graph_index import GraphIndex, replace_nodes
from amanuensis.quantize.per_row import unit_rows

LAST_AXIS = -1
UNNORMALIZED_SUFFIX = "/unnormalized"  # the product of the weights with V, before the division


def _reduce(op: str, data: str, axes: str, output: str, name: str, opset: int) -> onnx.NodeProto:
    """ReduceMax/ReduceSum over the last axis, in the form the graph's opset wants."""
    if op == "ReduceSum" or opset >= 18:
        return helper.make_node(op, [data, axes], [output], name=name, keepdims=1)
    return helper.make_node(op, [data], [output], name=name, keepdims=1, axes=[LAST_AXIS])


def unnormalized_attention(model: onnx.ModelProto) -> int:
    """Rewrite each ``Softmax(s) @ V`` into ``(exp(s - max s) @ V) / sum exp(s - max s)``, in place.

    Only a last-axis Softmax whose one reader is a MatMul taking it as the left operand is
    rewritten; returns how many were.
    """
    graph = model.graph
    index = GraphIndex(graph)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    replaced: dict[str, list[onnx.NodeProto]] = {}
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        axis = next((helper.get_attribute_value(a) for a in softmax.attribute if a.name == "axis"), LAST_AXIS)
        matmul = index.single_consumer(softmax.output[0])
        if axis != LAST_AXIS or matmul is None or matmul.op_type != "MatMul" or matmul.input[0] != softmax.output[0]:
            continue
        scope, scores, weights = softmax.name, softmax.input[0], softmax.output[0]
        axes = f"{scope}/last_axis"
        graph.initializer.append(numpy_helper.from_array(np.array([LAST_AXIS], np.int64), axes))
        row_max, shifted, row_sum = f"{scope}/row_max", f"{scope}/shifted", f"{scope}/row_sum"
        context = matmul.output[0]
        unnormalized = f"{context}{UNNORMALIZED_SUFFIX}"
        matmul.output[0] = unnormalized
        replaced[softmax.name] = [
            _reduce("ReduceMax", scores, axes, row_max, f"{scope}/ReduceMax", opset),
            helper.make_node("Sub", [scores, row_max], [shifted], name=f"{scope}/Sub"),
            helper.make_node("Exp", [shifted], [weights], name=f"{scope}/Exp"),
            _reduce("ReduceSum", weights, axes, row_sum, f"{scope}/ReduceSum", opset),
        ]
        replaced[matmul.name] = [
            matmul,
            helper.make_node("Div", [unnormalized, row_sum], [context], name=f"{scope}/normalize"),
        ]
    replace_nodes(graph, replaced)
    return len(replaced) // 2


def attention_weight_ranges(graph: onnx.GraphProto) -> dict[str, tuple[float, float]]:
    """Ranges known by construction in a rewritten graph: the unnormalized weights lie in [0, 1]
    (each row's largest is exactly 1, whatever a calibration measured). Their products with V get
    the same placeholder, because ``quantize_static`` wants a range for every output it wraps, and
    the static build drops that Q/DQ pair again (qdq.keep_unnormalized_context_float)."""
    index = GraphIndex(graph)
    ranges = {}
    for node in graph.node:
        if node.op_type == "MatMul" and unit_rows(index, node.input[0]):
            ranges[node.input[0]] = ranges[node.output[0]] = (0.0, 1.0)
    return ranges
