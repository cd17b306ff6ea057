"""SmoothQuant-style scaling folded into the LayerNorm before a MatMul, for static 8-bit flavours.

A LayerNorm's output channels differ in range; one 8-bit scale per tensor then serves the quiet
channels badly (tiny.en's encoder has LayerNorm outputs spanning [−55, 103] ahead of its last FFN).
Dividing channel j by s_j (folded into the LayerNorm's gamma and beta) and multiplying row j of
every weight that reads it by s_j (folded into the weights) changes no number in float, and moves
range from activations into weights: s_j = max|x_j|^α / max|W_j|^(1−α).

It only applies where a LayerNorm feeds MatMuls with constant weights used nowhere else (attention
input projections, the first FFN layer, the cross-attention K/V from the encoder's last LayerNorm).
α is chosen per LayerNorm on calibration inputs only (``choose_alpha``), and no scaling is one of
the choices, so a LayerNorm whose readers lose by it is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from amanuensis.export.graph_index import GraphIndex
from amanuensis.export.io_names import Feed

ALPHAS = (0.3, 0.5, 0.7, 0.85, 1.0)  # migration strengths tried; SmoothQuant's paper uses 0.5 for most models
SMALLEST = 1e-5  # keeps a dead channel's scale finite
SAMPLE_ROWS = 4096  # activation rows per LayerNorm the choice of α is judged on

Scales = dict[str, np.ndarray]  # LayerNorm output → one scale per channel


def smoothable(model: onnx.ModelProto) -> dict[str, str]:
    """MatMul name → the LayerNorm output it reads, where every reader of that output is a MatMul
    with a constant weight no other node uses (so one per-channel scale folds into all of them)."""
    index = GraphIndex(model.graph)
    found = {}
    for norm in (n for n in model.graph.node if n.op_type == "LayerNormalization"):
        readers = index.users(norm.output[0])
        if readers and all(
            r.op_type == "MatMul" and r.input[1] in index.initializers and len(index.users(r.input[1])) == 1
            for r in readers
        ):
            found |= {r.name: norm.output[0] for r in readers}
    return found


def _reader_weights(model: onnx.ModelProto, norm_output: str) -> list[np.ndarray]:
    index = GraphIndex(model.graph)
    return [numpy_helper.to_array(index.initializers[r.input[1]]) for r in index.users(norm_output)]


def scales_for(channel_max: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """SmoothQuant's per-channel scales for one LayerNorm output and the weights reading it."""
    weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
    scales = np.maximum(channel_max, SMALLEST) ** alpha / np.maximum(weight_max, SMALLEST) ** (1 - alpha)
    return scales.astype(np.float32)


def apply_scales(model: onnx.ModelProto, scales: Scales) -> None:
    """Fold each LayerNorm output's scales into its gamma/beta and its readers' weights, in place."""
    index = GraphIndex(model.graph)
    for norm_output, s in scales.items():
        s = np.asarray(s, np.float32)
        norm = index.producer[norm_output]
        for name in norm.input[1:3]:  # gamma, beta
            _replace(model, index, name, numpy_helper.to_array(index.initializers[name]) / s)
        for reader in index.users(norm_output):
            _replace(
                model, index, reader.input[1], numpy_helper.to_array(index.initializers[reader.input[1]]) * s[:, None]
            )


@dataclass
class ChannelStats:
    """What calibration saw of one activation tensor, per channel (its last axis)."""

    low: np.ndarray  # lowest value per channel over every run
    high: np.ndarray  # highest value per channel over every run
    rows: np.ndarray  # about SAMPLE_ROWS rows drawn evenly over the runs (to judge α on)

    @property
    def peak(self) -> np.ndarray:
        return np.maximum(np.abs(self.low), np.abs(self.high))


