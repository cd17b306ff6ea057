"""Measuring a stream: what it confirmed, when, and how late after the words were spoken.

The stream is fed one update interval at a time and each update is timed; a real-time loop is
then replayed on the measured times: an update starts when its audio has arrived and the
previous update is done, and its events appear when it finishes. A word's delay is that moment
minus the end of the word in the audio.

Word ends come from the offline transcription of the same audio, with word timestamps (the
alignment heads; on the validation clips their times were within 20 ms of faster-whisper's for
90 % of words, docs/word_timestamps.md). With ``StreamDecoding.word_timestamps`` off they are
each segment's span shared out over its words by characters, good to a few hundred milliseconds.

A run also records every call the stream made to its agreement, so that other agreement
settings can be replayed on it (``replay``) without decoding again: until the buffer is cut
short (past ``trim_after_s``) and confirmed text becomes the prompt, the hypotheses do not depend
on the agreement, and the replay confirms what a real run would, at the same updates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

import numpy as np

from amanuensis.audio import SAMPLE_RATE
from amanuensis.streaming.agreement import LocalAgreement, Word, split_words
from amanuensis.streaming.options import StreamOptions
from amanuensis.streaming.stream import CONFIRMED, StreamEvent, TranscriptionStream, local_agreement

if TYPE_CHECKING:
    from amanuensis.engine import WhisperModel


class RecordingAgreement(LocalAgreement):
    """The stream's LocalAgreement, writing down every call made to it (for ``replay``)."""

    def __init__(self, *settings: float) -> None:
        super().__init__(*settings)
        self.calls: list[tuple] = []

    def update(self, hypothesis: list[Word], at: float, settled_before: float = float("inf")) -> list[Word]:
        self.calls.append(("update", hypothesis, at, settled_before))
        return super().update(hypothesis, at, settled_before)

    def forget_partial(self) -> None:
        self.calls.append(("forget_partial",))
        super().forget_partial()

    def confirm_partial(self) -> list[Word]:
        self.calls.append(("confirm_partial",))
        return super().confirm_partial()

    def cut(self, words: int) -> list[Word]:
        # None: every confirmed word went, whatever their number under other settings (silence
        # dropped, the end of the stream, or a trim that cut them all).
        self.calls.append(("cut", None if words >= len(self.in_buffer) else words))
        return super().cut(words)


@dataclass(frozen=True)
class StreamRun:
    events: list[StreamEvent]
    duration: float  # seconds of audio
    compute: list[float]  # seconds spent in each feed/finish call
    shown_at: list[float]  # for each event: seconds after the stream began when a real-time loop would show it
    arrived: list[float] = field(default_factory=list)  # per feed/finish call: seconds of audio fed by its end
    calls: list[tuple] = field(default_factory=list)  # the agreement calls, in order (RecordingAgreement)
    calls_by_feed: list[int] = field(default_factory=list)  # per feed/finish call: agreement calls made by its end
    # The buffer was cut before the end: later hypotheses depended on this run's confirmations,
    # so other agreement settings do not replay exactly.
    trimmed: bool = False

    @property
    def confirmed_words(self) -> list[tuple[Word, float]]:
        """Each confirmed word with the moment it was shown."""
        return [(w, t) for e, t in zip(self.events, self.shown_at, strict=True) if e.kind == CONFIRMED for w in e.words]

    @property
    def text(self) -> str:
        return "".join(e.text for e in self.events if e.kind == CONFIRMED).strip()

    @property
    def real_time_factor(self) -> float:
        return sum(self.compute) / max(self.duration, 1e-9)


