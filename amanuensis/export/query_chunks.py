"""Encoder self-attention in query chunks: the same numbers with a fraction of the memory.

Whisper's encoder attends 1500 frames to 1500 frames, so each layer's scores and softmax are
[1, H, 1500, 1500] float tensors (54 MB each for tiny.en): most of an encoder run's memory.
Rows of attention are independent (one query's scores, softmax and weighted sum need no other
query), so the row-wise chain from the scaled queries to the context can run on slices of the
queries one after another and be concatenated, and every number stays the same.

The rewrite works on a finished graph, FP32 or QDQ, so calibration, range tables and the WER gate
see the graph as exported; per-tensor Q/DQ nodes are row-wise too and are copied per chunk with
the same scale and zero point. A chunk count that does not divide the query length is rejected.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amanuensis.export.graph_index import GraphIndex, replace_nodes

QUERY_AXIS = 2  # queries, scores and context are [B, H, T, ·]
ROW_WISE_QDQ = ("QuantizeLinear", "DequantizeLinear")  # per-tensor here: elementwise


class _Graph(GraphIndex):
    """The index plus the one question the chunking asks of it."""

    def row_wise_producer(self, name: str) -> onnx.NodeProto | None:
        """The node making ``name`` if it is a per-tensor Q/DQ or a product with a scalar."""
        node = self.producer.get(name)
        if node is None or len(self.consumers.get(name, [])) != 1:
            return None
        if node.op_type in ROW_WISE_QDQ and all(self.is_scalar(n) for n in node.input[1:]):
            return node
        if node.op_type == "Mul" and self.is_scalar(node.input[1]):
            return node
        return None


def _attention_chain(g: _Graph, softmax: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto], str] | None:
    """(queries tensor, row-wise nodes in order, context tensor) around one Softmax, or None."""
    axis = next((helper.get_attribute_value(a) for a in softmax.attribute if a.name == "axis"), -1)
    if axis != -1:
        return None  # a softmax over anything but the keys would mix queries
    before: list[onnx.NodeProto] = []
    name = softmax.input[0]
    while (node := g.row_wise_producer(name)) is not None and node.op_type != "Mul":
        before.insert(0, node)
        name = node.input[0]
    scores = g.producer.get(name)
    if scores is None or scores.op_type != "MatMul" or len(g.consumers.get(name, [])) != 1:
        return None
    before.insert(0, scores)
    name = scores.input[0]
    while (node := g.row_wise_producer(name)) is not None:
        before.insert(0, node)
        name = node.input[0]
    queries = name
    after: list[onnx.NodeProto] = []
    current = softmax.output[0]
    while (node := g.single_consumer(current)) is not None and node.op_type in ROW_WISE_QDQ:
        after.append(node)
        current = node.output[0]
    if node is None or node.op_type != "MatMul" or node.input[0] != current:
        return None
    after.append(node)
    return queries, [*before, softmax, *after], node.output[0]


def split_attention_queries(model: onnx.ModelProto, chunks: int) -> onnx.ModelProto:
    """A copy of ``model`` whose multi-query attentions run in ``chunks`` slices of the queries."""
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    g = _Graph(graph)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input})
    rewrites: dict[str, list[onnx.NodeProto]] = {}  # last node of a chain → the nodes replacing the chain
    replaced: set[str] = set()
    for softmax in [n for n in graph.node if n.op_type == "Softmax"]:
        chain = _attention_chain(g, softmax)
        if chain is None:
            continue
        queries, nodes, context = chain
        length = shapes.get(queries, [0] * (QUERY_AXIS + 1))[QUERY_AXIS]
        if length <= 1:
            continue  # one query (a decoder step) or an unknown length: nothing to split
        if length % chunks:
            raise ValueError(f"{chunks} query chunks do not divide {length} queries")
        rewrites[nodes[-1].name] = _chunked_chain(graph, queries, nodes, context, [length // chunks] * chunks)
        replaced.update(node.name for node in nodes)
    # A chain's inputs all exist before its last node and its inner tensors are used only inside
    # it, so the chunked copy goes where the last node was and the order stays topological.
    replace_nodes(graph, {name: [] for name in replaced} | rewrites)
    del graph.value_info[:]  # inferred above for the lengths; the chunk tensors have other shapes
    return model


def _chunked_chain(
    graph: onnx.GraphProto, queries: str, nodes: list[onnx.NodeProto], context: str, sizes: list[int]
) -> list[onnx.NodeProto]:
    """Split → one copy of the chain per chunk → Concat into the original context tensor."""
    scope = nodes[-1].name.rsplit("/", 1)[0]
    sizes_name = f"{scope}/query_chunk_sizes"
    graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), sizes_name))
    parts = [f"{queries}/chunk{c}" for c in range(len(sizes))]
    built = [helper.make_node("Split", [queries, sizes_name], parts, name=f"{scope}/query_split", axis=QUERY_AXIS)]
    outputs = []
    for c, part in enumerate(parts):
        renamed = {queries: part}
        for node in nodes:
            copy = onnx.NodeProto()
            copy.CopyFrom(node)
            copy.name = f"{node.name}/chunk{c}"
            copy.input[0] = renamed[node.input[0]]
            for i, out in enumerate(node.output):
                renamed[out] = copy.output[i] = f"{out}/chunk{c}"
            built.append(copy)
        outputs.append(renamed[context])
    built.append(helper.make_node("Concat", outputs, [context], name=f"{scope}/query_concat", axis=QUERY_AXIS))
    return built