def channel_stats(
    model: onnx.ModelProto, outputs: set[str], feeds: Iterable[Feed], runs: int
) -> dict[str, ChannelStats]:
    """Per tensor named in ``outputs``, its per-channel range and sample rows over all ``runs`` feeds."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in sorted(outputs))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = sorted(outputs)
    every_run = max(1, runs // SAMPLE_ROWS)
    rows_per_run = -(-SAMPLE_ROWS * every_run // max(runs, 1))
    low: Scales = {}
    high: Scales = {}
    rows: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i, feed in enumerate(feeds):
        for name, value in zip(names, session.run(names, feed), strict=True):
            flat = value.reshape(-1, value.shape[-1])
            low[name] = np.minimum(low.get(name, flat[0]), flat.min(axis=0))
            high[name] = np.maximum(high.get(name, flat[0]), flat.max(axis=0))
            if i % every_run == 0:
                rows[name].append(flat[:: max(1, len(flat) // rows_per_run)])
    return {name: ChannelStats(low[name], high[name], np.concatenate(rows[name])) for name in low}


def smoothing_for(source: Path, feeds: Iterable[Feed], runs: int, bits: int, per_channel: bool) -> dict[str, dict]:
    """LayerNorm output → {"alpha", "scales"} for every LayerNorm of the graph ``source`` that
    gains from scaling on these calibration inputs (the table's ``smoothing`` entry for it)."""
    model = onnx.load(str(source))
    stats = channel_stats(model, set(smoothable(model).values()), feeds, runs)
    smoothing = {}
    for norm_output, seen in sorted(stats.items()):
        weights = _reader_weights(model, norm_output)
        alpha = choose_alpha(seen, weights, bits, per_channel)
        if alpha is not None:
            scales = scales_for(seen.peak, weights, alpha)
            smoothing[norm_output] = {"alpha": alpha, "scales": [float(v) for v in scales]}
    return smoothing


def _fake_quant(x: np.ndarray, low: np.ndarray | float, high: np.ndarray | float, levels: int) -> np.ndarray:
    scale = np.maximum((np.asarray(high) - np.asarray(low)) / (levels - 1), 1e-12)
    zero = np.round(-np.asarray(low) / scale)
    return (np.clip(np.round(x / scale) + zero, 0, levels - 1) - zero) * scale


def product_sqnr(
    seen: ChannelStats, weights: list[np.ndarray], bits: int, per_channel: bool, scales: np.ndarray | None = None
) -> float:
    """SQNR (dB) of x @ W over the sample rows for every reader, x (divided by ``scales``) quantized
    with one asymmetric ``bits`` scale over its whole calibrated range, W (times ``scales``) as int8
    symmetric, one scale per tensor or per output channel: the error a static build adds there."""
    s = np.ones_like(seen.low) if scales is None else scales
    x = seen.rows / s
    xq = _fake_quant(x, min(0.0, float(np.min(seen.low / s))), max(0.0, float(np.max(seen.high / s))), 2**bits)
    signal = noise = 0.0
    for w in weights:
        w = w * s[:, None]
        peak = np.abs(w).max(axis=0 if per_channel else None)
        wq = _fake_quant(w, -peak, peak, 255)
        exact = (x @ w).astype(np.float64)
        signal += float(np.sum(exact**2))
        noise += float(np.sum((xq @ wq - exact) ** 2))
    return 10 * np.log10(signal / max(noise, 1e-30))


def choose_alpha(seen: ChannelStats, weights: list[np.ndarray], bits: int, per_channel: bool) -> float | None:
    """The α whose scaling measured the best product SQNR on the calibration rows; None when no
    scaling beats leaving the LayerNorm alone."""
    best_alpha, best = None, product_sqnr(seen, weights, bits, per_channel)
    for alpha in ALPHAS:
        sqnr = product_sqnr(seen, weights, bits, per_channel, scales_for(seen.peak, weights, alpha))
        if sqnr > best:
            best_alpha, best = alpha, sqnr
    return best_alpha


def _replace(model: onnx.ModelProto, index: GraphIndex, name: str, values: np.ndarray) -> None:
    old = index.initializers[name]
    model.graph.initializer.remove(old)
    new = numpy_helper.from_array(values.astype(np.float32), name)
    model.graph.initializer.append(new)
    index.initializers[name] = new
