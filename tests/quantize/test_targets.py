"""QDQ flavours per target: the Vitis AI one has power-of-two scales and still tracks FP32; the QNN one
stores weights per channel where the HTP takes them."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from amanuensis import export
from amanuensis.engine import WhisperModel
from amanuensis.export import GraphKind
from amanuensis.quantize import committed_table_path, load_table
from amanuensis.quantize.qdq import build_qdq
from amanuensis.quantize.recipe import QuantRecipe, RangeTable
from amanuensis.runtime import Encoder, RuntimeOptions

from ..conftest import needs_exact_int8_products, sqnr_db

MIN_VITISAI_SQNR_DB = 12.0  # cross K/V vs FP32 on the sample, shipped vitisai table: 14.1–18.4 dB measured
# qnn flavour, cross K/V vs FP32 on the sample, onnxruntime's CPU EP: per-channel weights against one
# uint8 scale per weight (3.1–4.9 dB measured with the shipped table, 2026-12-01)
MIN_PER_CHANNEL_GAIN_DB = 2.0
# qnn decoder logits vs FP32 with the masked-score ranges bounded, against the ranges as measured, worst of
# steps 4-11 on one calibration clip (21.8 against 19.1 dB measured, 2026-12-01)
MIN_MASK_BOUND_GAIN_DB = 1.0
# openvino flavour, encoder with the shipped table (its smoothing folded in), worst cross K/V vs FP32:
# attention × V integer on unnormalized weights against the same products float, and against 8-bit
# softmax probabilities, on the sample (21.8, 23.0 and 3.8 dB measured, 2026-12-01)
MAX_UNNORMALIZED_LOSS_DB = 2.0
MIN_UNNORMALIZED_GAIN_DB = 6.0


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
    fp32 = tiny.runtime.encoder(mel_window)
    ours = Encoder(path, tiny.checkpoint.dims, RuntimeOptions(threads=2))(mel_window)
    for name, reference in fp32.items():
        sqnr = sqnr_db(reference, ours[name])
        print(f"{name}: {sqnr:.1f} dB")
        assert sqnr > MIN_VITISAI_SQNR_DB, f"{name}: {sqnr:.1f} dB"


def test_vitisai_sixteen_bit_format_has_float_scales(tiny: WhisperModel, mel_window: np.ndarray, tmp_path) -> None:
    """At 16 bits the vitisai flavour is Ryzen AI's A16W8 format: 16-bit activations with float
    scales (power-of-two scales are its 8-bit XINT8 format), int8 weights; it still tracks FP32."""
    recipe = QuantRecipe.for_target("vitisai", activation_bits=16)
    assert recipe.method == "minmax" and recipe.activation_symmetric and not recipe.power_of_two_scales
    assert QuantRecipe.for_target("vitisai").power_of_two_scales
    table = load_table(tiny.checkpoint, target="vitisai")  # ranges of the same graph form, any width
    path = tmp_path / "encoder.onnx"
    build_qdq(export.graph_path(tiny.checkpoint, GraphKind.ENCODER), path, recipe, table.ranges["encoder"])
    model = onnx.load(str(path))
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantizers and {values[n.input[2]].dtype for n in quantizers} == {np.dtype(np.int16)}
    scales = np.concatenate([values[n.input[1]].ravel() for n in quantizers])
    assert not np.array_equal(np.log2(scales), np.round(np.log2(scales)))
    fp32 = tiny.runtime.encoder(mel_window)
    ours = Encoder(path, tiny.checkpoint.dims, RuntimeOptions(threads=2))(mel_window)
    for name, reference in fp32.items():
        assert sqnr_db(reference, ours[name]) > MIN_VITISAI_SQNR_DB, name


@pytest.mark.parametrize("target", ["cpu", "openvino", "qnn", "vitisai"])
def test_quantize_defaults_rebuild_the_shipped_recipe(target: str) -> None:
    """`amanuensis quantize --target T` with no other flag (QuantRecipe.for_target, which the CLI
    calls) calibrates with the recipe of the table shipped for T."""
    assert QuantRecipe.for_target(target) == RangeTable.load(committed_table_path("tiny.en", target)).recipe


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


@needs_exact_int8_products
def test_masked_scores_saturate_just_below_the_real_ones(tiny: WhisperModel, tmp_path) -> None:
    """Calibrated on a real clip, the masked self-attention scores (and the mask) get ranges that
    end MASK_MARGIN below the real scores instead of at −10⁴, and the qnn decoder built from them
    tracks FP32 closer, step by step with a filling cache, than one built from the raw ranges."""
    from amanuensis.export.io_names import MASKED_SCORE
    from amanuensis.quantize.calibration import compute_ranges, find_calibration_clips, record_inputs
    from amanuensis.quantize.masked_ranges import MASK_MARGIN

    from ..conftest import CALIBRATION_DIR, ROOT

    recorded = record_inputs(tiny, find_calibration_clips(CALIBRATION_DIR)[:1], ROOT)
    recipe = QuantRecipe(target="qnn", activation_bits=16, per_channel=True)
    source = export.graph_path(tiny.checkpoint, GraphKind.DECODER)
    bounded = compute_ranges(source, recorded.decoder_feeds(), recipe)
    assert min(low for low, _ in bounded.values()) > -1000.0
    masked = ["mask", "decoder/mask/Reshape:0"]
    for layer in range(tiny.checkpoint.dims.n_text_layer):
        scope = f"decoder/layer_{layer}/self_attention"
        scores_low, scores_high = bounded[f"{scope}/MatMul:0"]
        assert bounded[f"{scope}/Add:0"][0] == pytest.approx(scores_low - MASK_MARGIN)
        assert bounded["mask"][0] + scores_high <= bounded[f"{scope}/Add:0"][0] + 1e-4  # a masked sum saturates
        masked += [f"{scope}/Add:0", f"{scope}/Concat:0"]
    raw = {**bounded, **{name: (MASKED_SCORE, bounded[name][1]) for name in masked}}  # as calibration measured

    feeds = [state.feed(tiny.checkpoint.dims) for state in recorded.decoder[4:12]]
    reference = [tiny.runtime.decoder(1).session.run(["logits"], feed)[0] for feed in feeds]
    sqnr = {}
    for name, ranges in (("bounded", bounded), ("raw", raw)):
        path = tmp_path / f"decoder-{name}.onnx"
        build_qdq(source, path, recipe, ranges)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = [session.run(["logits"], feed)[0] for feed in feeds]
        sqnr[name] = min(sqnr_db(ref, out) for ref, out in zip(reference, logits, strict=True))
    print(f"\nqnn decoder logits vs FP32, worst of steps 4-11: bounded {sqnr['bounded']:.1f}, raw {sqnr['raw']:.1f} dB")
    assert sqnr["bounded"] > sqnr["raw"] + MIN_MASK_BOUND_GAIN_DB


def test_eight_bit_attention_weights_are_unnormalized(
    tiny: WhisperModel, mel_window: np.ndarray, tmp_path, monkeypatch
) -> None:
    """The 8-bit static flavours multiply exp(s − max s), not softmax probabilities, with V, so an
    8-bit scale of 1/255 keeps each row's largest weights; the product reaches its division by the
    row sums in float. With those products integer the encoder tracks FP32 about as closely as with
    them float, and far closer than with 8-bit probabilities."""
    from dataclasses import replace

    from amanuensis.quantize import targets
    from amanuensis.quantize.pipeline import table_graph

    table = load_table(tiny.checkpoint, target="openvino")
    source = table_graph(tiny.checkpoint, table, GraphKind.ENCODER, tmp_path)  # its smoothing folded in
    attention = [
        f"encoder/layer_{layer}/self_attention/MatMul_1" for layer in range(tiny.checkpoint.dims.n_audio_layer)
    ]
    others = [name for name in table.excluded_nodes["encoder"] if name not in attention]  # kept float throughout
    recipe = table.recipe
    fp32 = tiny.runtime.encoder(mel_window)

    def worst_sqnr(name: str, exclude: list[str], ranges: dict = table.ranges["encoder"]) -> float:
        path = tmp_path / f"encoder-{name}.onnx"
        build_qdq(source, path, recipe, ranges, exclude=exclude)
        outputs = Encoder(path, tiny.checkpoint.dims, RuntimeOptions(threads=2))(mel_window)
        return min(sqnr_db(reference, outputs[key]) for key, reference in fp32.items())

    unnormalized = worst_sqnr("unnormalized", others)
    model = onnx.load(str(tmp_path / "encoder-unnormalized.onnx"))
    producer = {out: node for node in model.graph.node for out in node.output}
    readers = {name: node for node in model.graph.node for name in node.input}
    products = [node for node in model.graph.node if node.name in attention]
    assert len(products) == len(attention)
    for node in products:
        assert all(producer[name].op_type == "DequantizeLinear" for name in node.input)
        assert readers[node.output[0]].op_type == "Div"
    float_products = worst_sqnr("float", others + attention)
    monkeypatch.setitem(targets.TARGETS, "openvino", replace(targets.TARGETS["openvino"], unnormalized_attention=False))
    # The table has no ranges for softmax probabilities × V: those come from the sample window itself.
    from amanuensis.quantize.calibration import compute_ranges

    on_sample = compute_ranges(source, iter([{"mel": mel_window[None]}]), recipe)
    probabilities = worst_sqnr("probabilities", others, {**on_sample, **table.ranges["encoder"]})
    print(
        f"\nworst cross K/V vs FP32: unnormalized {unnormalized:.1f}, products float {float_products:.1f}, "
        f"8-bit probabilities {probabilities:.1f} dB"
    )
    assert unnormalized > float_products - MAX_UNNORMALIZED_LOSS_DB
    assert unnormalized > probabilities + MIN_UNNORMALIZED_GAIN_DB
