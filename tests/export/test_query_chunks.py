"""Query-chunked encoder attention: the same outputs as the graph it came from, in less memory."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from amanuensis import export
from amanuensis.devices import CPU_EP, SessionPlan
from amanuensis.engine import WhisperModel
from amanuensis.export import GraphKind
from amanuensis.export.query_chunks import split_attention_queries
from amanuensis.quantize import committed_table_path
from amanuensis.runtime import ENCODER_QUERY_CHUNKS, RuntimeOptions
from amanuensis.sessions import SessionSettings, open_session

CPU = SessionPlan("onnxruntime", CPU_EP, "cpu", "cpu")


def _outputs(path, mel_window: np.ndarray) -> list[np.ndarray]:
    session = open_session(path, CPU, SessionSettings(threads=2))
    return session.run(["cross_k_0", "cross_v_3"], {"mel": mel_window[None]})


@pytest.fixture(scope="module")
def tiny_static_int8(tiny) -> WhisperModel:
    """A static QDQ flavour whose attention keeps its Softmax (QNN's) on the CPU EP: the CPU
    flavour is chunked when built, and the 8-bit static ones have unnormalized attention instead."""
    options = RuntimeOptions(precision="int8", threads=2, range_table=committed_table_path("tiny.en", "qnn"))
    return WhisperModel(tiny.checkpoint, options)


@pytest.mark.parametrize("model_name", ["tiny", "tiny_static_int8"])
def test_chunked_encoder_gives_identical_outputs(model_name: str, mel_window: np.ndarray, request, tmp_path) -> None:
    model: WhisperModel = request.getfixturevalue(model_name)
    source = model.runtime.encoder.path  # FP32 export or the QDQ graph built from it
    chunked_model = split_attention_queries(onnx.load(str(source)), ENCODER_QUERY_CHUNKS)
    chunked = tmp_path / "encoder_chunked.onnx"
    onnx.save(chunked_model, str(chunked))
    ops = Counter(node.op_type for node in chunked_model.graph.node)
    layers = model.checkpoint.dims.n_audio_layer
    assert ops["Softmax"] == layers * ENCODER_QUERY_CHUNKS and ops["Split"] == layers and ops["Concat"] >= layers
    for want, got in zip(_outputs(source, mel_window), _outputs(chunked, mel_window), strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_cpu_runtime_runs_the_chunked_encoder(tiny_static_int8: WhisperModel, tiny_int8: WhisperModel) -> None:
    """Static graphs are chunked by the runtime; the CPU flavour is built chunked (its attention
    has no Softmax left for the runtime's rewrite to find)."""
    layers = tiny_int8.checkpoint.dims.n_audio_layer
    ops = Counter(a.op_type for a in tiny_static_int8.runtime.encoder.session.assignments())
    assert ops["Softmax"] == layers * ENCODER_QUERY_CHUNKS
    ops = Counter(a.op_type for a in tiny_int8.runtime.encoder.session.assignments())
    assert ops["Exp"] == layers * ENCODER_QUERY_CHUNKS and ops["Split"] == layers


def test_single_query_attention_is_left_alone(tiny: WhisperModel) -> None:
    decoder = onnx.load(str(export.graph_path(tiny.checkpoint, GraphKind.DECODER, 1)))
    rewritten = split_attention_queries(decoder, 5)
    assert [n.op_type for n in rewritten.graph.node] == [n.op_type for n in decoder.graph.node]


def test_chunk_count_must_divide_the_queries(tiny: WhisperModel) -> None:
    encoder = onnx.load(str(export.graph_path(tiny.checkpoint, GraphKind.ENCODER)))
    with pytest.raises(ValueError, match="7 query chunks do not divide 1500"):
        split_attention_queries(encoder, 7)
