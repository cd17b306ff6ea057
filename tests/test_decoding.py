"""Logit filters on crafted logits; strategies and language detection on real audio."""

from __future__ import annotations

import numpy as np
import pytest

from amanuensis.audio import N_SAMPLES, load_audio, log_mel_spectrogram, pad_or_trim
from amanuensis.choosers import sample_rows
from amanuensis.decoding import (
    ApplyTimestampRules,
    DecodingOptions,
    SuppressBlank,
    decode_window,
    detect_language,
)
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import word_error_rate
from amanuensis.runtime import ModelRuntime

from .conftest import ROOT, SAMPLE, SAMPLE_REFERENCE, silence


@pytest.fixture(scope="module")
def rules(tiny: WhisperModel) -> ApplyTimestampRules:
    return ApplyTimestampRules(tiny.tokenizer, max_initial_timestamp_index=50)


def _flat_logits(tiny: WhisperModel) -> np.ndarray:
    return np.zeros((1, tiny.checkpoint.dims.n_vocab), np.float32)


def _allowed(logits: np.ndarray) -> np.ndarray:
    return np.isfinite(logits[0])


def test_window_must_open_with_an_early_timestamp(tiny: WhisperModel, rules: ApplyTimestampRules) -> None:
    logits = _flat_logits(tiny)
    rules.apply(logits, [[]])
    begin = tiny.tokenizer.timestamp_begin
    allowed = np.flatnonzero(_allowed(logits))
    assert allowed.min() == begin and allowed.max() == begin + 50  # 0.00 s … 1.00 s


def test_timestamps_pair_up_and_never_go_back(tiny: WhisperModel, rules: ApplyTimestampRules) -> None:
    begin, text = tiny.tokenizer.timestamp_begin, tiny.tokenizer.encode(" hello")[0]
    # After an opening stamp and text: a closing stamp must be later than the opening one.
    logits = _flat_logits(tiny)
    logits[0, text] = 10.0  # text is far likelier than any timestamp
    rules.apply(logits, [[begin + 10, text]])
    assert not _allowed(logits)[begin : begin + 11].any() and _allowed(logits)[begin + 11]
    assert _allowed(logits)[text]
    # Right after a closing stamp, only a stamp (>= it) or the end may follow, not text.
    logits = _flat_logits(tiny)
    rules.apply(logits, [[begin + 10, text, begin + 20]])
    assert not _allowed(logits)[: tiny.tokenizer.eot].any()
    assert _allowed(logits)[begin + 20] and not _allowed(logits)[begin + 19]
    # After a complete pair, text must follow: no third timestamp in a row.
    logits = _flat_logits(tiny)
    logits[0, text] = 10.0
    rules.apply(logits, [[begin + 10, text, begin + 20, begin + 20]])
    assert not _allowed(logits)[begin:].any() and _allowed(logits)[text]
    assert not _allowed(logits)[tiny.tokenizer.no_timestamps]


def test_timestamp_mass_beats_best_text_token(tiny: WhisperModel, rules: ApplyTimestampRules) -> None:
    begin, text = tiny.tokenizer.timestamp_begin, tiny.tokenizer.encode(" hello")[0]
    logits = np.full((1, tiny.checkpoint.dims.n_vocab), -50.0, np.float32)
    logits[0, text] = 1.0
    logits[0, begin + 30 : begin + 60] = 0.0  # each stamp below the text token, their sum above it
    rules.apply(logits, [[begin, text]])
    assert not _allowed(logits)[:begin].any()


def test_suppress_blank_only_at_the_start(tiny: WhisperModel) -> None:
    blank = SuppressBlank(tiny.tokenizer)
    logits = _flat_logits(tiny)
    blank.apply(logits, [[]])
    assert not _allowed(logits)[tiny.tokenizer.eot] and not _allowed(logits)[220]
    logits = _flat_logits(tiny)
    blank.apply(logits, [[123]])
    assert _allowed(logits).all()


@pytest.fixture(scope="module")
def sample_cross(tiny: WhisperModel):
    mel = log_mel_spectrogram(load_audio(SAMPLE).samples, padding=N_SAMPLES)
    return tiny.runtime.encoder(pad_or_trim(mel))


