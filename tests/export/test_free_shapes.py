"""One decoder session for every batch size and cache length on the CPU EP: the fixed graphs' numbers."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from amanuensis import export
from amanuensis.audio import N_SAMPLES, load_audio, log_mel_spectrogram, pad_or_trim
from amanuensis.engine import WhisperModel
from amanuensis.export import GraphKind
from amanuensis.export.free_shapes import free_decoder_shapes
from amanuensis.quantize import committed_table_path
from amanuensis.runtime import Decoder, Encoder, ModelRuntime, RuntimeOptions

from ..conftest import SAMPLE


def _window() -> np.ndarray:
    return pad_or_trim(log_mel_spectrogram(load_audio(SAMPLE).samples, padding=N_SAMPLES))


def _steps(decoder: Decoder, rows: list[list[int]], cross) -> list[tuple[np.ndarray, np.ndarray]]:
    """(logits, last layer's new keys) of each step, both (batch, ·), feeding row k ``rows[k]``."""
    cache, outputs = decoder.new_cache(), []
    for tokens in zip(*rows, strict=True):
        logits = decoder.step(np.array(tokens), cache, cross)
        keys = cache.keys[-1][..., cache.length - 1]
        outputs.append((logits, keys.reshape(len(rows), -1).copy()))
    return outputs


def _prompt(model: WhisperModel, text: str) -> list[int]:
    tokenizer = model.tokenizer
    return [tokenizer.sot, tokenizer.no_timestamps, *tokenizer.encode(text)]


def test_a_free_batch_step_gives_the_fixed_batch_graphs_numbers(tiny: WhisperModel) -> None:
    """Two different hypotheses at once through the shared session and through the exported
    batch-2 graph: the same logits and keys to float rounding (onnxruntime fuses a graph of
    symbolic batch a little differently: 2e-5 apart on logits of 5-30, one run)."""
    runtime = ModelRuntime(tiny.checkpoint, tiny.runtime.options)
    shared = runtime.decoder(2)
    assert shared.session is runtime.decoder(1).session and runtime.decoder_sessions == 1
    fixed = Decoder(export.graph_path(tiny.checkpoint, GraphKind.DECODER, 2), tiny.checkpoint.dims, runtime.options, 2)
    tokens = _prompt(tiny, " Margaret said nothing at all.")
    rows = [tokens, tokens[:3] + tokens[3:][::-1]]
    cross = runtime.encoder(_window())
    for (got, got_keys), (expected, keys) in zip(_steps(shared, rows, cross), _steps(fixed, rows, cross), strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_keys, keys, atol=1e-5, rtol=0)


def test_int8_rows_of_a_batch_are_the_single_step(tiny_int8: WhisperModel) -> None:
    """The dynamic INT8 step measures one activation range over the whole batch; rows that are
    the same give exactly the batch-1 numbers, so sharing the session changes nothing for one row."""
    runtime = tiny_int8.runtime
    assert runtime.decoder(3).session is runtime.decoder(1).session
    tokens = _prompt(tiny_int8, " Margaret said nothing at all.")
    cross = runtime.encoder(_window())
    single = _steps(runtime.decoder(1), [tokens], cross)
    batched = _steps(runtime.decoder(3), [tokens] * 3, cross)
    for (one, one_keys), (three, three_keys) in zip(single, batched, strict=True):
        np.testing.assert_array_equal(three, np.repeat(one, 3, axis=0))
        np.testing.assert_array_equal(three_keys, np.repeat(one_keys, 3, axis=0))


def test_the_rewrite_takes_only_a_batch_one_step(tiny: WhisperModel) -> None:
    model = onnx.load(str(export.graph_path(tiny.checkpoint, GraphKind.DECODER, 2)), load_external_data=False)
    with pytest.raises(ValueError, match="batch-1"):
        free_decoder_shapes(model)


@pytest.mark.parametrize("table", ["cpu", "openvino"], ids=["dynamic", "static"])
def test_int8_steps_over_the_filled_slots_give_the_full_cache_numbers(tiny: WhisperModel, table: str) -> None:
    """A real prefix decoded step by step through the fixed INT8 step (all 448 slots, the empty
    ones masked) and through the free-shapes one (filled slots only): the same logits to float
    rounding (a shorter sum of attention weights; with fixed scales, 6.7e-6 at most measured)."""
    options = RuntimeOptions(precision="int8", threads=2, range_table=committed_table_path("tiny.en", table))
    runtime = ModelRuntime(tiny.checkpoint, options)
    path, dims = runtime.decoder(1).path, tiny.checkpoint.dims
    fixed, free = Decoder(path, dims, options, 1), Decoder(path, dims, options, 1, free_shapes=True)
    cross = Encoder(runtime.encoder.path, dims, options)(_window())
    tokens = _prompt(tiny, " Margaret said nothing at all.")
    for (got, got_keys), (expected, keys) in zip(
        _steps(free, [tokens], cross), _steps(fixed, [tokens], cross), strict=True
    ):
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got_keys, keys, atol=1e-5, rtol=0)
