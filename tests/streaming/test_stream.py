"""Streaming on real speech with the default INT8 model: nothing lost, nothing invented."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from amanuensis.audio import load_audio
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import word_error_rate
from amanuensis.streaming import (
    CONFIRMED,
    PARTIAL,
    AgreementPolicy,
    AudioFormat,
    StreamDecoding,
    StreamEvent,
    StreamOptions,
    TranscriptionStream,
    VadOptions,
    astream_chunks,
    confirmed_text,
    stream_chunks,
)
from amanuensis.streaming.agreement import split_words
from amanuensis.streaming.evaluation import StreamRun, offline_words, replay, run_stream
from amanuensis.streaming.stream import MAX_SECONDS_PER_LETTER, PROMPT_CHARS, plausible_end
from amanuensis.transcribe import Segment, fails_checks

from ..conftest import CALIBRATION_DIR, SAMPLE, SAMPLE_REFERENCE, silence

RATE = 16000


# Where the agreement policy is not what a test checks, an update each second does a third of the work.
EACH_SECOND = StreamOptions(policy=AgreementPolicy(update_interval_s=1.0))


def with_policy(options: StreamOptions, **fields) -> StreamOptions:
    return replace(options, policy=replace(options.policy, **fields))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLE).samples


def random_chunks(samples: np.ndarray, seed: int) -> list[np.ndarray]:
    """Pieces of 10 ms to 2 s, as a microphone, a socket or a file reader might deliver."""
    rng = np.random.default_rng(seed)
    pieces, start = [], 0
    while start < len(samples):
        size = int(rng.integers(RATE // 100, 2 * RATE))
        pieces.append(samples[start : start + size])
        start += size
    return pieces


def feed_all(stream: TranscriptionStream, chunks) -> list[StreamEvent]:
    events = []
    for chunk in chunks:
        events += stream.feed(chunk)
    return events + stream.finish()


def test_chunking_does_not_change_the_text_and_every_sample_is_accounted_for(
    tiny_int8: WhisperModel, speech: np.ndarray
) -> None:
    results = []
    for seed in (1, 2):
        stream = TranscriptionStream(tiny_int8, EACH_SECOND, language="en")
        events = feed_all(stream, random_chunks(speech, seed))
        stats = stream.stats
        assert stats.input_frames == stats.fed_samples == len(speech)
        assert stats.transcribed_samples + stats.silent_samples == len(speech) and stats.buffered_samples == 0
        results.append([(e.kind, e.text, e.start, e.end) for e in events])
    assert results[0] == results[1]
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(events)]) == 0.0


def test_confirmed_words_were_partial_first_and_times_move_forward(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    events = list(stream_chunks(tiny_int8, random_chunks(speech, 3)))
    confirmed = [e for e in events if e.kind == CONFIRMED]
    assert len(confirmed) >= 4  # text arrives during the stream, not only at the end
    assert confirmed[0].stream_time < len(speech) / RATE / 2
    shown: list[str] = []
    for event in events:
        if event.kind == PARTIAL:
            shown = [w.key for w in event.words]
        elif event is not events[-2] and event is not events[-1]:  # the final flush confirms unseen words
            # LocalAgreement-2: a confirmed word was in the previous hypothesis' partial tail.
            assert [w.key for w in event.words] == shown[: len(event.words)]
    starts = [e.start for e in confirmed]
    assert starts == sorted(starts) and all(e.start <= e.end <= len(speech) / RATE + 0.05 for e in confirmed)


def first_confirmation(events: list[StreamEvent]) -> float:
    """Seconds of audio fed when the first words were confirmed."""
    return next(e.stream_time for e in events if e.kind == CONFIRMED)


# LocalAgreement counted in updates: no span, so that the count alone decides.
BY_COUNT = StreamOptions(policy=AgreementPolicy(unsure_probability=0.0, agreement_span_s=0.0))


@pytest.fixture(scope="module")
def by_count_run(tiny_int8: WhisperModel, speech: np.ndarray) -> StreamRun:
    """One real stream of the sample, recorded: other agreement settings are replayed on its
    hypotheses (exact for a stream never trimmed; tests/streaming/test_evaluation.py shows it)."""
    run = run_stream(tiny_int8, speech, BY_COUNT)
    assert not run.trimmed
    return run


def test_three_way_agreement_confirms_later_and_loses_nothing(by_count_run: StreamRun) -> None:
    two, three = by_count_run.events, replay(by_count_run, with_policy(BY_COUNT, agreement=3)).events
    assert first_confirmation(three) > first_confirmation(two)
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(three)]) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        StreamOptions(policy=AgreementPolicy(agreement=1))


def test_unsure_words_wait_for_the_hold_span(by_count_run: StreamRun) -> None:
    def confirmations(options: StreamOptions) -> list[StreamEvent]:
        return replay(by_count_run, options).events

    plain = by_count_run.events
    # Every word is unsure below probability 1: with a hold of two update intervals, agreement 2
    # then waits as agreement 3 does, and as a span of two intervals; a longer hold waits longer.
    two_intervals = 2 * BY_COUNT.policy.update_interval_s
    everything_unsure = confirmations(with_policy(BY_COUNT, unsure_probability=1.0, unsure_hold_s=two_intervals))
    three = confirmations(with_policy(BY_COUNT, agreement=3))
    spanned = confirmations(with_policy(BY_COUNT, agreement_span_s=two_intervals))
    held_longer = confirmations(with_policy(BY_COUNT, unsure_probability=1.0, unsure_hold_s=3.0))
    first = [first_confirmation(events) for events in (plain, everything_unsure, three, spanned, held_longer)]
    assert first[0] < first[1] == first[2] == first[3] < first[4]
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(everything_unsure)]) == 0.0
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(held_longer)]) == 0.0
    # The words carry the model's own probabilities, not a placeholder.
    probabilities = [w.probability for e in plain for w in e.words]
    assert all(0 < p <= 1 for p in probabilities) and min(probabilities) < 0.9
    with pytest.raises(ValueError, match="probability"):
        StreamOptions(policy=AgreementPolicy(unsure_probability=1.5))
    with pytest.raises(ValueError, match="unsure_hold_s"):
        StreamOptions(policy=AgreementPolicy(unsure_hold_s=-1.0))
    with pytest.raises(ValueError, match="agreement_span_s"):
        StreamOptions(policy=AgreementPolicy(agreement_span_s=-0.5))


def test_hypotheses_that_fail_whispers_checks_confirm_nothing(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    """A looping or unsure decode is not evidence: with a log-probability floor no decode can
    reach, every update is rejected, and only the final decode (confirmed as it is) gives text."""
    options = replace(EACH_SECOND, decoding=StreamDecoding(logprob_threshold=0.0, finish_temperatures=(0.0,)))
    stream = TranscriptionStream(tiny_int8, options)
    before_finish = []
    for chunk in random_chunks(speech, 7):
        before_finish += stream.feed(chunk)
    assert not [e for e in before_finish if e.kind == CONFIRMED]
    assert stream.stats.rejected == stream.stats.updates > 0
    final = stream.finish()
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(final)]) == 0.0
    default = StreamOptions().decoding.transcribe_options(None, final=False)
    fluent = Segment(0, 0, 0.0, 1.0, " a", [], [], 0.0, avg_logprob=-0.3, compression_ratio=1.2, no_speech_prob=0.1)
    assert not fails_checks(fluent, default)
    assert fails_checks(replace(fluent, compression_ratio=3.0), default)
    assert fails_checks(replace(fluent, avg_logprob=-1.5), default)


def test_a_looping_prompt_is_dropped_so_the_stream_goes_on(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    """What a confirmed repetition loop leaves behind once it is cut from the buffer: with it as the
    prompt every decode loops and fails the checks, and the stream would confirm nothing more."""
    stream = TranscriptionStream(tiny_int8)
    stream._prompt = " the body," * 20
    before_finish = [e for chunk in random_chunks(speech, 11) for e in stream.feed(chunk) if e.kind == CONFIRMED]
    # Kept, the prompt would make nearly every update fail; dropped at the first failure, later
    # updates fail only as any may (one more, here, with FP32 and INT8 alike).
    assert stream._prompt == "" and stream.stats.rejected >= 1 and 4 * stream.stats.rejected < stream.stats.updates
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(before_finish)]) < 25.0


def test_timestamps_are_absolute_after_leading_silence(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    audio = np.concatenate([silence(6.0), speech, silence(3.0)])
    stream = TranscriptionStream(tiny_int8, EACH_SECOND)
    events = feed_all(stream, random_chunks(audio, 4))
    confirmed = [e for e in events if e.kind == CONFIRMED]
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(events)]) == 0.0
    assert 5.5 <= confirmed[0].start <= 6.5
    assert stream.stats.silent_samples >= 5 * RATE  # the leading silence was never decoded


def test_without_vad_whisper_alone_rejects_quiet_but_not_all_noise(tiny: WhisperModel) -> None:
    """Why the VAD is on by default: −20 dBFS white noise passes the energy gate, every update
    decodes it, and tiny.en (FP32; the INT8 build of 2026-11-30 happens to show nothing on this
    noise) shows a word that is not there as partial text (" you"). With the default options the
    same noise is never decoded (test_silence_and_noise_confirm_nothing)."""
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 0.1, 12 * RATE).astype(np.float32)
    options = StreamOptions(vad=VadOptions(model=None))
    stream = TranscriptionStream(tiny, options)
    events = feed_all(stream, random_chunks(noise, 6))
    assert stream.stats.updates > 0
    assert any(e.text.strip() for e in events)
    quiet = TranscriptionStream(tiny, options)
    assert feed_all(quiet, [silence(5)]) == [] and quiet.stats.silent_samples == 5 * RATE


@pytest.mark.parametrize("kind", ["digital silence", "quiet hiss", "white noise", "brown noise"])
def test_silence_and_noise_confirm_nothing(tiny_int8: WhisperModel, kind: str) -> None:
    rng = np.random.default_rng(5)
    seconds = 12
    if kind == "digital silence":
        audio = silence(seconds)
    elif kind == "quiet hiss":
        audio = rng.normal(0, 10 ** (-70 / 20), seconds * RATE)  # −70 dBFS: below the energy gate
    elif kind == "white noise":
        audio = rng.normal(0, 0.1, seconds * RATE)  # −20 dBFS: Whisper's no-speech rule must reject it
    else:
        walk = np.cumsum(rng.normal(0, 1, seconds * RATE))
        walk -= np.convolve(walk, np.ones(1600) / 1600, mode="same")  # remove the drift
        audio = 0.3 * walk / np.abs(walk).max()
    stream = TranscriptionStream(tiny_int8)
    events = feed_all(stream, random_chunks(audio.astype(np.float32), 6))
    assert confirmed_text(events) == ""
    stats = stream.stats
    assert stats.transcribed_samples + stats.silent_samples == seconds * RATE
    assert stats.updates == 0  # gated (energy, then Silero VAD): nothing was decoded


def test_int16_stereo_44k_bytes(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    from amanuensis.audio import resample

    pcm44 = np.round(resample(speech, RATE, 44100) * 32767).astype("<i2")
    stereo = np.repeat(pcm44, 2).tobytes()
    fmt = AudioFormat(sample_rate=44100, channels=2, encoding="int16")
    pieces = [stereo[i : i + 7001] for i in range(0, len(stereo), 7001)]  # odd sizes: split samples
    events = list(stream_chunks(tiny_int8, pieces, audio_format=fmt))
    assert word_error_rate([SAMPLE_REFERENCE], [confirmed_text(events)]) == 0.0


def test_iterator_async_and_feed_forms_agree(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    chunks = random_chunks(speech[: 6 * RATE], 7)  # the first sentence is enough to compare three forms

    async def collect() -> list[StreamEvent]:
        async def source():
            for chunk in chunks:
                await asyncio.sleep(0)
                yield chunk

        return [e async for e in astream_chunks(tiny_int8, source())]

    by_feed = feed_all(TranscriptionStream(tiny_int8), chunks)
    assert list(stream_chunks(tiny_int8, chunks)) == by_feed
    assert asyncio.run(collect()) == by_feed


def test_streams_in_threads_share_one_model(tiny_int8: WhisperModel, speech: np.ndarray, validation) -> None:
    clips = [speech[: 5 * RATE], load_audio(validation[0].audio).samples[: 5 * RATE]]  # several updates each
    alone = [feed_all(TranscriptionStream(tiny_int8), random_chunks(c, 8)) for c in clips]
    together: list[list[StreamEvent] | None] = [None] * len(clips)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            together[index] = feed_all(TranscriptionStream(tiny_int8), random_chunks(clips[index], 8))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(clips))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert together == alone


def test_misuse_is_refused_clearly(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    stream = TranscriptionStream(tiny_int8)
    stream.feed(speech[:RATE])
    stream.finish()
    assert stream.finish() == []
    with pytest.raises(RuntimeError, match="finished"):
        stream.feed(speech[:RATE])
    with pytest.raises(ValueError, match="English-only"):
        TranscriptionStream(tiny_int8, language="de")
    with pytest.raises(ValueError, match="max_buffer_s"):
        StreamOptions(policy=AgreementPolicy(trim_after_s=20, max_buffer_s=29.8))


def _stream_wer(model: WhisperModel, entries, seed: int) -> tuple[float, list[str]]:
    offline, streamed = [], []
    options = StreamOptions()
    for index, entry in enumerate(entries):
        samples = load_audio(entry.audio).samples
        offline.append("".join(w.text for w in offline_words(model, samples, options)))
        stream = TranscriptionStream(model, options)
        streamed.append(confirmed_text(feed_all(stream, random_chunks(samples, seed + index))))
        stats = stream.stats
        assert stats.fed_samples == len(samples) == stats.transcribed_samples + stats.silent_samples
    return word_error_rate(offline, streamed), streamed


def test_streamed_text_matches_offline_on_a_few_clips(tiny_int8: WhisperModel, validation) -> None:
    """A quick look (a lost chunk of audio would cost far more); the 2-point target is the slow test's."""
    wer, _ = _stream_wer(tiny_int8, validation[20:24], seed=100)
    assert wer <= 8.0


