"""A transcription stream: feed audio as it arrives, get partial and confirmed text back.

Every ``update_interval_s`` of new audio the buffer (everything since the last cut) is
transcribed again; LocalAgreement-2 confirms the words two consecutive hypotheses share (three
with ``agreement=3``: later, closer to an offline reading; with ``agreement_span_s``, every
hypothesis over that much audio as well), and a word the model gives less than
``unsure_probability`` must be read the same for ``unsure_hold_s`` of audio. A hypothesis that fails Whisper's
own checks (a repetition loop, a low average log-probability) takes no part: confirming from
it would make its errors permanent. The buffer is cut at the end of a confirmed segment once it
is longer than ``trim_after_s``, and the text cut away becomes the prompt, so memory and the
cost of an update stay bounded however long the stream runs. Updates happen at fixed points of
the audio, so the text does not depend on how the audio was chunked; a caller slower than real
time falls behind rather than skipping.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from amanuensis.audio import SAMPLE_RATE, peak_frame_dbfs
from amanuensis.streaming.agreement import LocalAgreement, Word, split_words
from amanuensis.streaming.input import AudioFormat, InputConverter
from amanuensis.streaming.options import StreamOptions
from amanuensis.transcribe import Segment, check_language, fails_checks, transcribe
from amanuensis.vad import WINDOW, SileroVad

if TYPE_CHECKING:
    from amanuensis.engine import WhisperModel

PARTIAL = "partial"  # event kind: the unconfirmed tail; replaces the previous partial, may change
CONFIRMED = "confirmed"  # event kind: words appended to the transcript; never change again
PROMPT_CHARS = 200  # characters of confirmed text (already cut from the buffer) given as the prompt
NO_SPEECH_KEEP_S = 1.0  # when a long buffer held no words at all, keep this much of its end
SPEECH_PAD_S = 0.4  # audio kept when a buffer without speech is dropped: a word may be starting
# Tokens one update may sample: TOKENS_BASE + TOKENS_PER_S × buffer seconds, about twice what the
# fastest calibration clip needs with its timestamp tokens. More is a repetition loop ("My own. My
# own. …"), which a prompted tiny.en falls into on continuous speech and which would otherwise run
# to 224 tokens (about 1 s of CPU here) at every update.
TOKENS_BASE = 16
TOKENS_PER_S = 8.0
# A cut never goes past this many seconds per letter from the start of the segment it cuts in
# (about half the pace of slow read speech): a decode may stretch a segment's end over speech it
# skipped ("Gothic and Roman." over 24 s of the next speaker), and cutting there would drop
# that speech unread.
MAX_SECONDS_PER_LETTER = 0.15


@dataclass(frozen=True)
class StreamEvent:
    kind: str  # PARTIAL or CONFIRMED
    start: float  # seconds from the start of the stream (word times are estimates, see agreement)
    end: float  # seconds
    text: str  # confirmed: the new words, with leading spaces; partial: the whole unconfirmed tail
    stream_time: float  # seconds of audio fed when the event was produced
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class StreamStats:
    """Where every sample went: fed = transcribed + silent + buffered."""

    input_frames: int  # frames received, in the caller's format and rate
    fed_samples: int  # 16 kHz samples after conversion
    transcribed_samples: int  # cut from the buffer after being transcribed
    silent_samples: int  # cut from the buffer as silence, without decoding
    buffered_samples: int  # still in the buffer (0 after finish)
    updates: int  # times the buffer was transcribed
    rejected: int  # updates whose hypothesis failed Whisper's checks and was not used


class TranscriptionStream:
    """One live stream; several may share a model (its sessions are thread-safe)."""

    def __init__(
        self,
        model: WhisperModel,
        options: StreamOptions | None = None,
        audio_format: AudioFormat | None = None,
        *,
        language: str | None = None,
        task: str | None = None,
    ) -> None:
        """``TranscriptionStream(model, language="en")``: ``language`` and ``task`` override
        ``options.decoding``'s."""
        options = options or StreamOptions()
        if language is not None or task is not None:
            options = options.with_language(language or options.decoding.language, task)
        self.options = options
        self._runtime = model.runtime
        self._tokenizer = model.tokenizer
        check_language(
            model.tokenizer, self.options.decoding.language, self.options.decoding.task
        )  # now, not at the first update
        self._converter = InputConverter(audio_format or AudioFormat())
        self._vad = SileroVad() if self.options.vad.model == "silero" else None
        self._vad_windows = 0  # VAD windows judged so far
        self._speech_until = 0  # stream sample index where the last speech window ends
        self._lock = threading.Lock()
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # stream sample index of buffer[0]
        self._since_update = 0  # samples fed since the last update
        self._agreement = local_agreement(self.options)
        self._hypothesis: list[Word] = []  # the latest transcription of the buffer
        self._prompt = ""  # tail of the confirmed text already cut from the buffer
        self._language = self.options.decoding.language
        self._last_partial = ""
        self._confirmed_until = 0.0  # end of the last confirmed event, seconds
        self._finished = False
        self._transcribed = 0
        self._silent = 0
        self._updates = 0
        self._rejected = 0

    # ----------------------------------------------------------------------- public API

    def feed(self, chunk: np.ndarray | bytes) -> list[StreamEvent]:
        """Add audio (any length; see AudioFormat); returns the events it caused, often none."""
        with self._lock:
            if self._finished:
                raise RuntimeError("the stream is finished; start a new one")
            return self._take(self._converter.convert(chunk))

    def finish(self) -> list[StreamEvent]:
        """End of audio: transcribe what is left and confirm everything."""
        with self._lock:
            if self._finished:
                return []
            events = self._take(self._converter.flush())
            events += self._update(final=True)
            self._finished = True
            return events

    async def afeed(self, chunk: np.ndarray | bytes) -> list[StreamEvent]:
        """``feed`` off the event loop (inference runs in a worker thread)."""
        return await asyncio.to_thread(self.feed, chunk)

    async def afinish(self) -> list[StreamEvent]:
        return await asyncio.to_thread(self.finish)

    @property
    def stats(self) -> StreamStats:
        with self._lock:
            return StreamStats(
                input_frames=self._converter.frames_in,
                fed_samples=self._buffer_start + len(self._buffer),
                transcribed_samples=self._transcribed,
                silent_samples=self._silent,
                buffered_samples=len(self._buffer),
                updates=self._updates,
                rejected=self._rejected,
            )

    # ----------------------------------------------------------------------- internals

    def _take(self, samples: np.ndarray) -> list[StreamEvent]:
        """Append samples, updating at every ``update_interval_s`` boundary of the stream."""
        step = round(self.options.policy.update_interval_s * SAMPLE_RATE)
        events: list[StreamEvent] = []
        while len(samples):
            room = step - self._since_update
            piece, samples = samples[:room], samples[room:]
            self._listen(piece)
            self._buffer = np.concatenate([self._buffer, piece])
            self._since_update += len(piece)
            if self._since_update >= step:
                events += self._update(final=False)
        return events

    def _now(self) -> float:
        return (self._buffer_start + len(self._buffer)) / SAMPLE_RATE

    def _listen(self, samples: np.ndarray) -> None:
        """Run the VAD over new audio; remember where the last speech ended."""
        if self._vad is None:
            return
        probs = self._vad(samples)
        speech = np.flatnonzero(probs >= self.options.vad.threshold)
        if len(speech):
            self._speech_until = (self._vad_windows + int(speech[-1]) + 1) * WINDOW
        self._vad_windows += len(probs)

    def _is_quiet(self) -> bool:
        """Nothing worth decoding in the buffer: too quiet, or no speech according to the VAD."""
        if len(self._buffer) == 0:
            return True
        threshold = self.options.vad.silence_threshold_db
        if threshold is not None and peak_frame_dbfs(self._buffer) < threshold:
            return True
        return self._vad is not None and self._speech_until <= self._buffer_start

    def _update(self, final: bool) -> list[StreamEvent]:
        self._since_update = 0
        events: list[StreamEvent] = []
        if self._is_quiet():  # nothing to hear: drop it, unconfirmed words included
            self._agreement.forget_partial()
            self._hypothesis = []
            keep = 0 if final else min(len(self._buffer), round(SPEECH_PAD_S * SAMPLE_RATE))
            self._cut(len(self._buffer) - keep, len(self._agreement.in_buffer), silent=True)
        else:
            hypothesis = self._transcribe(final)
            self._updates += 1
            confirmed = []
            if hypothesis is None:  # failed Whisper's checks: keep the previous partial, wait
                self._rejected += 1
                # Without the prompt next time: a prompt that ends in a repetition makes every
                # later decode repeat it, and the stream would confirm nothing more (Whisper
                # resets its prompt after a decode that failed its checks at low temperatures).
                self._prompt = ""
            else:
                self._hypothesis = hypothesis
                confirmed = self._agreement.update(
                    hypothesis, self._now(), self._now() - self.options.policy.lookahead_s
                )
            if final:
                confirmed += self._agreement.confirm_partial()
            if confirmed:
                events.append(self._confirmed_event(confirmed))
            if final:
                self._cut(len(self._buffer), len(self._agreement.in_buffer), silent=False)
            else:
                events += self._trim()
        partial = "".join(w.text for w in self._agreement.partial)
        if partial != self._last_partial:
            self._last_partial = partial
            words = tuple(self._agreement.partial)
            start, end = (words[0].start, words[-1].end) if words else (self._now(), self._now())
            events.append(StreamEvent(PARTIAL, start, end, partial, self._now(), words))
        return events

    def _transcribe(self, final: bool) -> list[Word] | None:
        """The buffer's words, or None when an update's decode failed Whisper's checks."""
        transcribe_options = self.options.decoding.transcribe_options(
            self._language,
            final,
            initial_prompt=self._prompt or None,
            silence_threshold_db=None,  # the stream gates the whole buffer itself
            max_new_tokens=TOKENS_BASE + math.ceil(TOKENS_PER_S * len(self._buffer) / SAMPLE_RATE),
        )
        segments, info = transcribe(self._runtime, self._tokenizer, self._buffer, transcribe_options)
        offset = self._buffer_start / SAMPLE_RATE
        limit = self._now()
        words: list[Word] = []
        for index, segment in enumerate(segments):
            if not final and fails_checks(segment, transcribe_options):
                return None  # a repetition loop or an unsure decode is not a hypothesis
            if segment.words is not None:  # measured word times (word_timestamps)
                words += [
                    Word(min(offset + w.start, limit), min(offset + w.end, limit), w.word, index, w.probability)
                    for w in segment.words
                ]
                continue
            start, end = min(offset + segment.start, limit), min(offset + segment.end, limit)
            words += split_words(segment.text, start, end, index, self._token_spans(segment))
        if self._language is None and words:
            self._language = info.language  # keep the language once something was heard in it
        return words

    def _token_spans(self, segment: Segment) -> list[tuple[int, float]]:
        """Where each text token of the segment ends in its text, with its log-probability."""
        spans, tokens = [], []
        for token, logprob in zip(segment.tokens, segment.token_logprobs, strict=True):
            if token < self._tokenizer.eot:
                tokens.append(token)  # a multi-byte character's first tokens decode to placeholders
                spans.append((len(self._tokenizer.decode(tokens)), logprob))
        return spans

    def _confirmed_event(self, words: list[Word]) -> StreamEvent:
        # Word times are re-estimated at every update; keep the confirmed timeline monotonic.
        start = max(words[0].start, self._confirmed_until)
        self._confirmed_until = max(words[-1].end, start)
        text = "".join(w.text for w in words)
        return StreamEvent(CONFIRMED, start, self._confirmed_until, text, self._now(), tuple(words))

    def _trim(self) -> list[StreamEvent]:
        """Keep the buffer short: cut at a confirmed segment end, or by force at the hard limit."""
        length_s = len(self._buffer) / SAMPLE_RATE
        if length_s <= self.options.policy.trim_after_s:
            return []
        confirmed = len(self._agreement.in_buffer)
        # The end of a segment that is followed by another is a reliable cut; the last segment's
        # end is not (its audio may still be growing). Only where the hypothesis starts with the
        # confirmed words: one that skipped their audio would have its first words cut for them.
        best: int | None = None
        aligned = self._hypothesis[:confirmed] == self._agreement.in_buffer
        for word_count in range(1, min(confirmed, len(self._hypothesis) - 1) + 1 if aligned else 0):
            word, following = self._hypothesis[word_count - 1], self._hypothesis[word_count]
            if following.segment != word.segment:
                best = word_count
        if best is not None:
            self._cut_at(plausible_end(self._hypothesis, best - 1), best)
            return []
        if length_s <= self.options.policy.max_buffer_s:
            return []
        events: list[StreamEvent] = []
        if not confirmed and self._agreement.partial:
            forced = self._agreement.confirm_partial()  # nothing agreed in a whole buffer: take the latest
            events.append(self._confirmed_event(forced))
            confirmed = len(self._agreement.in_buffer)
        if confirmed:
            self._cut_at(plausible_end(self._agreement.in_buffer, confirmed - 1), confirmed)
        else:  # the model heard no words in all of it
            self._cut(len(self._buffer) - round(NO_SPEECH_KEEP_S * SAMPLE_RATE), 0, silent=False)
        return events

    def _cut_at(self, time_s: float, confirmed_words: int) -> None:
        samples = round(time_s * SAMPLE_RATE) - self._buffer_start
        self._cut(min(max(samples, 0), len(self._buffer)), confirmed_words, silent=False)

    def _cut(self, samples: int, confirmed_words: int, silent: bool) -> None:
        """Drop the buffer's first ``samples`` and its first confirmed words (they join the prompt)."""
        self._buffer = self._buffer[samples:].copy()
        self._buffer_start += samples
        if silent:
            self._silent += samples
        else:
            self._transcribed += samples
        removed = self._agreement.cut(confirmed_words)
        self._hypothesis = self._hypothesis[confirmed_words:]
        if removed:
            prompt = self._prompt + "".join(w.text for w in removed)
            if len(prompt) > PROMPT_CHARS:
                prompt = prompt[-PROMPT_CHARS:]
                prompt = prompt[prompt.find(" ") :] if " " in prompt else prompt
            self._prompt = prompt


