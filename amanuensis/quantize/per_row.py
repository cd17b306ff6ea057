"""Finer integer forms for the MatMuls one 8-bit scale per tensor is too coarse for (CPU flavour).

``quantize_dynamic`` gives a MatMul's activation one run-time scale for the whole tensor. Where
the mixed-precision search finds that too coarse, it moves the node up this ladder before it would
ever keep it float:

- ``per_token``: each row of the activation (one frame or token) gets its own scale, as
  faster-whisper's int8 does; a loud frame no longer flattens the quiet ones. Symmetric int8
  levels stored as uint8 around 128, so onnxruntime's fast u8×s8 integer kernel runs it.
- ``a16``: 16-bit activations as two 8-bit limbs, ``x ≈ s·(hi + lo/254)``, each limb multiplied
  in an integer kernel with the same 8-bit weights and the two int32 sums added in float. Twice
  the integer MACs, ~1/32 000 of the row's peak as resolution: what attention weights over 1500
  frames (mostly far below 1/255 of their peak) need.

Weights are int8 per output column; an activation right operand (attention's V) is quantized per
column at run time. Only float MatMuls are rewritten, so this runs after ``quantize_dynamic`` on
the nodes it was told to leave alone.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from amanuensis.errors import OptionsError
from amanuensis.export.graph_index import GraphIndex, drop_unread_initializers, replace_nodes

INTEGER_SUFFIX = "_quant"  # an integer product is named after the node it replaces with this suffix
TECHNIQUES = ("per_token", "a16")  # in the order the mixed-precision search tries them
RESIDUAL_LIMB = "/residual"  # suffix of the second integer product of an a16 node
SYMMETRIC_LEVELS = 127.0  # int8 levels each side of zero
UNSIGNED_LEVELS = 255.0  # uint8 levels above zero, for rows known to lie in [0, 1]
LOW_LIMB_LEVELS = 254.0  # the residual limb spans one level of the high limb in this many steps
SMALLEST_SCALE = 1e-12  # keeps an all-zero row from dividing by zero
WIDE_GAIN_DB = 6.02  # a16 costs twice the MACs: chosen only when it buys more than one bit over per_token


def choose_technique(sqnr_db: dict[str, float]) -> str:
    """The finer form for one node from each technique's output SQNR when it alone is quantized
    so: per_token unless a16 is more than one bit better."""
    return "a16" if sqnr_db["a16"] - sqnr_db["per_token"] > WIDE_GAIN_DB else "per_token"


class _Builder:
    """Adds constants and nodes under one scope name."""

    def __init__(self, graph: onnx.GraphProto, scope: str, opset: int) -> None:
        self.graph, self.scope, self.opset, self.nodes = graph, scope, opset, []

    def const(self, suffix: str, value: np.ndarray) -> str:
        name = f"{self.scope}/{suffix}"
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], suffix: str, **attributes) -> str:
        out = f"{self.scope}/{suffix}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attributes))
        return out

    def reduce_max(self, data: str, axis: int, suffix: str) -> str:
        if self.opset >= 18:
            axes = self.const(f"{suffix}_axes", np.array([axis], np.int64))
            return self.op("ReduceMax", [data, axes], suffix, keepdims=1)
        return self.op("ReduceMax", [data], suffix, keepdims=1, axes=[axis])

    def symmetric_scale(self, data: str, axis: int, suffix: str) -> str:
        """max |data| over ``axis`` / 127, never zero."""
        peak = self.reduce_max(self.op("Abs", [data], f"{suffix}_abs"), axis, f"{suffix}_peak")
        levels = self.const(f"{suffix}_levels", np.array(1 / SYMMETRIC_LEVELS, np.float32))
        floor = self.const(f"{suffix}_floor", np.array(SMALLEST_SCALE, np.float32))
        return self.op("Max", [self.op("Mul", [peak, levels], f"{suffix}_raw"), floor], suffix)

    def to_levels(self, data: str, zero_point: np.ndarray, suffix: str) -> str:
        """Round and saturate values already divided by their scale (QuantizeLinear with scale 1)."""
        one = self.const(f"{suffix}_unit", np.array(1.0, np.float32))
        return self.op("QuantizeLinear", [data, one, self.const(f"{suffix}_zp", zero_point)], suffix)

    def integer_product(self, a: str, a_zero: str, b: str, b_zero: str, name: str) -> str:
        """MatMulInteger named ``name`` (how the MAC count finds it), its int32 sum cast to float."""
        self.nodes.append(helper.make_node("MatMulInteger", [a, b, a_zero, b_zero], [name], name=name))
        return self.op("Cast", [name], f"{name.rsplit('/', 1)[-1]}_float", to=TensorProto.FLOAT)


def symmetric_int8(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """int8 levels with one symmetric scale per index along ``axis`` (max |x| / 127 over the other
    axes; 1 for an all-zero slice), and the float32 scales."""
    others = tuple(i for i in range(values.ndim) if i != axis)
    scales = (np.abs(values).max(axis=others) / SYMMETRIC_LEVELS).astype(np.float32)
    scales[scales == 0] = 1.0
    shape = [1] * values.ndim
    shape[axis] = -1
    levels = np.clip(np.round(values / scales.reshape(shape)), -127, 127).astype(np.int8)
    return levels, scales


def _weights(builder: _Builder, weights: np.ndarray) -> tuple[str, str, str]:
    """int8 weights with one symmetric scale per output column: (values, zero point, scales)."""
    values, scales = symmetric_int8(weights, axis=1)
    return (
        builder.const("weight_int8", values),
        builder.const("weight_zp", np.array(0, np.int8)),
        builder.const("weight_scales", scales),
    )


def _activation_columns(builder: _Builder, b: str) -> tuple[str, str, str]:
    """A run-time right operand (attention's V) as int8 with one scale per column."""
    scales = builder.symmetric_scale(b, -2, "b_scales")
    levels = builder.to_levels(builder.op("Div", [b, scales], "b_scaled"), np.array(0, np.int8), "b_int8")
    return levels, builder.const("b_zp_value", np.array(0, np.int8)), scales


Limb = tuple[str, str, float]  # uint8 levels, their zero point, the weight of their product in the sum


def _symmetric_limbs(b: _Builder, a: str, wide: bool) -> tuple[list[Limb], str]:
    """Any activation: one symmetric scale per row (max |x| / 127), levels stored as uint8 around
    128; with ``wide``, the rounding residual as a second limb of 254 steps per level."""
    a_scales = b.symmetric_scale(a, -1, "a_scales")
    scaled = b.op("Div", [a, a_scales], "a_scaled")
    middle = np.array(128, np.uint8)
    a_zero = b.const("a_zp_value", middle)
    high = b.to_levels(scaled, middle, "a_uint8")
    limbs = [(high, a_zero, 1.0)]
    if wide:
        rounded = b.op("DequantizeLinear", [high, b.const("a_unit", np.array(1.0, np.float32)), a_zero], "a_rounded")
        residual = b.op("Sub", [scaled, rounded], "a_residual")  # within ±0.5 of a level
        low_levels = b.const("low_levels", np.array(LOW_LIMB_LEVELS, np.float32))
        low = b.to_levels(b.op("Mul", [residual, low_levels], "a_residual_steps"), middle, "a_low_uint8")
        limbs.append((low, a_zero, 1 / LOW_LIMB_LEVELS))
    return limbs, a_scales


def _unit_row_limbs(b: _Builder, a: str, wide: bool) -> tuple[list[Limb], str]:
    """Non-negative rows that peak at exactly 1: a fixed scale of 1/255 is already per row, so no
    scale is measured; with ``wide``, the residual (within ±1/510) as a second limb."""
    step = 1 / UNSIGNED_LEVELS
    scale, zero = b.const("a_step", np.array(step, np.float32)), b.const("a_zp_value", np.array(0, np.uint8))
    high = b.op("QuantizeLinear", [a, scale, zero], "a_uint8")
    limbs = [(high, zero, 1.0)]
    if wide:
        residual = b.op("Sub", [a, b.op("DequantizeLinear", [high, scale, zero], "a_rounded")], "a_residual")
        low_scale = b.const("low_step", np.array(step / LOW_LIMB_LEVELS, np.float32))
        middle = b.const("low_zp_value", np.array(128, np.uint8))
        limbs.append(
            (b.op("QuantizeLinear", [residual, low_scale, middle], "a_low_uint8"), middle, 1 / LOW_LIMB_LEVELS)
        )
    return limbs, scale


def unit_rows(index: GraphIndex, a: str) -> bool:
    """Whether ``a`` is exp(s − max s) over its last axis (unnormalized.unnormalized_attention's output)."""
    exp = index.producer.get(a)
    shift = index.producer.get(exp.input[0]) if exp is not None and exp.op_type == "Exp" else None
    peak = index.producer.get(shift.input[1]) if shift is not None and shift.op_type == "Sub" else None
    return peak is not None and peak.op_type == "ReduceMax" and peak.input[0] == shift.input[0]


def rewrite_matmul(model: onnx.ModelProto, node: onnx.NodeProto, technique: str, index: GraphIndex) -> list:
    """The integer replacement of one float MatMul (nodes in order); adds its constants to the graph."""
    if technique not in TECHNIQUES:
        raise OptionsError(f"unknown integer technique {technique!r}; choose from {', '.join(TECHNIQUES)}")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    b = _Builder(model.graph, node.name, opset)
    a, right = node.input[0], node.input[1]
    weight = index.initializers.get(right)
    if weight is not None:
        b_int, b_zero, b_scales = _weights(b, numpy_helper.to_array(weight))
    else:
        b_int, b_zero, b_scales = _activation_columns(b, right)

    if unit_rows(index, a):  # attention weights exp(s − max s): each row's peak is exactly 1
        limbs, a_scales = _unit_row_limbs(b, a, technique == "a16")
    else:
        limbs, a_scales = _symmetric_limbs(b, a, technique == "a16")
    names = [f"{node.name}{INTEGER_SUFFIX}", f"{node.name}{RESIDUAL_LIMB}{INTEGER_SUFFIX}"]
    total = ""
    for i, ((levels, zero_point, share), name) in enumerate(zip(limbs, names, strict=False)):
        product = b.integer_product(levels, zero_point, b_int, b_zero, name)
        if share != 1.0:
            product = b.op("Mul", [product, b.const(f"limb{i}_share", np.array(share, np.float32))], f"limb{i}")
        total = b.op("Add", [total, product], "limbs") if total else product
    rescaled = b.op("Mul", [total, a_scales], "a_rescaled")
    b.nodes.append(helper.make_node("Mul", [rescaled, b_scales], [node.output[0]], name=f"{node.name}/b_rescaled"))
    return b.nodes


def apply_techniques(model: onnx.ModelProto, techniques: dict[str, str]) -> int:
    """Rewrite every float MatMul named in ``techniques`` (or a ``/chunkN`` copy of one), in place;
    returns how many were."""
    index = GraphIndex(model.graph)
    replaced: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        technique = techniques.get(node.name.split("/chunk")[0])
        if technique is not None and node.op_type == "MatMul":
            replaced[node.name] = rewrite_matmul(model, node, technique, index)
    replace_nodes(model.graph, replaced)
    drop_unread_initializers(model.graph)  # the float weights replaced
    return len(replaced)
