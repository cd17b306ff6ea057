"""The finer integer forms the CPU search moves a node to before float: per-token scales and
16-bit activations in two 8-bit limbs, on real weights and a real window of speech."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from amanuensis import export
from amanuensis.export import GraphKind
from amanuensis.export.graph_index import GraphIndex
from amanuensis.quantize import kernels
from amanuensis.quantize.dynamic import build_dynamic, dynamic_integer_nodes
from amanuensis.quantize.per_row import TECHNIQUES, apply_techniques, choose_technique
from amanuensis.quantize.recipe import QuantRecipe

from ..conftest import sqnr_db

DYNAMIC = QuantRecipe(scheme="dynamic", per_channel=True)
FFN_OUT = "encoder/layer_3/ffn/linear_1/MatMul"  # reads GELU output: a few channels dwarf the rest
ATTENTION_CONTEXT = "encoder/layer_3/self_attention/MatMul_1"  # exp(s − max s) @ V over 1500 frames
OUTPUTS = ["cross_k_0", "cross_v_3"]


def _outputs(path, mel_window) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(OUTPUTS, {"mel": mel_window[None]})


def _sqnr_alone(tiny, mel_window, tmp_path, node: str, technique: str | None) -> float:
    """Output SQNR of the encoder with only ``node`` quantized (per tensor, or with ``technique``)."""
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    built = tmp_path / f"{technique}.onnx"
    build_dynamic(source, built, DYNAMIC, only=[node], techniques={node: technique} if technique else None)
    model = onnx.load(str(built))
    assert dynamic_integer_nodes(model) == {node}
    assert not [n for n in model.graph.node if n.op_type == "MatMul" and n.name.split("/chunk")[0] == node]
    reference = _outputs(source, mel_window)
    return min(sqnr_db(r, q) for r, q in zip(reference, _outputs(built, mel_window), strict=True))


def test_per_token_scales_rescue_the_ffn_output_projection(tiny, mel_window, tmp_path) -> None:
    per_tensor = _sqnr_alone(tiny, mel_window, tmp_path, FFN_OUT, None)
    per_token = _sqnr_alone(tiny, mel_window, tmp_path, FFN_OUT, "per_token")
    assert per_token > per_tensor + 6.0, (per_tensor, per_token)


def test_sixteen_bit_limbs_rescue_the_attention_context(tiny, mel_window, tmp_path) -> None:
    per_tensor = _sqnr_alone(tiny, mel_window, tmp_path, ATTENTION_CONTEXT, None)
    wide = _sqnr_alone(tiny, mel_window, tmp_path, ATTENTION_CONTEXT, "a16")
    assert wide > per_tensor + 10.0, (per_tensor, wide)  # more than the 6 dB of one extra bit


def _matmul_model(a_shape: tuple, weights: np.ndarray | None, b_shape: tuple = ()) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, a_shape)]
    initializers = []
    if weights is None:
        inputs.append(helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, b_shape))
    else:
        initializers.append(numpy_helper.from_array(weights, "b"))
    node = helper.make_node("MatMul", ["a", "b"], ["y"], name="product")
    columns = weights.shape[-1] if weights is not None else b_shape[-1]
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [*a_shape[:-1], columns])
    graph = helper.make_graph([node], "g", inputs, [out], initializer=initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_rewrite_is_all_integer_and_accurate(technique: str) -> None:
    """Both a weight and a run-time right operand: integer kernels on 8-bit operands only, and the
    product within 8-bit (per_token) or 16-bit (a16) error of float."""
    rng = np.random.default_rng(0)
    loudness = rng.uniform(0.01, 10, (2, 3, 50, 1))
    a = (rng.standard_normal((2, 3, 50, 64)) * loudness).astype(np.float32)
    weight, run_time = rng.standard_normal((64, 32)).astype(np.float32), rng.standard_normal((2, 3, 64, 16))
    for weights, b in ((weight, None), (None, run_time)):
        model = _matmul_model(a.shape, weights, b.shape if b is not None else ())
        assert apply_techniques(model, {"product": technique}) == 1
        if kernels.saturating_cpu():  # as build_dynamic stores them on this CPU
            assert kernels.store_weights_unsigned(model) == (2 if technique == "a16" else 1)
        onnx.checker.check_model(model)
        index = GraphIndex(model.graph)
        products = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
        assert len(products) == (2 if technique == "a16" else 1)
        assert not [n for n in model.graph.node if n.op_type == "MatMul"]
        for kernel in products:
            for name in kernel.input[:2]:
                init = index.initializers.get(name)
                producer = index.producer.get(name)
                stored = init is not None and init.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
                assert stored or producer.op_type == "QuantizeLinear"
        feed = {"a": a} | ({"b": b.astype(np.float32)} if b is not None else {})
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
        right = weights if weights is not None else b.astype(np.float32)
        reference = a @ right
        # rows of very different loudness: per-row scales keep each row's error relative to itself
        rows, got_rows = reference.reshape(-1, reference.shape[-1]), got.reshape(-1, got.shape[-1])
        worst_row = min(sqnr_db(r, g) for r, g in zip(rows, got_rows, strict=True))
        assert worst_row > 30.0, worst_row  # one scale for the whole tensor: ~0 dB on the quietest rows


def test_a16_is_chosen_only_for_more_than_one_bit() -> None:
    assert choose_technique({"per_token": 42.8, "a16": 44.9}) == "per_token"
    assert choose_technique({"per_token": 30.5, "a16": 59.3}) == "a16"