def local_agreement(options: StreamOptions, kind: type[LocalAgreement] = LocalAgreement) -> LocalAgreement:
    """The agreement rule the options' policy describes."""
    policy = options.policy
    return kind(policy.agreement, policy.unsure_probability, policy.unsure_hold_s, policy.agreement_span_s)


def plausible_end(words: list[Word], index: int) -> float:
    """The end of ``words[index]``, or earlier if its segment claims more time than its letters need."""
    word = words[index]
    segment = [w for w in words[: index + 1] if w.segment == word.segment]
    letters = sum(len(w.key) for w in segment)
    return min(word.end, segment[0].start + letters * MAX_SECONDS_PER_LETTER)


def stream_chunks(
    model: WhisperModel,
    chunks: Iterable[np.ndarray | bytes],
    options: StreamOptions | None = None,
    audio_format: AudioFormat | None = None,
) -> Iterator[StreamEvent]:
    """Events for a chunk source (a file read piece by piece, a socket, a queue), then the flush."""
    stream = TranscriptionStream(model, options, audio_format)
    for chunk in chunks:
        yield from stream.feed(chunk)
    yield from stream.finish()


async def astream_chunks(
    model: WhisperModel,
    chunks: AsyncIterable[np.ndarray | bytes],
    options: StreamOptions | None = None,
    audio_format: AudioFormat | None = None,
) -> AsyncIterator[StreamEvent]:
    """``stream_chunks`` for asyncio: inference runs in a worker thread, the loop stays free."""
    stream = TranscriptionStream(model, options, audio_format)
    async for chunk in chunks:
        for event in await stream.afeed(chunk):
            yield event
    for event in await stream.afinish():
        yield event


def confirmed_text(events: Iterable[StreamEvent]) -> str:
    """The transcript the confirmed events add up to."""
    return "".join(e.text for e in events if e.kind == CONFIRMED).strip()