def run_stream(model: WhisperModel, samples: np.ndarray, options: StreamOptions | None = None) -> StreamRun:
    """Stream ``samples`` (16 kHz mono) through a fresh stream, timing every update."""
    options = options or StreamOptions()
    stream = TranscriptionStream(model, options)
    agreement = local_agreement(options, RecordingAgreement)
    stream._agreement = agreement  # the same rules, and a record of their use
    step = round(options.policy.update_interval_s * SAMPLE_RATE)
    events_by_feed: list[list[StreamEvent]] = []
    compute: list[float] = []
    arrivals: list[float] = []
    calls_by_feed: list[int] = []
    trimmed = False
    for start in [*range(0, len(samples), step), None]:
        began = time.perf_counter()
        if start is None:
            trimmed = stream.stats.transcribed_samples > 0  # before the end, only a trim cuts transcribed audio
            new = stream.finish()
            arrived = len(samples) / SAMPLE_RATE
        else:
            new = stream.feed(samples[start : start + step])
            arrived = min(start + step, len(samples)) / SAMPLE_RATE
        compute.append(time.perf_counter() - began)
        arrivals.append(arrived)
        calls_by_feed.append(len(agreement.calls))
        events_by_feed.append(new)
    finishes = real_time_finishes(arrivals, compute)
    events = [event for new in events_by_feed for event in new]
    shown_at = [finished for new, finished in zip(events_by_feed, finishes, strict=True) for _ in new]
    duration = len(samples) / SAMPLE_RATE
    return StreamRun(events, duration, compute, shown_at, arrivals, agreement.calls, calls_by_feed, trimmed)


def real_time_finishes(arrived: list[float], compute: list[float]) -> list[float]:
    """When each call of a real-time loop ends: it starts once its audio has arrived and the
    previous call is done, and takes its measured compute time."""
    finishes, finished_at = [], 0.0
    for arrival, spent in zip(arrived, compute, strict=True):
        finished_at = max(arrival, finished_at) + spent
        finishes.append(finished_at)
    return finishes


def replay(run: StreamRun, options: StreamOptions) -> StreamRun:
    """The confirmed events a stream with ``options``' agreement settings would have given on
    ``run``'s hypotheses, shown on ``run``'s update times (exact unless ``run.trimmed``).

    Only the agreement settings (``agreement``, ``agreement_span_s``, ``unsure_probability``,
    ``unsure_hold_s``) are replayed; the update interval and lookahead are the run's own.
    """
    agreement = local_agreement(options)
    events: list[StreamEvent] = []
    shown_at: list[float] = []
    done = 0
    finishes = real_time_finishes(run.arrived, run.compute)
    for arrived, finished_at, calls_so_far in zip(run.arrived, finishes, run.calls_by_feed, strict=True):
        for name, *args in run.calls[done:calls_so_far]:
            words: list[Word] = []
            if name == "update":
                words = agreement.update(*args)
            elif name == "confirm_partial":
                words = agreement.confirm_partial()
            elif name == "forget_partial":
                agreement.forget_partial()
            else:
                agreement.cut(len(agreement.in_buffer) if args[0] is None else args[0])
            if words:
                text = "".join(w.text for w in words)
                events.append(StreamEvent(CONFIRMED, words[0].start, words[-1].end, text, arrived, tuple(words)))
                shown_at.append(finished_at)
        done = calls_so_far
    return StreamRun(
        events, run.duration, run.compute, shown_at, run.arrived, run.calls, run.calls_by_feed, run.trimmed
    )


def offline_words(model: WhisperModel, samples: np.ndarray, options: StreamOptions) -> list[Word]:
    """The offline transcription's words, decoded as the stream decodes: timed by the alignment
    heads when the stream's decoding has word timestamps (its default), else estimated."""
    segments, _ = model.transcribe(samples, options.decoding.transcribe_options(options.decoding.language))
    words: list[Word] = []
    for i, s in enumerate(segments):
        if s.words is None:
            words += split_words(s.text, s.start, s.end, i)
        else:
            words += [Word(w.start, w.end, w.word, i, w.probability) for w in s.words]
    return words


def word_delays(run: StreamRun, reference: list[Word]) -> list[float]:
    """Seconds from the end of each reference word to the confirmation of the same word."""
    confirmed = run.confirmed_words
    matcher = SequenceMatcher(None, [w.key for w, _ in confirmed], [w.key for w in reference], autojunk=False)
    delays = []
    for a, b, size in matcher.get_matching_blocks():
        for i in range(size):
            delays.append(confirmed[a + i][1] - reference[b + i].end)
    return delays
