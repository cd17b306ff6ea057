"""Loud hidden channels of an FFN get their own 8-bit scale: its second product split by channel group.

The GELU outputs of tiny.en's last encoder FFN have 3 channels peaking near 500 while the median
channel peaks near 2. With one 8-bit scale per tensor a step is then about 2, so every quiet
channel rounds to a few levels or none: quantizing that one product alone left the encoder's output
at 7 dB SQNR. SmoothQuant cannot help there (a GELU, not a LayerNorm, sits in front of it).

So the channels are grouped by calibrated peak, loudest first, each group spanning at most a factor
``GROUP_SPAN``; the first FFN weight's columns and bias are permuted to put the groups side by side,
and the second product becomes one MatMul per group (a Split, then the groups' products summed).
In float nothing changes and the MACs are the same; each group's input is quantized with its own
range, and every group stays an ordinary W8A8 MatMul.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from amanuensis.export.graph_index import GraphIndex, replace_nodes
from amanuensis.export.io_names import Feed
from amanuensis.quantize.recipe import RangeTable
from amanuensis.quantize.smooth import apply_scales, channel_stats

GROUP_SPAN = 4.0  # a group's loudest channel peaks at most this many times its quietest (2 bits)
MAX_GROUPS = 4  # the last group takes every channel left
ELEMENTWISE = {"Add", "Mul", "Div", "Erf", "Gelu", "Sub", "Tanh", "Sigmoid"}  # what a GELU is made of


@dataclass(frozen=True)
class Ffn:
    """One feed-forward block's two products, as found in the graph."""

    first: onnx.NodeProto  # MatMul(x, W1)
    bias: onnx.NodeProto | None  # Add(first, b1), when there is one
    second: onnx.NodeProto  # MatMul(gelu(...), W2)


def find_ffns(model: onnx.ModelProto) -> dict[str, Ffn]:
    """Second-product name → its FFN, where an elementwise chain (the GELU) leads back from the
    second MatMul's input to one first MatMul (and its bias) whose weights nothing else reads."""
    index = GraphIndex(model.graph)
    found = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in index.initializers:
            continue
        first = _first_product(index, node.input[0])
        if first is None or len(index.users(node.input[1])) != 1 or len(index.users(first.input[1])) != 1:
            continue
        bias = index.single_consumer(first.output[0])
        bias = bias if bias is not None and bias.op_type == "Add" and bias.input[1] in index.initializers else None
        found[node.name] = Ffn(first, bias, node)
    return found


def _first_product(index: GraphIndex, tensor: str) -> onnx.NodeProto | None:
    """The MatMul with constant weights that ``tensor`` is computed from elementwise, if exactly one."""
    seen, stack, products = set(), [tensor], set()
    nodes = {}
    while stack:
        name = stack.pop()
        node = index.producer.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op_type == "MatMul" and node.input[1] in index.initializers:
            products.add(node.name)
            nodes[node.name] = node
        elif node.op_type in ELEMENTWISE:
            stack += [i for i in node.input if i not in index.initializers]
        else:
            return None
    return nodes[products.pop()] if len(products) == 1 else None


def groups_for(peak: np.ndarray) -> list[list[int]]:
    """Channel indices per group, loudest group first; one group when no channel stands out."""
    order = np.argsort(-peak, kind="stable")
    groups: list[list[int]] = [[]]
    head = float(peak[order[0]])
    for channel in order:
        if peak[channel] * GROUP_SPAN < head and len(groups) < MAX_GROUPS:
            groups.append([])
            head = float(peak[channel])
        groups[-1].append(int(channel))
    return groups if len(groups) > 1 else []


def splitting_for(source: Path, feeds: Iterable[Feed], runs: int) -> dict[str, list[list[int]]]:
    """Second-product name → its channel groups, for every FFN of the graph ``source`` whose hidden
    channels span more than ``GROUP_SPAN`` on these calibration inputs (the table's ``splits``)."""
    model = onnx.load(str(source))
    ffns = find_ffns(model)
    hidden = {ffn.second.input[0]: name for name, ffn in ffns.items()}
    stats = channel_stats(model, set(hidden), feeds, runs)
    found = {hidden[tensor]: groups_for(seen.peak) for tensor, seen in stats.items()}
    return {name: groups for name, groups in sorted(found.items()) if groups}


