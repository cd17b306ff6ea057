"""INT8 is computed exactly by the integer kernels of the machine that runs it: the CPU flavour is
built for them, the static flavours ask onnxruntime for its exact ones."""

from __future__ import annotations

import platform
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from amanuensis import export
from amanuensis.errors import OptionsError
from amanuensis.export import GraphKind
from amanuensis.export.io_names import cross_kv_names
from amanuensis.quantize import kernels, load_table
from amanuensis.quantize.dynamic import build_dynamic
from amanuensis.quantize.qdq import build_qdq
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.runtime import RuntimeOptions, make_session

from ..conftest import sqnr_db

DYNAMIC = QuantRecipe(scheme="dynamic", per_channel=True)
ATTENTION_CONTEXT = "encoder/layer_3/self_attention/MatMul_1"  # exp(s − max s) @ V: V quantized at run time


@pytest.fixture
def fresh_choice(monkeypatch):
    """weight_storage() asked again under the patched machine, and forgotten afterwards."""
    monkeypatch.delenv(kernels.WEIGHTS_ENV, raising=False)
    kernels.weight_storage.cache_clear()
    kernels.saturating_cpu.cache_clear()
    yield monkeypatch
    kernels.weight_storage.cache_clear()
    kernels.saturating_cpu.cache_clear()


@pytest.mark.parametrize(
    ("machine", "flags", "storage"),
    [
        ("x86_64", {"avx2", "fma"}, kernels.UNSIGNED),  # AVX2: vpmaddubsw saturates
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, kernels.UNSIGNED),  # AVX-512 before VNNI
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, kernels.SIGNED),
        ("x86_64", {"avx2", "avx_vnni"}, kernels.SIGNED),
        ("x86_64", None, kernels.UNSIGNED),  # flags unreadable: the form that is exact everywhere
        ("aarch64", None, kernels.SIGNED),  # ARM's dot products sum in int32
    ],
)
def test_weight_storage_follows_the_cpu(fresh_choice, machine, flags, storage) -> None:
    fresh_choice.setattr(platform, "machine", lambda: machine)
    fresh_choice.setattr(kernels, "_cpu_flags", lambda: None if flags is None else frozenset(flags))
    assert kernels.weight_storage() == storage
    assert kernels.saturating_cpu() == (storage == kernels.UNSIGNED)


def test_the_environment_overrides_the_cpu_and_is_checked(fresh_choice) -> None:
    fresh_choice.setattr(platform, "machine", lambda: "aarch64")
    fresh_choice.setenv(kernels.WEIGHTS_ENV, "uint8")
    assert kernels.weight_storage() == kernels.UNSIGNED
    assert not kernels.saturating_cpu()  # a choice of weights says nothing about the CPU
    kernels.weight_storage.cache_clear()
    fresh_choice.setenv(kernels.WEIGHTS_ENV, "int7")
    with pytest.raises(OptionsError, match=kernels.WEIGHTS_ENV):
        kernels.weight_storage()


def _run(path, feed: dict, names: list[str]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(names, feed)


def test_uint8_weights_compute_what_int8_weights_compute_without_saturation(tiny, mel_window, tmp_path) -> None:
    """The same integer levels stored + 128: no int8 operand is left, and where the u8×s8 kernel
    does not saturate (a VNNI CPU) the outputs are the int8 build's to float rounding; everywhere
    they stay close to FP32 (on a CPU without VNNI the int8 build measured 5.4 dB)."""
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    signed, unsigned = tmp_path / "int8.onnx", tmp_path / "uint8.onnx"
    techniques = {ATTENTION_CONTEXT: "per_token"}  # a run-time right operand (V) too
    build_dynamic(source, signed, DYNAMIC, query_chunks=5, techniques=techniques, weight_storage=kernels.SIGNED)
    build_dynamic(source, unsigned, DYNAMIC, query_chunks=5, techniques=techniques, weight_storage=kernels.UNSIGNED)
    model = onnx.load(str(unsigned))
    products = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    initializers = {i.name: i.data_type for i in model.graph.initializer}
    assert products and not [n.name for n in products if initializers.get(n.input[3]) == onnx.TensorProto.INT8]
    names = [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in cross_kv_names(layer)]
    feed = {"mel": mel_window[None]}
    reference = _run(source, feed, names)
    got = _run(unsigned, feed, names)
    assert min(sqnr_db(r, q) for r, q in zip(reference, got, strict=True)) > 15.0
    if not kernels.saturating_cpu():
        same = _run(signed, feed, names)
        assert min(sqnr_db(s, q) for s, q in zip(same, got, strict=True)) > 60.0


def _weights_unsigned_by_hand(source, target) -> int:
    """``source`` with every constant int8 weight a DequantizeLinear reads (and its zero point)
    stored as uint8 + 128: the same values, multiplied by u8×u8 kernels on every CPU."""
    model = onnx.load(str(source))
    initializers = {i.name: i for i in model.graph.initializer}
    converted: set[str] = set()
    for node in model.graph.node:
        weight = initializers.get(node.input[0])
        if node.op_type != "DequantizeLinear" or weight is None or weight.data_type != onnx.TensorProto.INT8:
            continue
        for name in node.input[0], node.input[2]:
            if name not in converted:
                values = numpy_helper.to_array(initializers[name]).astype(np.int16) + kernels.OFFSET
                initializers[name].CopyFrom(numpy_helper.from_array(values.astype(np.uint8), name))
                converted.add(name)
    onnx.save(model, str(target))
    return len(converted)


def test_static_int8_weights_run_exactly_on_this_cpu(tiny, mel_window, tmp_path) -> None:
    """A static 8-bit flavour keeps int8 weights (its NPU needs them). Run by the runtime on the
    CPU EP, its outputs are those of the same graph with uint8 weights, which no CPU saturates:
    where u8×s8 would saturate (no VNNI) the session asks onnxruntime for its u8×u8 kernels."""
    table = load_table(tiny.checkpoint, target="openvino")
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    static, by_hand = tmp_path / "static.onnx", tmp_path / "uint8.onnx"
    build_qdq(source, static, replace(table.recipe, smooth=False, split_ffn=False), table.ranges["encoder"])
    assert _weights_unsigned_by_hand(static, by_hand) > 0
    names = [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in cross_kv_names(layer)]
    runtime = make_session(static, RuntimeOptions(precision="int8", threads=2, device="cpu"))
    got = runtime.run(names, {"mel": mel_window[None]})
    exact = _run(by_hand, {"mel": mel_window[None]}, names)
    assert all(np.array_equal(g, e) for g, e in zip(got, exact, strict=True))