@pytest.mark.parametrize("options", [
    DecodingOptions(),
    DecodingOptions(beam_size=5),
    DecodingOptions(beam_size=3, without_timestamps=True),
    DecodingOptions(temperature=0.4, best_of=3),
], ids=["greedy", "beam5", "beam3-no-timestamps", "sampling"])  # fmt: skip
def test_strategies_transcribe_real_speech(tiny: WhisperModel, sample_cross, options: DecodingOptions) -> None:
    result = decode_window(tiny.runtime, tiny.tokenizer, sample_cross, options, "en")
    assert word_error_rate([SAMPLE_REFERENCE], [result.text]) < 5.0
    assert -1.0 < result.avg_logprob < 0 and result.no_speech_prob < 0.1
    # Each token's log-probability is kept; with <|endoftext|>'s they add up to the score.
    assert len(result.token_logprobs) == len(result.tokens) and max(result.token_logprobs) <= 0
    end_logprob = result.avg_logprob * (len(result.tokens) + 1) - sum(result.token_logprobs)
    assert -5 < end_logprob <= 1e-6
    stamps = [t for t in result.tokens if t >= tiny.tokenizer.timestamp_begin]
    assert (len(stamps) == 0) == options.without_timestamps
    assert stamps == sorted(stamps)


def test_samples_run_as_one_batch_on_one_decoder_session(tiny: WhisperModel, sample_cross) -> None:
    runtime = ModelRuntime(tiny.checkpoint, tiny.runtime.options)  # fresh: no decoder opened yet
    steps = []
    runtime.decoder_observer = lambda feed: steps.append(len(feed["tokens"]))
    options = DecodingOptions(temperature=0.6, best_of=4)
    result = decode_window(runtime, tiny.tokenizer, sample_cross, options, "en")
    assert runtime.decoder_sessions == 1
    assert set(steps) == {4}  # every step carries the four samples, prompt included
    assert word_error_rate([SAMPLE_REFERENCE], [result.text]) < 10.0


def test_no_speech_probability_on_silence(tiny: WhisperModel) -> None:
    cross = tiny.runtime.encoder(pad_or_trim(log_mel_spectrogram(silence(5), padding=N_SAMPLES)))
    result = decode_window(tiny.runtime, tiny.tokenizer, cross, DecodingOptions(), "en")
    assert result.no_speech_prob > 0.6


def test_base_detects_english_and_translates(base: WhisperModel) -> None:
    mel = log_mel_spectrogram(load_audio(SAMPLE).samples, padding=N_SAMPLES)
    cross = base.runtime.encoder(pad_or_trim(mel))
    language, probs = detect_language(base.runtime, base.tokenizer, cross)
    assert language == "en" and probs["en"] > 0.9
    assert abs(sum(probs.values()) - 1.0) < 1e-4
    result = decode_window(base.runtime, base.tokenizer, cross, DecodingOptions(task="translate"), "en")
    assert word_error_rate([SAMPLE_REFERENCE], [result.text]) < 15.0


def test_base_translates_german_speech_into_english(base: WhisperModel) -> None:
    """A Common Voice clip ("Du benutzt ständig irgendwelche Redewendungen, die ich nicht kenne."):
    transcribed it stays German; with task="translate" it comes out in English."""
    from amanuensis.transcribe import TranscribeOptions

    clip = ROOT / "tests/data/validation/multilingual/de/clips/common_voice_de_17720792.mp3"
    german = base.transcribe_all(str(clip), TranscribeOptions(beam_size=1))
    english = base.transcribe_all(str(clip), TranscribeOptions(beam_size=1, task="translate"))
    assert german.language == english.language == "de"
    assert "ich" in german.text.lower().split() and "Redewendungen" in german.text
    words = set(english.text.lower().replace(".", " ").replace(",", " ").split())
    assert english.text.isascii() and {"you", "i"} <= words, english.text


def test_sampling_draws_each_token_as_often_as_its_probability() -> None:
    """Weights with zeros in every block and a zero tail: 40 000 draws follow the weights to
    within 0.3 % per token and never pick a zero weight."""
    rng = np.random.default_rng(7)
    weights = np.zeros(700, np.float32)
    weights[::3] = rng.random(234).astype(np.float32)
    weights[650:] = 0
    draws = np.concatenate([sample_rows(np.repeat(weights[None], 8, axis=0), rng) for _ in range(5000)])
    counts = np.bincount(draws, minlength=len(weights))
    assert counts[weights == 0].sum() == 0
    np.testing.assert_allclose(counts / len(draws), weights / weights.sum(), atol=0.003)
