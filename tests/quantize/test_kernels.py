"""The CPU flavour is built for the integer kernels of the machine that runs it."""

from __future__ import annotations

import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from amanuensis import export
from amanuensis.errors import OptionsError
from amanuensis.export import GraphKind
from amanuensis.export.io_names import cross_kv_names
from amanuensis.quantize import kernels
from amanuensis.quantize.dynamic import build_dynamic
from amanuensis.quantize.recipe import QuantRecipe

from ..conftest import sqnr_db


@pytest.fixture
def fresh_choice(monkeypatch):
    """signed_levels() asked again under the patched machine, and forgotten afterwards."""
    monkeypatch.delenv(kernels.LEVELS_ENV, raising=False)
    kernels.signed_levels.cache_clear()
    yield monkeypatch
    kernels.signed_levels.cache_clear()


@pytest.mark.parametrize(
    ("machine", "flags", "levels"),
    [
        ("x86_64", {"avx2", "fma"}, kernels.NARROW_LEVELS),  # AVX2: vpmaddubsw saturates
        ("x86_64", {"avx2", "avx512f", "avx512bw"}, kernels.NARROW_LEVELS),  # AVX-512 before VNNI
        ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, kernels.FULL_LEVELS),
        ("x86_64", {"avx2", "avx_vnni"}, kernels.FULL_LEVELS),
        ("x86_64", None, kernels.NARROW_LEVELS),  # flags unreadable: the form that is exact everywhere
        ("aarch64", None, kernels.FULL_LEVELS),  # ARM's dot products sum in int32
    ],
)
def test_weight_levels_follow_the_cpu(fresh_choice, machine, flags, levels) -> None:
    fresh_choice.setattr(platform, "machine", lambda: machine)
    fresh_choice.setattr(kernels, "_cpu_flags", lambda: None if flags is None else frozenset(flags))
    assert kernels.signed_levels() == levels


def test_the_environment_overrides_the_cpu_and_is_checked(fresh_choice) -> None:
    fresh_choice.setenv(kernels.LEVELS_ENV, "64")
    assert kernels.signed_levels() == kernels.NARROW_LEVELS
    kernels.signed_levels.cache_clear()
    fresh_choice.setenv(kernels.LEVELS_ENV, "100")
    with pytest.raises(OptionsError, match=kernels.LEVELS_ENV):
        kernels.signed_levels()


def test_narrow_weights_track_fp32_on_any_cpu(tiny, mel_window, tmp_path) -> None:
    """Weights on ±64 levels fit every u8×s8 kernel: the encoder stays close to FP32 whatever the CPU."""
    source = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    built = tmp_path / "encoder.onnx"
    recipe = QuantRecipe(scheme="dynamic", per_channel=True)
    build_dynamic(source, built, recipe, query_chunks=5, signed_levels=kernels.NARROW_LEVELS)
    stored = onnx.load(str(built)).graph.initializer
    weights = [numpy_helper.to_array(i) for i in stored if i.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int16)).max()) for w in weights) <= kernels.NARROW_LEVELS
    names = [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in cross_kv_names(layer)]
    feed = {"mel": mel_window[None]}
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(names, feed)
    quantized = ort.InferenceSession(str(built), providers=["CPUExecutionProvider"]).run(names, feed)
    assert min(sqnr_db(r, q) for r, q in zip(reference, quantized, strict=True)) > 15.0
