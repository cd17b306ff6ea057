"""Measuring a stream: what it confirmed, when, and how late after the words were spoken.

The stream is fed one update interval at a time and each update is timed; a real-time loop is
then replayed on the measured times: an update starts when its audio has arrived and the
previous update is done, and its events appear when it finishes. A word's delay is that moment
minus the end of the word in the audio.

Word ends come from the offline transcription of the same audio: Whisper's segment timestamps,
each segment's span shared out over its words by characters (there are no word-level
alignments for these clips). They are estimates, good to a few hundred milliseconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import TYPE_CHECKING

import numpy as np

from amanuensis.audio import SAMPLE_RATE
from amanuensis.streaming.agreement import Word, split_words
from amanuensis.streaming.stream import CONFIRMED, StreamEvent, StreamOptions, TranscriptionStream

if TYPE_CHECKING:
    from amanuensis.engine import WhisperModel


@dataclass(frozen=True)
class StreamRun:
    events: list[StreamEvent]
    duration: float  # seconds of audio
    compute: list[float]  # seconds spent in each feed/finish call
    shown_at: list[float]  # for each event: seconds after the stream began when a real-time loop would show it

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
    step = round(options.update_interval_s * SAMPLE_RATE)
    events: list[StreamEvent] = []
    compute: list[float] = []
    shown_at: list[float] = []
    finished_at = 0.0
    for start in [*range(0, len(samples), step), None]:
        began = time.perf_counter()
        if start is None:
            new = stream.finish()
            arrived = len(samples) / SAMPLE_RATE
        else:
            new = stream.feed(samples[start : start + step])
            arrived = min(start + step, len(samples)) / SAMPLE_RATE
        spent = time.perf_counter() - began
        compute.append(spent)
        finished_at = max(arrived, finished_at) + spent
        events += new
        shown_at += [finished_at] * len(new)
    return StreamRun(events, len(samples) / SAMPLE_RATE, compute, shown_at)


def offline_words(model: WhisperModel, samples: np.ndarray, options: StreamOptions) -> list[Word]:
    """The offline transcription's words with estimated times, decoded as the stream decodes."""
    segments, _ = model.transcribe(samples, options.transcribe_options(options.language))
    return [w for i, s in enumerate(segments) for w in split_words(s.text, s.start, s.end, i)]


def word_delays(run: StreamRun, reference: list[Word]) -> list[float]:
    """Seconds from the end of each reference word to the confirmation of the same word."""
    confirmed = run.confirmed_words
    matcher = SequenceMatcher(None, [w.key for w, _ in confirmed], [w.key for w in reference], autojunk=False)
    delays = []
    for a, b, size in matcher.get_matching_blocks():
        for i in range(size):
            delays.append(confirmed[a + i][1] - reference[b + i].end)
    return delays
