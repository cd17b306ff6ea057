"""Producer and consumer lookups over an ONNX graph, for the rewrites that work on finished graphs
(query chunks, quantized I/O, float attention scores)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import numpy_helper


class GraphIndex:
    """Who makes and who reads each tensor, as the graph stands when the index is built."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.initializers = {i.name: i for i in graph.initializer}

    def users(self, name: str) -> list[onnx.NodeProto]:
        return self.consumers.get(name, [])

    def single_consumer(self, name: str) -> onnx.NodeProto | None:
        users = self.users(name)
        return users[0] if len(users) == 1 else None

    def scalar(self, name: str) -> np.ndarray | None:
        """The value of a one-element initializer (a per-tensor scale or zero point), else None."""
        init = self.initializers.get(name)
        if init is None:
            return None
        value = numpy_helper.to_array(init)
        return value if value.size == 1 else None

    def is_scalar(self, name: str) -> bool:
        return self.scalar(name) is not None


def replace_nodes(graph: onnx.GraphProto, replacements: Mapping[str, Sequence[onnx.NodeProto]]) -> None:
    """Put each named node's replacement (possibly none) where it stood, in place; the others
    stay. The rewrites insert a node's replacement at its position so the order stays topological."""
    ordered = [new for node in graph.node for new in replacements.get(node.name, [node])]
    del graph.node[:]
    graph.node.extend(ordered)


def drop_unread_initializers(graph: onnx.GraphProto) -> None:
    """Remove the initializers no node reads, in place: what a rewrite left behind."""
    read = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)