STREAM_VS_OFFLINE_TARGET = 2.0  # WER points (issue 5); 1.36 measured by tools/stream_latency.py on 2026-11-24


@pytest.mark.slow
def test_streamed_text_stays_close_to_offline_on_the_validation_set(tiny_int8: WhisperModel, validation) -> None:
    """Every second validation clip (50; all 100 took 11 minutes of CI) in random 10 ms…2 s chunks:
    all audio accounted for, within 2 WER points of offline. tools/stream_latency.py measures all."""
    wer, _ = _stream_wer(tiny_int8, validation[::2], seed=1000)
    assert wer <= STREAM_VS_OFFLINE_TARGET


# Consecutive calibration clips, two speakers, joined by digital silence. With the options of the
# first case below (the defaults until 2026-11-24), a prompted decode after a cut skipped the 20 s
# of speech past the zeros, stretching "Gothic and Roman." over them, and the next cut, at that
# stretched end, dropped a whole sentence unread.
JOINED_CLIPS = [
    "ljspeech/LJ001-0032.wav",
    *(f"read_misc/sense_and_sensibility_01_austen_64kb-0{n}.wav" for n in (870, 880, 890, 920, 930)),
    "read_misc/LJ002-0020.wav",
    "read_misc/LJ002-0035.wav",
    "read_misc/2412-153948-0000.flac",
]


