"""QDQ flavours per target: the Vitis AI one has power-of-two scales and still tracks FP32."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from amanuensis import export
from amanuensis.engine import WhisperModel
from amanuensis.quantize import load_table
from amanuensis.quantize.qdq import build_qdq
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.runtime import Encoder, RuntimeOptions

MIN_VITISAI_SQNR_DB = 6.0  # cross K/V vs FP32 on the sample: 8.3–11.7 dB measured (CPU flavour: 14.6–18.3)


def test_vitisai_flavour_has_power_of_two_scales(tiny: WhisperModel, mel_window: np.ndarray, tmp_path) -> None:
    table = load_table(tiny.checkpoint)
    path = tmp_path / "encoder.onnx"
    source = export.encoder_path(tiny.checkpoint)
    build_qdq(source, path, QuantRecipe(target="vitisai"), table.ranges["encoder"], table.excluded_nodes["encoder"])
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
    fp32 = tiny.runtime.encoder(mel_window)
    ours = Encoder(path, tiny.checkpoint.dims, RuntimeOptions(threads=2))(mel_window)
    for name, reference in fp32.items():
        sqnr = 20 * np.log10(np.linalg.norm(reference) / np.linalg.norm(reference - ours[name]))
        assert sqnr > MIN_VITISAI_SQNR_DB, f"{name}: {sqnr:.1f} dB"


_WEIGHTS: dict[str, dict[str, np.ndarray]] = {}


def _float_weights(path) -> dict[str, np.ndarray]:
    if str(path) not in _WEIGHTS:
        model = onnx.load(str(path))
        _WEIGHTS[str(path)] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.dims}
    return _WEIGHTS[str(path)]
