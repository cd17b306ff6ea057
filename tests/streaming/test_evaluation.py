"""Replaying agreement settings on a recorded stream gives what a real stream with those settings gives."""

from __future__ import annotations

from amanuensis.audio import load_audio
from amanuensis.engine import WhisperModel
from amanuensis.streaming import CONFIRMED, AgreementPolicy, StreamOptions
from amanuensis.streaming.evaluation import StreamRun, replay, run_stream

from ..conftest import SAMPLE


def confirmations(run: StreamRun) -> list[tuple[str, float]]:
    """Each confirmed word with the stream time (seconds of audio fed) at which it was confirmed."""
    return [(word.text, event.stream_time) for event in run.events if event.kind == CONFIRMED for word in event.words]


def test_replay_confirms_what_a_real_stream_with_those_settings_confirms(tiny_int8: WhisperModel) -> None:
    speech = load_audio(SAMPLE).samples[: 8 * 16000]  # two sentences: enough updates, a few seconds each run
    recorded = run_stream(tiny_int8, speech, StreamOptions())
    assert not recorded.trimmed  # a short clip: the buffer is never cut before the end
    assert confirmations(replay(recorded, StreamOptions())) == confirmations(recorded)
    # Every word unsure, held for 1 s: the same hypotheses, later confirmations.
    held = StreamOptions(policy=AgreementPolicy(unsure_probability=1.0, unsure_hold_s=1.0))
    real = run_stream(tiny_int8, speech, held)
    replayed = replay(recorded, held)
    assert confirmations(replayed) == confirmations(real)
    assert confirmations(replayed) != confirmations(recorded)
    assert replayed.text == real.text != ""
    # Shown on the recorded update times, which also cover the final decode.
    assert len(replayed.shown_at) == len(replayed.events) and replayed.shown_at[-1] >= recorded.duration
    # Agreement over a span of two updates, replayed on a recording without one, as
    # tools/stream_replay.py does: the span holds words back.
    often = StreamOptions(policy=AgreementPolicy(agreement_span_s=0.0))
    spanned = StreamOptions(policy=AgreementPolicy(agreement_span_s=2 * often.policy.update_interval_s))
    recorded_often = run_stream(tiny_int8, speech, often)
    replayed = replay(recorded_often, spanned)
    assert confirmations(replayed) != confirmations(recorded_often)
    assert len(replayed.text.split()) == len(recorded_often.text.split())  # later, not fewer
    # A buffer cut short feeds this run's confirmations back as the prompt: no exact replay.
    short_buffer = StreamOptions(policy=AgreementPolicy(trim_after_s=2.0, max_buffer_s=4.0))
    assert run_stream(tiny_int8, speech, short_buffer).trimmed