def test_a_cut_stops_where_the_words_could_have_ended() -> None:
    words = split_words(" Gothic and Roman.", 5.78, 27.6, 0)  # one segment stretched to 22 s
    assert plausible_end(words, 2) == pytest.approx(5.78 + 14 * MAX_SECONDS_PER_LETTER)  # 14 letters
    paced = split_words(" Gothic and Roman.", 5.78, 7.2, 0)  # 10 letters per second
    assert plausible_end(paced, 2) == paced[2].end


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [StreamOptions(policy=AgreementPolicy(unsure_probability=0.0, trim_after_s=15.0)), StreamOptions()],
    ids=["lost-before", "defaults"],
)
def test_speech_after_digital_silence_is_not_cut_away_unread(
    tiny_int8: WhisperModel, calibration_refs, options: StreamOptions
) -> None:
    references = {Path(path).relative_to(CALIBRATION_DIR).as_posix(): text for path, text in calibration_refs.items()}
    audio = np.concatenate(
        [np.concatenate([load_audio(CALIBRATION_DIR / n).samples, silence(0.3)]) for n in JOINED_CLIPS]
    )
    text = confirmed_text(stream_chunks(tiny_int8, random_chunks(audio, 5), options))
    # Before the cut fix the first case scored 50 % (the sentence lost, and more); after it 9.2 %.
    assert word_error_rate([" ".join(references[n] for n in JOINED_CLIPS)], [text]) < 15.0


