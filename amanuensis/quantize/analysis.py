"""Measurements of a QDQ graph against its FP32 source: what is INT8, how many MACs, how much error.

Per-tensor errors come from onnxruntime's ``qdq_loss_debug`` run on validation inputs (never
calibration ones): the local SQNR of each quantize/dequantize pair and the SQNR of each tensor
against the FP32 graph (accumulated error). Node sensitivity quantizes one node at a time.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, shape_inference
from onnxruntime.quantization import qdq_loss_debug

from amanuensis.quantize.calibration import FeedReader
from amanuensis.quantize.dynamic import build_dynamic, dynamic_integer_nodes
from amanuensis.quantize.qdq import build_qdq
from amanuensis.quantize.recipe import COMPUTE_OP_TYPES, QuantRecipe, Ranges
from amanuensis.quantize.targets import source_node_name
from amanuensis.runtime import Feed


@dataclass(frozen=True)
class ComputeNode:
    name: str
    op_type: str
    inputs: tuple[str, ...]  # activation and weight inputs (bias excluded)
    macs: int  # multiply-accumulates per run of the graph


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model)
    shapes = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        shapes[info.name] = [d.dim_value for d in info.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def compute_nodes(model: onnx.ModelProto) -> list[ComputeNode]:
    """MatMul/Conv/Gemm nodes of a float graph with their MAC counts (static shapes make this exact)."""
    shapes = _shapes(model)
    nodes = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OP_TYPES:
            continue
        out = shapes[node.output[0]]
        if node.op_type == "MatMul":
            macs = math.prod(out) * shapes[node.input[0]][-1]
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            macs = math.prod(out) * (a[0] if any(a.name == "transA" and a.i for a in node.attribute) else a[1])
        else:  # Conv: every output element sums over in-channels/group × kernel
            w = shapes[node.input[1]]
            macs = math.prod(out) * math.prod(w[1:])
        nodes.append(ComputeNode(node.name, node.op_type, tuple(node.input[:2]), macs))
    return nodes


def int8_node_names(model: onnx.ModelProto) -> set[str]:
    """Exported compute nodes that run on 8-bit inputs: in a QDQ graph, those whose activation and
    weight inputs both come out of DequantizeLinear; in a dynamic one, the integer kernels."""
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    qdq = {
        source_node_name(n.name)
        for n in model.graph.node
        if n.op_type in COMPUTE_OP_TYPES and all(i in dq_outputs for i in n.input[:2])
    }
    return qdq | dynamic_integer_nodes(model)


def int8_mac_share(nodes: list[ComputeNode], int8_names: set[str]) -> float:
    total = sum(n.macs for n in nodes)
    return sum(n.macs for n in nodes if n.name in int8_names) / total if total else 0.0


@dataclass(frozen=True)
class QuantParams:
    tensor: str
    scale: float
    zero_point: int
    dtype: str


def quant_params(qdq_model: onnx.ModelProto) -> list[QuantParams]:
    """Scale and zero point of every per-tensor QuantizeLinear (activations)."""
    inits = {i.name: numpy_helper.to_array(i) for i in qdq_model.graph.initializer}
    params = []
    for node in qdq_model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        scale, zero = inits.get(node.input[1]), inits.get(node.input[2]) if len(node.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        zp = zero if zero is not None else np.zeros((), np.uint8)
        params.append(QuantParams(node.input[0], float(scale), int(zp), str(zp.dtype)))
    return params


@dataclass(frozen=True)
class TensorError:
    tensor: str
    qdq_sqnr_db: float  # this QDQ pair alone: its float input vs what it dequantizes to
    model_sqnr_db: float | None  # this tensor in the INT8 graph vs the FP32 graph (accumulated)
    clip_rate: float  # share of values outside the calibrated range (saturated)


def _sqnr(reference: list[np.ndarray], test: list[np.ndarray]) -> float:
    return qdq_loss_debug.compute_signal_to_quantization_noice_ratio(reference, test)


def activation_errors(float_model: Path, qdq_model: Path, feeds: Iterable[Feed], ranges: Ranges) -> list[TensorError]:
    """Per-activation quantization error on the given (validation) inputs."""
    feeds = list(feeds)
    with tempfile.TemporaryDirectory(prefix="amanuensis-qdq-debug-") as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        qdq_loss_debug.modify_model_output_intermediate_tensors(str(float_model), str(float_aug))
        qdq_loss_debug.modify_model_output_intermediate_tensors(str(qdq_model), str(qdq_aug))
        float_acts = qdq_loss_debug.collect_activations(str(float_aug), FeedReader(feeds))
        qdq_acts = qdq_loss_debug.collect_activations(str(qdq_aug), FeedReader(feeds))
    matched = qdq_loss_debug.create_activation_matching(qdq_acts, float_acts)
    errors = []
    for name, match in matched.items():
        pre = match["pre_qdq"]
        lo, hi = ranges.get(name, (-np.inf, np.inf))
        outside = sum(int(np.count_nonzero((x < lo) | (x > hi))) for x in pre)
        total = sum(x.size for x in pre)
        model_err = _sqnr(match["float"], match["post_qdq"]) if match.get("float") else None
        errors.append(TensorError(name, _sqnr(pre, match["post_qdq"]), model_err, outside / max(total, 1)))
    return errors


@dataclass(frozen=True)
class NodeSensitivity:
    node: str
    op_type: str
    macs: int
    sqnr_db: float  # graph outputs vs FP32 with only this node INT8; lower = more damaging


def _run_all(model: Path, feeds: list[Feed]) -> list[np.ndarray]:
    """Every output of every run, flattened, in a fixed order (the comparison signal)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    outputs = []
    for feed in feeds:
        outputs.extend(o.ravel() for o in session.run(None, feed))
    return outputs


def isolated_sensitivity(
    float_model: Path,
    recipe: QuantRecipe,
    ranges: Ranges,
    nodes: list[ComputeNode],
    feeds: list[Feed],
    on_node: Callable[[ComputeNode], None] | None = None,
    technique: str | None = None,
) -> list[NodeSensitivity]:
    """Quantize one compute node at a time and measure the graph outputs' SQNR against FP32.

    This is the damage a node does on its own, through everything downstream of it (a LayerNorm
    after an outlier channel, the 1500-key softmax), which local QDQ error alone does not show.
    Worst (lowest SQNR) first. ``technique`` (dynamic scheme): quantize each node with that finer
    integer form (``per_row.TECHNIQUES``) instead of one run-time scale per tensor.
    """
    reference = _run_all(float_model, feeds)
    ranked = []
    with tempfile.TemporaryDirectory(prefix="amanuensis-sensitivity-") as tmp:
        single = Path(tmp) / "single.onnx"
        for node in nodes:
            if recipe.scheme == "dynamic":
                chosen = {node.name: technique} if technique and node.op_type == "MatMul" else None
                build_dynamic(float_model, single, recipe, only=[node.name], techniques=chosen)
            else:
                build_qdq(float_model, single, recipe, ranges, only=[node.name])
            ranked.append(
                NodeSensitivity(node.name, node.op_type, node.macs, _sqnr(reference, _run_all(single, feeds)))
            )
            if on_node:
                on_node(node)
    return sorted(ranked, key=lambda s: s.sqnr_db)
