"""A small ONNX graph builder and the transformer pieces Whisper is made of.

Graphs are assembled node by node from numpy weights (no torch, no tracing), so every
shape is a literal and the result is the static form NPU compilers accept.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is native from 17; QNN and OpenVINO accept it
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm default, as Whisper uses

_ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64}


class GraphBuilder:
    """Accumulates nodes, initializers and I/O with unique, readable names."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._counts: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}

    def _unique(self, base: str) -> str:
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def input(self, name: str, dtype: type, shape: list[int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, _ONNX_TYPES[np.dtype(dtype)], shape))
        return name

    def output(self, value: str, name: str, dtype: type, shape: list[int]) -> None:
        self.nodes.append(helper.make_node("Identity", [value], [name], name=f"{name}/identity"))
        self.outputs.append(helper.make_tensor_value_info(name, _ONNX_TYPES[np.dtype(dtype)], shape))

    def weight(self, name: str, array: np.ndarray) -> str:
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def const(self, values: list[int] | list[float] | float, dtype: type = np.int64) -> str:
        array = np.array(values, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight("const", array)
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], scope: str, n_outputs: int = 1, **attrs) -> str | list[str]:
        node_name = self._unique(f"{scope}/{op_type}")
        outputs = [f"{node_name}:{i}" for i in range(n_outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=node_name, **attrs))
        return outputs[0] if n_outputs == 1 else outputs

    def model(self) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="amanuensis")
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model


class Weights:
    """CTranslate2-named weights under one prefix, e.g. ``decoder/layer_0/self_attention``."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str) -> None:
        self._weights = weights
        self.prefix = prefix

    def __getitem__(self, key: str) -> np.ndarray:
        return self._weights[f"{self.prefix}/{key}"]

    def sub(self, key: str) -> Weights:
        return Weights(self._weights, f"{self.prefix}/{key}")


def layer_norm(g: GraphBuilder, x: str, w: Weights) -> str:
    gamma = g.weight(f"{w.prefix}/gamma", w["gamma"])
    beta = g.weight(f"{w.prefix}/beta", w["beta"])
    return g.op("LayerNormalization", [x, gamma, beta], w.prefix, axis=-1, epsilon=LAYER_NORM_EPS)


def linear(g: GraphBuilder, x: str, w: Weights, rows: slice | None = None) -> str:
    """``x @ W.T + b``; ``rows`` picks part of a fused CTranslate2 projection (e.g. Q of QKV)."""
    weight, bias = w["weight"], w["bias"]
    suffix = ""
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
        suffix = f"[{rows.start}:{rows.stop}]"
    w_name = g.weight(f"{w.prefix}/weight{suffix}", weight.T)
    b_name = g.weight(f"{w.prefix}/bias{suffix}", bias)
    product = g.op("MatMul", [x, w_name], w.prefix)
    return g.op("Add", [product, b_name], w.prefix)


def gelu(g: GraphBuilder, x: str, scope: str) -> str:
    """Exact (erf) GELU, as torch.nn.functional.gelu; onnxruntime fuses the pattern."""
    scaled = g.op("Div", [x, g.const(math.sqrt(2.0), np.float32)], scope)
    erf = g.op("Erf", [scaled], scope)
    one_plus = g.op("Add", [erf, g.const(1.0, np.float32)], scope)
    half_x = g.op("Mul", [x, g.const(0.5, np.float32)], scope)
    return g.op("Mul", [half_x, one_plus], scope)


def mlp_block(g: GraphBuilder, x: str, w: Weights) -> str:
    h = layer_norm(g, x, w.sub("layer_norm"))
    h = gelu(g, linear(g, h, w.sub("linear_0")), w.prefix)
    h = linear(g, h, w.sub("linear_1"))
    return g.op("Add", [x, h], w.prefix)


def split_heads(g: GraphBuilder, x: str, shape: tuple[int, int, int, int], key_layout: bool, scope: str) -> str:
    """[B, T, D] → [B, H, T, Dh] (or [B, H, Dh, T] for keys, ready for ``q @ k``)."""
    b, t, h, dh = shape
    x = g.op("Reshape", [x, g.const([b, t, h, dh])], scope)
    perm = [0, 2, 3, 1] if key_layout else [0, 2, 1, 3]
    return g.op("Transpose", [x], scope, perm=perm)


def merge_heads(g: GraphBuilder, x: str, shape: tuple[int, int, int], scope: str) -> str:
    """[B, H, T, Dh] → [B, T, D]."""
    b, t, d = shape
    x = g.op("Transpose", [x], scope, perm=[0, 2, 1, 3])
    return g.op("Reshape", [x, g.const([b, t, d])], scope)


def attend(g: GraphBuilder, q: str, k: str, v: str, mask: str | None, scope: str) -> str:
    """softmax(q·k / √Dh + mask) · v with q [B,H,Tq,Dh], k [B,H,Dh,Tk], v [B,H,Tk,Dh].

    q is scaled before the product (Whisper scales q and k by Dh^-¼ each: the same).
    """
    scores = g.op("MatMul", [q, k], scope)
    if mask is not None:
        scores = g.op("Add", [scores, mask], scope)
    weights = g.op("Softmax", [scores], scope, axis=-1)
    return g.op("MatMul", [weights, v], scope)


def scale_query(g: GraphBuilder, q: str, head_dim: int, scope: str) -> str:
    return g.op("Mul", [q, g.const(1.0 / math.sqrt(head_dim), np.float32)], scope)