@pytest.mark.slow
def test_long_stream_stays_bounded(tiny_int8: WhisperModel, validation) -> None:
    """80 s of speech (over three 25 s buffers, so several cuts): buffer and prompt stay bounded;
    text keeps coming. Hour-long streams: tools/stream_memory.py."""
    clips = [load_audio(e.audio).samples for e in validation[:20]]
    audio = np.concatenate([np.concatenate([c, silence(0.3)]) for c in clips])[: 80 * RATE]
    options = StreamOptions()
    stream = TranscriptionStream(tiny_int8, options)
    longest = 0
    confirmed_at = []
    for chunk in random_chunks(audio, 9):
        for event in stream.feed(chunk):
            if event.kind == CONFIRMED:
                confirmed_at.append(event.stream_time)
        longest = max(longest, stream.stats.buffered_samples)
        assert len(stream._prompt) <= PROMPT_CHARS
    stream.finish()
    assert longest <= (options.policy.max_buffer_s + options.policy.update_interval_s) * RATE
    gaps = np.diff([0.0, *confirmed_at])
    assert gaps.max() < options.policy.max_buffer_s  # confirmations never stall for a whole buffer
    stats = stream.stats
    assert stats.fed_samples == len(audio) == stats.transcribed_samples + stats.silent_samples


def test_with_word_timestamps_confirmed_words_carry_measured_times(tiny_int8: WhisperModel, speech: np.ndarray) -> None:
    """The stream's words take their times from the alignment heads: the offline word times of the
    same audio, where the characters-share estimate was off by up to ~0.8 s (measured)."""
    from amanuensis import TranscribeOptions

    clip = speech[: 6 * RATE]  # two sentences; an update each second keeps the test short
    segments, _ = tiny_int8.transcribe(clip, TranscribeOptions(beam_size=1, word_timestamps=True))
    offline = [w for s in segments for w in s.words]
    options = StreamOptions(StreamDecoding(language="en", word_timestamps=True), AgreementPolicy(update_interval_s=1.0))
    events = feed_all(TranscriptionStream(tiny_int8, options), random_chunks(clip, 1))
    words = [w for e in events if e.kind == CONFIRMED for w in e.words]
    assert [w.key for w in words] == [split_words(w.word, 0.0, 0.0, 0)[0].key for w in offline]  # punctuation aside
    gaps = [abs(a.start - b.start) for a, b in zip(words, offline, strict=True)]
    assert np.median(gaps) <= 0.04 and max(gaps) <= 0.3