def apply_splits(model: onnx.ModelProto, splits: dict[str, list[list[int]]]) -> None:
    """Permute each FFN's hidden channels into its groups and split its second product, in place."""
    ffns = find_ffns(model)
    index = GraphIndex(model.graph)
    replacements: dict[str, list[onnx.NodeProto]] = {}
    for name, groups in splits.items():
        ffn = ffns[name]
        order = np.concatenate([np.asarray(g, np.int64) for g in groups])
        _permute(model, index, ffn.first.input[1], lambda w, o=order: w[:, o])
        if ffn.bias is not None:
            _permute(model, index, ffn.bias.input[1], lambda b, o=order: b[o])
        weight = numpy_helper.to_array(index.initializers[ffn.second.input[1]])[order]
        replacements[name] = _split_product(model, ffn.second, weight, [len(g) for g in groups])
    replace_nodes(model.graph, replacements)
    for name in splits:
        model.graph.initializer.remove(index.initializers[ffns[name].second.input[1]])


def _split_product(
    model: onnx.ModelProto, product: onnx.NodeProto, weight: np.ndarray, sizes: list[int]
) -> list[onnx.NodeProto]:
    """Split → one MatMul per group → summed into the product's own output name."""
    base = product.name.rsplit("/", 1)[0]
    parts = [f"{base}/group_{g}/input" for g in range(len(sizes))]
    sizes_name = f"{base}/group_sizes"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(sizes, np.int64), sizes_name))
    nodes = [helper.make_node("Split", [product.input[0], sizes_name], parts, name=f"{base}/Split", axis=-1)]
    outputs, start = [], 0
    for g, size in enumerate(sizes):
        weight_name = f"{base}/group_{g}/weight"
        model.graph.initializer.append(numpy_helper.from_array(weight[start : start + size], weight_name))
        start += size
        outputs.append(f"{base}/group_{g}/MatMul:0")
        nodes.append(
            helper.make_node("MatMul", [parts[g], weight_name], [outputs[-1]], name=f"{base}/group_{g}/MatMul")
        )
    total = outputs[0]
    for g, part in enumerate(outputs[1:], 1):
        total_name = product.output[0] if g == len(outputs) - 1 else f"{base}/group_sum_{g}:0"
        nodes.append(helper.make_node("Add", [total, part], [total_name], name=f"{base}/group_sum_{g}"))
        total = total_name
    return nodes


def _permute(model: onnx.ModelProto, index: GraphIndex, name: str, reorder) -> None:
    old = index.initializers[name]
    new = numpy_helper.from_array(reorder(numpy_helper.to_array(old)).astype(np.float32), name)
    model.graph.initializer.remove(old)
    model.graph.initializer.append(new)
    index.initializers[name] = new


def rewritten_copy(
    source: Path, splits: dict[str, list[list[int]]], smoothing: dict[str, dict], directory: Path
) -> Path:
    """``source`` with a table's channel splits and then its SmoothQuant scales folded in, written
    into ``directory`` (the same graph in float, what the QDQ build starts from); ``source`` itself
    when there is nothing to fold."""
    if not splits and not smoothing:
        return source
    model = onnx.load(str(source))
    apply_splits(model, splits)
    apply_scales(model, {k: np.asarray(v["scales"], np.float32) for k, v in smoothing.items()})
    output = directory / f"{source.stem}.rewritten.onnx"
    onnx.save(model, str(output))
    return output


def table_rewrite(source: Path, table: RangeTable, graph: str, directory: Path) -> Path:
    """``source`` rewritten as ``table`` says for its ``graph`` entry: the float graph its QDQ
    build starts from."""
    return rewritten_copy(source, table.splits.get(graph, {}), table.smoothing.get(graph, {}), directory)
