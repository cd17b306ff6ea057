"""A decoder step whose batch size and cache length are chosen at run time, for the CPU EP.

NPU compilers need the fixed shapes the step is exported with: a fixed batch and a cache of
``n_text_ctx`` slots, attended over in full at every step (empty slots masked). onnxruntime's
CPU EP does not, and fixed shapes cost it twice:

- a session per batch size holds its own prepacked weights (~70 MB each, tiny.en INT8), so the
  ``best_of`` samples of a temperature-fallback window used to run one after another on the
  batch-1 session instead of as the rows of one batch;
- every step reads (and the INT8 step quantizes) all 448 cache slots, where a window's text
  usually fills a few dozen.

The rewrite works on a finished batch-1 step graph, FP32 or quantized. The batch axis of the
token, cache, logits and new-K/V tensors and the slot axis of the cache and mask become symbolic.
Reshape targets, which the builder writes batch first, copy the batch from their input
(ONNX Reshape's 0), and the mask's reshape takes its slot count from the mask (-1). The Split
that parts the softmax into cache slots and new tokens becomes two Slices counted from the end.
Masked slots add exactly 0 to a softmax and the quantizers' ranges always include 0, so a step
over only the filled slots gives the numbers of a step over all of them.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amanuensis.export.graph_index import GraphIndex, drop_unread_initializers, replace_nodes

BATCH_DIM, SLOTS_DIM = "batch", "cache_slots"
COPY_DIM, INFER_DIM = 0, -1  # in a Reshape target: this dimension is the input's / whatever is left
TO_END = np.iinfo(np.int64).max
SLOT_AXIS = {"self_k_": 3, "self_v_": 2, "mask": 1}  # cache inputs are (B, H, Dh, slots) and (B, H, slots, Dh)


def _per_hypothesis(name: str) -> bool:
    """Graph inputs and outputs with one row per hypothesis (the rest are shared by all rows)."""
    return name in ("tokens", "logits") or name.startswith(("self_", "new_"))


def _free_dim(value: onnx.ValueInfoProto, axis: int, name: str, expected: int | None) -> None:
    dim = value.type.tensor_type.shape.dim[axis]
    if expected is not None and dim.dim_value != expected:
        raise ValueError(f"{value.name}: expected {expected} on axis {axis}, found {dim.dim_value}")
    dim.dim_param = name


def _const(graph: onnx.GraphProto, name: str, values: list[int]) -> str:
    graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
    return name


def free_decoder_shapes(model: onnx.ModelProto) -> None:
    """Rewrite a batch-1 decoder step in place to take any batch size and any number of cache slots."""
    graph = model.graph
    inputs = {value.name for value in graph.input}
    for value in [*graph.input, *graph.output]:
        if _per_hypothesis(value.name):
            if value.type.tensor_type.shape.dim[0].dim_value != 1:
                raise ValueError(f"{value.name}: expected a batch-1 decoder step")
            _free_dim(value, 0, BATCH_DIM, 1)
        axis = next((a for prefix, a in SLOT_AXIS.items() if value.name.startswith(prefix)), None)
        if value.name in inputs and axis is not None:
            _free_dim(value, axis, SLOTS_DIM, None)
    index = GraphIndex(graph)
    for name in sorted({node.input[1] for node in graph.node if node.op_type == "Reshape"}):
        init = index.initializers.get(name)
        if init is None:
            raise ValueError(f"Reshape target {name} is computed, not constant: cannot free its shape")
        shape = numpy_helper.to_array(init).copy()
        if shape.ndim != 1 or shape[0] != 1:
            raise ValueError(f"Reshape target {name} = {shape.tolist()} does not start with the batch")
        shape[0] = COPY_DIM
        if all(node.input[0] == "mask" for node in index.users(name) if node.op_type == "Reshape"):
            shape[-1] = INFER_DIM  # the mask's slots
        init.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), name))
    replace_nodes(graph, {split.name: _slices(graph, index, split) for split in _cache_splits(graph, index)})
    drop_unread_initializers(graph)
    # Shapes inferred for the fixed graph would contradict the symbolic ones; onnxruntime infers them again.
    del graph.value_info[:]


def _cache_splits(graph: onnx.GraphProto, index: GraphIndex) -> list[onnx.NodeProto]:
    """The Splits that part a softmax over (cache slots + new tokens) at a constant slot count."""
    splits = [n for n in graph.node if n.op_type == "Split" and len(n.output) == 2]
    for split in splits:
        if len(split.input) < 2 or split.input[1] not in index.initializers:
            raise ValueError(f"{split.name}: the split sizes are not a constant")
    return splits


def _slices(graph: onnx.GraphProto, index: GraphIndex, split: onnx.NodeProto) -> list[onnx.NodeProto]:
    """The two Slices that replace ``split``: all but the last n positions, and the last n."""
    _, new_tokens = numpy_helper.to_array(index.initializers[split.input[1]]).tolist()
    axis = next((helper.get_attribute_value(a) for a in split.attribute if a.name == "axis"), 0)
    scope, data = split.name, split.input[0]
    axes = _const(graph, f"{scope}/axes", [axis])
    start, boundary, end = (
        _const(graph, f"{scope}/start", [0]),
        _const(graph, f"{scope}/boundary", [-new_tokens]),
        _const(graph, f"{scope}/end", [TO_END]),
    )
    return [
        helper.make_node("Slice", [data, start, boundary, axes], [split.output[0]], name=f"{scope}/cache_slots"),
        helper.make_node("Slice", [data, boundary, end, axes], [split.output[1]], name=f"{scope}/new_tokens"),
    ]
