"""SmoothQuant-style scaling folded into the LayerNorm before a MatMul (measured, not shipped).

A LayerNorm's output channels differ in range; one 8-bit scale per tensor then serves the quiet
channels badly. Dividing channel j by s_j (folded into the LayerNorm's gamma and beta) and
multiplying row j of every weight that reads it by s_j (folded into the weights) changes no number
in float, and moves range from activations into weights:
s_j = max|x_j|^α / max|W_j|^(1−α), with α chosen on calibration inputs.

It only applies where a LayerNorm feeds MatMuls with constant weights (attention input
projections, the first FFN layer, the cross-attention K/V from the encoder's last LayerNorm).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from amanuensis.export.graph_index import GraphIndex

ALPHAS = (0.3, 0.5, 0.7)  # migration strengths tried; SmoothQuant's paper uses 0.5 for most models
SMALLEST = 1e-5  # keeps a dead channel's scale finite


def smoothable(model: onnx.ModelProto) -> dict[str, str]:
    """MatMul name → the LayerNorm output it reads, where every reader of that output is a MatMul
    with a constant weight (so one per-channel scale can be folded into all of them)."""
    index = GraphIndex(model.graph)
    found = {}
    for norm in (n for n in model.graph.node if n.op_type == "LayerNormalization"):
        readers = index.users(norm.output[0])
        if readers and all(r.op_type == "MatMul" and r.input[1] in index.initializers for r in readers):
            found |= {r.name: norm.output[0] for r in readers}
    return found


def smooth(model: onnx.ModelProto, norm_output: str, channel_max: np.ndarray, alpha: float) -> np.ndarray:
    """Fold the scales for one LayerNorm output into its gamma/beta and its readers' weights, in
    place; returns the scales."""
    index = GraphIndex(model.graph)
    norm = index.producer[norm_output]
    readers = index.users(norm_output)
    weights = [numpy_helper.to_array(index.initializers[r.input[1]]) for r in readers]
    weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    scales = np.maximum(channel_max, SMALLEST) ** alpha / np.maximum(weight_max, SMALLEST) ** (1 - alpha)
    scales = scales.astype(np.float32)
    for name in norm.input[1:3]:  # gamma, beta
        _replace(model, index, name, numpy_helper.to_array(index.initializers[name]) / scales)
    for reader, weight in zip(readers, weights, strict=True):
        _replace(model, index, reader.input[1], weight * scales[:, None])
    return scales


def _replace(model: onnx.ModelProto, index: GraphIndex, name: str, values: np.ndarray) -> None:
    old = index.initializers[name]
    model.graph.initializer.remove(old)
    new = numpy_helper.from_array(values.astype(np.float32), name)
    model.graph.initializer.append(new)
    index.initializers[name] = new
