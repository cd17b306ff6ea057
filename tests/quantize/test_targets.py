"""QDQ flavours per target: the Vitis AI one has power-of-two scales and still tracks FP32; the QNN one
stores weights per channel where the HTP takes them."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from amanuensis import export
from amanuensis.engine import WhisperModel
from amanuensis.export import GraphKind
from amanuensis.quantize import load_table
from amanuensis.quantize.qdq import build_qdq
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.runtime import Encoder, RuntimeOptions

from ..conftest import sqnr_db

MIN_VITISAI_SQNR_DB = 12.0  # cross K/V vs FP32 on the sample, shipped vitisai table: 14.1–18.4 dB measured
# Power-of-two scales chosen by least error (minmse) against min/max scales rounded up, same nodes
# float: at least this much better for every cross K/V (6.0–7.1 dB measured, 2026-11-24).
MIN_MINMSE_GAIN_DB = 3.0
# qnn flavour, cross K/V vs FP32 on the sample, onnxruntime's CPU EP: per-channel weights against one
# uint8 scale per weight (3.1–4.9 dB measured with the shipped table, 2026-12-01)
MIN_PER_CHANNEL_GAIN_DB = 2.0


def test_vitisai_flavour_has_power_of_two_scales(tiny: WhisperModel, mel_window: np.ndarray, tmp_path) -> None:
    table = load_table(tiny.checkpoint, target="vitisai")
    assert table.recipe.target == "vitisai" and table.recipe.method == "minmse"
    path = tmp_path / "encoder.onnx"
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    build_qdq(source, path, table.recipe, table.ranges["encoder"], table.excluded_nodes["encoder"])
    model = onnx.load(str(path))
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    scales = np.concatenate([values[n.input[1]].ravel() for n in qdq])
    assert len(qdq) > 100 and np.array_equal(np.log2(scales), np.round(np.log2(scales)))
    # Weights were quantized anew for their rounded scales: within half a step of the float weights.
    for node in qdq:
        weight_name = node.input[0].removesuffix("_quantized")
        if node.op_type == "DequantizeLinear" and weight_name in _float_weights(source):
            dequantized = values[node.input[0]].astype(np.float64) * values[node.input[1]]
            step = float(values[node.input[1]])
            assert np.max(np.abs(dequantized - _float_weights(source)[weight_name])) <= step / 2 + 1e-7
    # Against the same flavour with min/max scales rounded up (the static OpenVINO table's min/max
    # ranges come from the same calibration clips), the same nodes kept float.
    rounded_up = tmp_path / "encoder_rounded_up.onnx"
    cpu_ranges = load_table(tiny.checkpoint, target="openvino").ranges["encoder"]
    build_qdq(source, rounded_up, QuantRecipe(target="vitisai"), cpu_ranges, table.excluded_nodes["encoder"])
    fp32 = tiny.runtime.encoder(mel_window)
    ours = Encoder(path, tiny.checkpoint.dims, RuntimeOptions(threads=2))(mel_window)
    theirs = Encoder(rounded_up, tiny.checkpoint.dims, RuntimeOptions(threads=2))(mel_window)
    for name, reference in fp32.items():
        sqnr, sqnr_rounded_up = sqnr_db(reference, ours[name]), sqnr_db(reference, theirs[name])
        print(f"{name}: {sqnr:.1f} dB (min/max rounded up: {sqnr_rounded_up:.1f} dB)")
        assert sqnr > MIN_VITISAI_SQNR_DB, f"{name}: {sqnr:.1f} dB"
        assert sqnr > sqnr_rounded_up + MIN_MINMSE_GAIN_DB, f"{name}: {sqnr:.1f} vs {sqnr_rounded_up:.1f} dB"


_WEIGHTS: dict[str, dict[str, np.ndarray]] = {}


def _float_weights(path) -> dict[str, np.ndarray]:
    if str(path) not in _WEIGHTS:
        model = onnx.load(str(path))
        _WEIGHTS[str(path)] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.dims}
    return _WEIGHTS[str(path)]


def test_qnn_weights_per_channel_where_the_htp_takes_them(tiny: WhisperModel, mel_window: np.ndarray, tmp_path) -> None:
    """With --per-channel (the qnn default) every Conv and every Gemm but the FFN's second one
    (it reads GELU outputs) gets int8 weights with one scale per output channel and a bias whose
    scale is input scale × that channel's weight scale; the encoder tracks FP32 closer for it."""
    table = load_table(tiny.checkpoint, target="qnn")
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    paths = {}
    for per_channel in (False, True):
        paths[per_channel] = tmp_path / f"encoder-{per_channel}.onnx"
        recipe = QuantRecipe(target="qnn", activation_bits=16, per_channel=per_channel)
        build_qdq(source, paths[per_channel], recipe, table.ranges["encoder"])
    model = onnx.load(str(paths[True]))
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    per_channel_nodes, per_tensor_nodes = [], []
    for node in model.graph.node:
        if node.op_type not in ("Gemm", "Conv"):
            continue
        weight = producer[node.input[1]]
        scale = values[weight.input[1]]
        (per_channel_nodes if scale.size > 1 else per_tensor_nodes).append(node.name)
        if scale.size > 1:
            assert values[weight.input[0]].dtype == np.int8
            data_scale = values[producer[node.input[0]].input[1]]
            bias_scale = values[producer[node.input[2]].input[1]]
            np.testing.assert_allclose(bias_scale, data_scale * scale, rtol=1e-6)
    assert len(per_tensor_nodes) == 4 and all("/ffn/linear_1/" in name for name in per_tensor_nodes)
    # the convs; per layer q, k, v, out and the FFN's first product; each decoder layer's cross K, V
    assert len(per_channel_nodes) == 2 + 4 * 5 + 4 * 2
    fp32 = tiny.runtime.encoder(mel_window)
    outputs = {
        pc: Encoder(path, tiny.checkpoint.dims, RuntimeOptions(threads=2))(mel_window) for pc, path in paths.items()
    }
    for name, reference in fp32.items():
        gained = sqnr_db(reference, outputs[True][name]) - sqnr_db(reference, outputs[False][name])
        print(f"{name}: per-channel weights gain {gained:.1f} dB")
        assert gained > MIN_PER_CHANNEL_GAIN_DB, f"{name}: {gained:.1f} dB"
