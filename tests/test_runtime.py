"""Decoder step with the host-side KV cache against a no-cache full recompute, on a real clip."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from amanuensis import export
from amanuensis.audio import N_SAMPLES, load_audio, log_mel_spectrogram, pad_or_trim
from amanuensis.engine import WhisperModel
from amanuensis.export import GraphKind

from .conftest import VALIDATION_MANIFEST, sqnr_db

MIN_INT8_PREFILL_SQNR_DB = 15.0  # block against steps, both INT8 (measured 20.2–20.9 dB)


@pytest.fixture(scope="module")
def real_prefix(tiny: WhisperModel):
    """Cross K/V of a real clip and the tokens greedy decoding produced for it."""
    samples = load_audio(VALIDATION_MANIFEST.parent / "1688-142285-0001.flac").samples
    cross = tiny.runtime.encoder(pad_or_trim(log_mel_spectrogram(samples, padding=N_SAMPLES)))
    segments, _ = tiny.transcribe(samples)
    text_tokens = [t for s in segments for t in s.tokens]
    return cross, [tiny.tokenizer.sot, *text_tokens]


def test_cached_step_equals_full_recompute(tiny: WhisperModel, real_prefix) -> None:
    """Tolerance: 2e-3 absolute on logits of magnitude ~10-30 (float32 reassociation only)."""
    cross, prefix = real_prefix
    assert len(prefix) > 40
    decoder = tiny.runtime.decoder(1)
    cache = decoder.new_cache()
    stepped = np.stack([decoder.step(np.array([t]), cache, cross)[0] for t in prefix])
    session = ort.InferenceSession(
        str(export.graph_path(tiny.checkpoint, GraphKind.FULL_DECODER, len(prefix))), providers=["CPUExecutionProvider"]
    )
    full = session.run(["logits"], {"tokens": np.array([prefix]), **cross})[0]
    assert np.abs(stepped - full).max() < 2e-3
    assert (stepped.argmax(-1) == full.argmax(-1)).all()
    # The cache stays the same size however long the prefix.
    assert cache.keys[0].shape == (1, 6, 64, 448) and cache.length == len(prefix)


def test_batched_step_with_reorder_matches_single(tiny: WhisperModel, real_prefix) -> None:
    """Beam search reorders cache rows; each row must behave like its own batch-1 decode."""
    cross, prefix = real_prefix
    single = tiny.runtime.decoder(1)
    batched = tiny.runtime.decoder(2)
    cache1, cache2 = single.new_cache(), batched.new_cache()
    other = [prefix[0], *prefix[1:][::-1]]  # a different continuation in row 1
    for a, b in zip(prefix[:20], other[:20], strict=True):
        single.step(np.array([a]), cache1, cross)
        batched.step(np.array([b, a]), cache2, cross)
    cache2.reorder(np.array([1, 1]))  # both rows continue from row 1 (= the real prefix)
    expected = single.step(np.array([prefix[20]]), cache1, cross)[0]
    got = batched.step(np.array([prefix[20], prefix[20]]), cache2, cross)
    np.testing.assert_allclose(got[0], expected, atol=1e-3)
    np.testing.assert_allclose(got[1], expected, atol=1e-3)


def test_prefill_blocks_match_single_steps(tiny: WhisperModel, real_prefix) -> None:
    """A prompt longer than one block (and not a multiple of it) fed by the prefill graph gives the
    cache and logits the steps give, to float rounding."""
    cross, prefix = real_prefix
    tokens = [tiny.tokenizer.sot_prev, *prefix[1:], tiny.tokenizer.sot]
    assert len(tokens) > export.PREFILL_TOKENS and len(tokens) % export.PREFILL_TOKENS
    decoder = tiny.runtime.decoder(2)  # every batch row gets the prompt
    stepped, blocked = decoder.new_cache(), decoder.new_cache()
    for token in tokens:
        expected = decoder.step(np.array([token, token]), stepped, cross)
    got = tiny.runtime.prefill()(tokens, blocked, cross)
    assert blocked.length == stepped.length == len(tokens)
    np.testing.assert_array_equal(blocked.mask, stepped.mask)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    np.testing.assert_allclose(blocked.keys[3], stepped.keys[3], atol=1e-4)
    assert blocked.keys[0][1].any() and np.array_equal(blocked.keys[0][0], blocked.keys[0][1])


def test_int8_prefill_with_run_time_scales_agrees_with_its_steps(tiny_int8: WhisperModel, real_prefix) -> None:
    """The CPU flavour's prompt block measures its activation ranges over the block where the steps
    measure them token by token: not the same numbers, but close (20.9 dB logits, 20.2 dB keys,
    measured 2026-12-01) and the same next token. With fixed scales the step keeps its cache in 8
    bits, which a block would skip: that flavour feeds prompts step by step."""
    from amanuensis.quantize import committed_table_path
    from amanuensis.runtime import ModelRuntime, RuntimeOptions

    runtime, tokenizer = tiny_int8.runtime, tiny_int8.tokenizer
    _, prefix = real_prefix
    tokens = [tokenizer.sot_prev, *prefix[1:], tokenizer.sot]
    samples = load_audio(VALIDATION_MANIFEST.parent / "1688-142285-0001.flac").samples
    cross = runtime.encoder(pad_or_trim(log_mel_spectrogram(samples, padding=N_SAMPLES)))  # 8-bit, for INT8
    decoder = runtime.decoder(2)
    stepped, blocked = decoder.new_cache(), decoder.new_cache()
    for token in tokens:
        expected = decoder.step(np.array([token, token]), stepped, cross)
    got = runtime.prefill()(tokens, blocked, cross)
    assert (got.argmax(-1) == expected.argmax(-1)).all()
    assert sqnr_db(expected, got) > MIN_INT8_PREFILL_SQNR_DB
    filled = slice(0, len(tokens))
    assert sqnr_db(stepped.keys[3][..., filled], blocked.keys[3][..., filled]) > MIN_INT8_PREFILL_SQNR_DB
    static = RuntimeOptions(precision="int8", threads=2, range_table=committed_table_path("tiny.en", "openvino"))
    assert ModelRuntime(tiny_int8.checkpoint, static).prefill() is None


def test_loaded_graphs_names_every_session_that_exists(tiny: WhisperModel) -> None:
    """The benchmark's model bytes come from here: the prefill block counts once it is created."""
    runtime = tiny.runtime
    runtime.decoder(1)
    before = runtime.loaded_graphs()
    assert before[0] == runtime.encoder.path and runtime.decoder(1).path in before
    prefill = runtime.prefill()
    assert prefill is not None
    after = runtime.loaded_graphs()
    assert prefill.path in after and prefill.path.exists()
    assert set(before) <= set(after)
