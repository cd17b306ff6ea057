"""INT8 graphs that hand K/V over in 8 bits: the same decoder numbers, quantized once instead of per step."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from amanuensis import export
from amanuensis.audio import N_SAMPLES, load_audio, log_mel_spectrogram, pad_or_trim
from amanuensis.engine import WhisperModel
from amanuensis.export.io_names import cross_kv_names, self_kv_names
from amanuensis.quantize import committed_table_path
from amanuensis.runtime import Decoder, Encoder, RuntimeOptions

from ..conftest import VALIDATION_MANIFEST

# The static QDQ flavour (the OpenVINO one) on onnxruntime's CPU EP: fixed scales, folded everywhere.
CPU_INT8 = RuntimeOptions(precision="int8", threads=2, range_table=committed_table_path("tiny.en", "openvino"))
# The dynamic CPU flavour: only cross K/V (fixed for a window) are quantized once, with run-time scales.
DYNAMIC_INT8 = RuntimeOptions(precision="int8", threads=2, range_table=committed_table_path("tiny.en"))


@pytest.fixture(scope="module")
def tiny_int8(tiny) -> WhisperModel:
    return WhisperModel(tiny.checkpoint, CPU_INT8)


@pytest.mark.parametrize("options", [CPU_INT8, DYNAMIC_INT8], ids=["static", "dynamic"])
def test_quantized_handover_gives_identical_logits(tiny, options: RuntimeOptions) -> None:
    """Greedy decoding of a real clip, step by step: the rewritten encoder and decoder pair gives
    exactly the logits of the INT8 graphs as built, whose decoder quantizes its inputs itself."""
    tiny_int8 = WhisperModel(tiny.checkpoint, options)
    runtime, dims = tiny_int8.runtime, tiny_int8.checkpoint.dims
    samples = load_audio(VALIDATION_MANIFEST.parent / "1688-142285-0001.flac").samples
    window = pad_or_trim(log_mel_spectrogram(samples, padding=N_SAMPLES))
    plain_decoder = Decoder(runtime.decoder(1).path, dims, options, 1, free_shapes=True)  # as the runtime's
    plain_cross = Encoder(runtime.encoder.path, dims, options)(window)
    decoder, cross = runtime.decoder(1), runtime.encoder(window)
    assert decoder.cross_params and cross["cross_k_0"].dtype == np.uint8
    plain_cache, cache = plain_decoder.new_cache(), decoder.new_cache()
    token, tokens = tiny_int8.tokenizer.sot, []
    for _ in range(30):
        expected = plain_decoder.step(np.array([token]), plain_cache, plain_cross)
        got = decoder.step(np.array([token]), cache, cross)
        np.testing.assert_array_equal(got, expected)
        token = int(got[0].argmax())
        tokens.append(token)
    assert "Margaret said" in tiny_int8.tokenizer.decode([t for t in tokens if t < tiny_int8.tokenizer.eot])
    if options is CPU_INT8:  # fixed scales: the cache is kept in 8 bits too
        assert cache.keys[0].dtype == np.uint8 and cache.keys[0].nbytes * 4 == plain_cache.keys[0].nbytes
    else:  # run-time scales: the growing cache is measured again at every step, so it stays float
        assert cache.keys[0].dtype == np.float32 and "cross_k_0_scale" in cross


def test_only_inputs_with_their_own_quantizer_are_folded(tiny_int8: WhisperModel) -> None:
    """Every cache and cross input is taken in 8 bits, except one that feeds a node kept in float."""
    decoder = tiny_int8.runtime.decoder(1)
    rewritten, params = export.quantized_io_decoder_path(decoder.path, tiny_int8.checkpoint.dims.n_text_layer)
    graph = onnx.load(str(rewritten), load_external_data=False).graph
    types = {i.name: i.type.tensor_type.elem_type for i in graph.input}
    layers = range(tiny_int8.checkpoint.dims.n_text_layer)
    kv_inputs = [n for layer in layers for n in (*self_kv_names(layer), *cross_kv_names(layer))]
    float_matmul_inputs = {name for n in graph.node if n.op_type == "MatMul" for name in n.input}
    for name in kv_inputs:
        if name in params:
            assert types[name] == onnx.TensorProto.UINT8, name
        else:
            assert types[name] == onnx.TensorProto.FLOAT and name in float_matmul_inputs, name
    assert len(params) == len(kv_inputs) - 1  # tiny.en's table keeps decoder/layer_1 cross values in float
    assert not [n for n in graph.node if n.op_type == "QuantizeLinear" and set(n.input) & set(params)]
    assert {o.name for o in graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.UINT8} == {
        name.replace("self_", "new_") for name in params if name.startswith("self_")
    }
