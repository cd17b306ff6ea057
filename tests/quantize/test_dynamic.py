"""The CPU flavour's building blocks: the attention rewrite keeps FP32's numbers; the build is integer."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from amanuensis import export
from amanuensis.export import GraphKind
from amanuensis.export.io_names import cross_kv_names
from amanuensis.quantize.dynamic import (
    build_dynamic,
    dynamic_integer_nodes,
    store_exact_float16,
)
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.quantize.unnormalized import unnormalized_attention

from ..conftest import sqnr_db

DYNAMIC = QuantRecipe(scheme="dynamic", per_channel=True)


def _run(model: onnx.ModelProto | str, feed: dict, names: list[str]) -> list[np.ndarray]:
    data = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(names, feed)


def test_unnormalized_attention_computes_the_same_encoder(tiny, mel_window) -> None:
    """exp(s − max s) @ V / Σ exp(s − max s) is softmax(s) @ V: same cross K/V to float rounding."""
    path = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    model = onnx.load(str(path))
    assert unnormalized_attention(model) == tiny.checkpoint.dims.n_audio_layer
    assert not [n for n in model.graph.node if n.op_type == "Softmax"]
    names = [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in cross_kv_names(layer)]
    feed = {"mel": mel_window[None]}
    for reference, rewritten in zip(_run(str(path), feed, names), _run(model, feed, names), strict=True):
        assert sqnr_db(reference, rewritten) > 60.0  # float32 rounding only (8-bit quantization: ~20 dB)


def test_dynamic_encoder_is_integer_and_tracks_fp32(tiny, mel_window, tmp_path) -> None:
    """Every MatMul of the built encoder is an integer kernel, and its cross K/V stay close to FP32."""
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    built = tmp_path / "encoder.onnx"
    build_dynamic(source, built, DYNAMIC, query_chunks=5)
    model = onnx.load(str(built))
    float_matmuls = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm")]
    assert not float_matmuls, float_matmuls
    source_matmuls = {n.name for n in onnx.load(str(source)).graph.node if n.op_type == "MatMul"}
    assert dynamic_integer_nodes(model) == source_matmuls
    names = [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in cross_kv_names(layer)]
    feed = {"mel": mel_window[None]}
    for reference, quantized in zip(_run(str(source), feed, names), _run(str(built), feed, names), strict=True):
        assert sqnr_db(reference, quantized) > 15.0


def test_excluded_nodes_stay_float_in_every_query_chunk(tiny, tmp_path) -> None:
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    built = tmp_path / "encoder.onnx"
    kept = "encoder/layer_0/self_attention/MatMul"  # one layer's query × key
    build_dynamic(source, built, DYNAMIC, exclude=[kept], query_chunks=5)
    model = onnx.load(str(built))
    assert kept not in dynamic_integer_nodes(model)
    assert len([n for n in model.graph.node if n.op_type == "MatMul" and n.name.startswith(f"{kept}/chunk")]) == 5


def test_float16_storage_changes_no_number(tiny, mel_window) -> None:
    """Weights from a float16 checkpoint stored as float16 and cast back: half the bytes, the same
    outputs bit for bit."""
    path = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    model = onnx.load(str(path))
    assert store_exact_float16(model) > 10
    assert len(model.SerializeToString()) < 0.6 * path.stat().st_size
    names = ["cross_k_0", "cross_v_3"]
    feed = {"mel": mel_window[None]}
    for reference, stored in zip(_run(str(path), feed, names), _run(model, feed, names), strict=True):
        np.testing.assert_array_equal(stored, reference)
