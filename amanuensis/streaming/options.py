"""What a stream is told: how each update decodes, when a word is confirmed, what counts as speech.

Three groups, each default written once: ``StreamDecoding`` (Whisper's checks take their
thresholds from ``TranscribeOptions``), ``AgreementPolicy`` and ``VadOptions``. A field that has a
command-line flag carries it in its metadata (``flag``, ``help``); ``amanuensis.cli.flags`` makes
the ``stream`` command's and the tools' flags from it, so none is spelled twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from amanuensis.errors import OptionsError
from amanuensis.transcribe import DEFAULT_TEMPERATURES, TranscribeOptions
from amanuensis.vad import DEFAULT_THRESHOLD

WINDOW_S = 30.0  # seconds the encoder sees: the buffer must stay shorter
VAD_CHOICES = ("silero", None)
_OFFLINE = TranscribeOptions()  # the offline defaults the stream's checks share


def flag(name: str, help_text: str, default: Any) -> Any:
    """A field with a command-line flag (see amanuensis.cli.flags)."""
    return field(default=default, metadata={"flag": name, "help": help_text})


@dataclass(frozen=True)
class StreamDecoding:
    """How one buffer is decoded."""

    language: str | None = None  # None: English for .en models, detected at the first words otherwise
    task: str = "transcribe"  # or "translate" (multilingual models)
    beam_size: int | None = None  # None/1 = greedy, so an update fits in the interval on a CPU
    # Fallback ladder of an update. A hypothesis that fails Whisper's checks at its last
    # temperature (too repetitive, too unsure) is not used: the next update tries again.
    temperatures: tuple[float, ...] = (0.0,)
    # Ladder of the final decode at finish(), whose text is confirmed as it is: it gets
    # Whisper's full fallback, as an offline transcription would.
    finish_temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    no_speech_threshold: float | None = _OFFLINE.no_speech_threshold  # Whisper's no-speech rule
    logprob_threshold: float | None = _OFFLINE.logprob_threshold  # below: the hypothesis is unsure
    compression_ratio_threshold: float | None = _OFFLINE.compression_ratio_threshold  # above: a loop
    # Each word's time from the alignment heads (amanuensis.timing); False: its segment's span
    # shared out by characters, which saves one alignment-graph run per update.
    word_timestamps: bool = True

    def transcribe_options(self, language: str | None, final: bool = True, **overrides: Any) -> TranscribeOptions:
        """How one buffer is decoded: an update's, or the final one's (offline comparisons use that)."""
        return TranscribeOptions(
            language=language,
            task=self.task,
            beam_size=self.beam_size,
            temperatures=self.finish_temperatures if final else self.temperatures,
            no_speech_threshold=self.no_speech_threshold,
            logprob_threshold=self.logprob_threshold,
            compression_ratio_threshold=self.compression_ratio_threshold,
            word_timestamps=self.word_timestamps,
            **overrides,
        )


@dataclass(frozen=True)
class AgreementPolicy:
    """When a word is confirmed, and when the buffer is cut (LocalAgreement-n with holds)."""

    update_interval_s: float = flag(
        "--update-interval", "seconds of new audio between updates; must exceed an update's compute time", 0.375
    )
    agreement: int = flag(
        "--agreement",
        "consecutive updates that must agree on a word before it is confirmed (more: later, closer to an "
        "offline transcription; with the default interval and span, three agree already)",
        2,
    )
    # Every hypothesis over at least this many seconds of audio must agree on a word as well
    # (0 = off): readings made a moment apart share their mistakes. With 0.375 s updates, a
    # word is confirmed up to 0.375 s sooner than with 0.75 s updates and no span, and is read
    # over as much audio.
    agreement_span_s: float = flag(
        "--agreement-span",
        "seconds of audio over which every update must also agree on a word (0: only --agreement consecutive updates)",
        0.75,
    )
    # A word the model is unsure of (names, rare words, noise) must be read the same by every
    # hypothesis over at least unsure_hold_s seconds of audio. 0 = off.
    unsure_probability: float = flag(
        "--unsure-probability",
        "a word the model gives less probability than this in either of the latest two updates must be read "
        "the same for --unsure-hold seconds (0: every word needs only --agreement updates)",
        0.4,
    )
    unsure_hold_s: float = flag(
        "--unsure-hold", "seconds of audio over which every update must read an unsure word the same", 3.0
    )
    lookahead_s: float = flag(
        "--lookahead", "seconds of audio that must follow a word (by its estimated end) before it is confirmed", 0.5
    )
    trim_after_s: float = flag(
        "--trim-after", "seconds of buffer after which it is cut at the end of its last confirmed segment", 20.0
    )
    max_buffer_s: float = 25.0  # hard limit (< 30 s window): cut at the last confirmed word

    def __post_init__(self) -> None:
        if self.update_interval_s <= 0:
            raise OptionsError("update_interval_s must be positive")
        if self.agreement < 2:
            raise OptionsError(f"agreement needs at least 2 hypotheses, got {self.agreement}")
        if not 0 <= self.unsure_probability <= 1:
            raise OptionsError("unsure_probability is a probability (0 … 1)")
        if self.unsure_hold_s < 0 or self.agreement_span_s < 0:
            raise OptionsError("unsure_hold_s and agreement_span_s must not be negative")
        if not 0 < self.trim_after_s <= self.max_buffer_s < WINDOW_S - self.update_interval_s:
            raise OptionsError(
                f"need 0 < trim_after_s ≤ max_buffer_s < {WINDOW_S:.0f} s − update_interval_s "
                f"(got {self.trim_after_s}, {self.max_buffer_s}, {self.update_interval_s})"
            )


@dataclass(frozen=True)
class VadOptions:
    """What is not decoded at all."""

    # A buffer whose loudest 25 ms frame is quieter than this (dBFS) is silence: it is not
    # decoded and is dropped. None = no energy gate.
    silence_threshold_db: float | None = _OFFLINE.silence_threshold_db
    # "silero": a buffer in which Silero VAD hears no speech is not decoded either (noise,
    # music, room tone: Whisper invents words for them). None = the energy gate alone.
    model: str | None = "silero"
    threshold: float = DEFAULT_THRESHOLD  # speech probability of a 32 ms window that counts as speech

    def __post_init__(self) -> None:
        if self.model not in VAD_CHOICES:
            raise OptionsError(f"the VAD model must be 'silero' or None, got {self.model!r}")


@dataclass(frozen=True)
class StreamOptions:
    decoding: StreamDecoding = field(default_factory=StreamDecoding)  # how each update decodes
    policy: AgreementPolicy = field(default_factory=AgreementPolicy)  # when words are confirmed, buffers cut
    vad: VadOptions = field(default_factory=VadOptions)  # what is not decoded

    def with_language(self, language: str | None, task: str | None = None) -> StreamOptions:
        """These options for another language (and task)."""
        return replace(self, decoding=replace(self.decoding, language=language, task=task or self.decoding.task))
