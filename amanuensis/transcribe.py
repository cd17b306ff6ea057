"""Long-form transcription: sequential 30 s windows with timestamp seeking.

Follows openai/whisper's ``transcribe``: each window is decoded with a temperature fallback
ladder, cut into segments at timestamp pairs, and the next window starts at the last
complete timestamp. Segments are produced lazily, as faster-whisper does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from amanuensis.aligner import aligner_for
from amanuensis.audio import (
    FRAMES_PER_SECOND,
    HOP_LENGTH,
    N_FRAMES,
    N_SAMPLES,
    N_SAMPLES_PER_TOKEN,
    SAMPLE_RATE,
    LogMelWindows,
    Samples,
    pad_or_trim,
    peak_frame_dbfs,
    read_samples,
)
from amanuensis.decoding import DecodingOptions, DecodingResult, decode_window, detect_language, longest_run
from amanuensis.errors import OptionsError
from amanuensis.runtime import ModelRuntime
from amanuensis.timing import Word, hallucination_cut, window_words
from amanuensis.tokenizer import TIMESTAMP_PRECISION_S, Tokenizer
from amanuensis.vad import TimeMap, VadFilter, speech_spans

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
INPUT_STRIDE = N_SAMPLES_PER_TOKEN // HOP_LENGTH  # mel frames per timestamp step (2)
WINDOW_PADDINGS = ("silence", "zeros")


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: English for .en models, detected otherwise
    task: str = "transcribe"  # or "translate" (multilingual models)
    beam_size: int | None = 5  # beams at temperature 0; None or 1 = greedy
    best_of: int | None = 5  # samples per window when falling back to temperature > 0
    patience: float | None = None  # beam search patience (1.0 when None)
    length_penalty: float | None = None  # see DecodingOptions
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES  # fallback ladder
    compression_ratio_threshold: float | None = 2.4  # above: output is repetitive, retry hotter
    # A phrase of up to 8 words said this many times in a row is a loop too: retry hotter. The
    # compression ratio misses short loops ("with the picture," ×12 measured 2.36). None = off.
    repetition_threshold: int | None = 5
    logprob_threshold: float | None = -1.0  # below: output is unsure, retry hotter
    no_speech_threshold: float | None = 0.6  # above (and unsure): the window is silence
    condition_on_previous_text: bool = True  # prompt each window with the text so far
    initial_prompt: str | None = None  # text to prime the first window with
    suppress_tokens: tuple[int, ...] = (-1,)  # see DecodingOptions
    suppress_blank: bool = True  # see DecodingOptions
    without_timestamps: bool = False  # one segment per window, no timestamp tokens
    max_initial_timestamp: float | None = 1.0  # seconds
    max_new_tokens: int | None = None  # tokens sampled per window at most (None: half the text context, 224)
    # What fills a window past the end of the audio. "silence": the log-mel of silent audio,
    # as openai/whisper does; "zeros": zero-valued features, as faster-whisper does.
    window_padding: str = "silence"
    # Windows whose loudest 25 ms frame is quieter than this (dBFS) are silence: skipped
    # without decoding, since Whisper invents words ("you") for digital silence. None = off.
    silence_threshold_db: float | None = -60.0
    # Transcribe only the speech Silero VAD finds (faster-whisper's vad_filter): Whisper stamps
    # speech that follows a long stretch of noise from the start of its window, and writes
    # " ." for noise it is sure is not speech. Segment times stay those of the input. None = off.
    vad_filter: VadFilter | None = None
    # Each segment's words with their own start and end (Segment.words), read from the alignment
    # heads' cross-attention by Whisper's DTW method (amanuensis.timing); segment times follow them.
    word_timestamps: bool = False
    # With word timestamps: a doubtful segment (improbable, too short or too long words) with more
    # than this many seconds of silence around it is dropped and the silence skipped, as
    # faster-whisper's option of the same name does (hallucinations live in silence). None = off.
    hallucination_silence_threshold: float | None = None

    def __post_init__(self) -> None:
        if not self.temperatures:
            raise OptionsError("temperatures needs at least one value (0 for greedy or beam search)")
        if any(not math.isfinite(t) or t < 0 for t in self.temperatures):
            raise OptionsError(f"temperatures must be finite and not negative, got {self.temperatures}")
        if (self.beam_size is not None and self.beam_size < 1) or (self.best_of is not None and self.best_of < 1):
            raise OptionsError("beam_size and best_of must be at least 1")
        if self.patience is not None and self.patience <= 0:
            raise OptionsError("patience must be positive")
        if self.hallucination_silence_threshold is not None and not self.word_timestamps:
            raise OptionsError("hallucination_silence_threshold needs word_timestamps")
        if self.repetition_threshold is not None and self.repetition_threshold < 2:
            raise OptionsError("repetition_threshold must be at least 2 (or None)")
        if any(t < -1 for t in self.suppress_tokens):
            raise OptionsError(
                f"suppress_tokens are token ids (or -1 for the non-speech set), got {self.suppress_tokens}"
            )


# A window with less audio than this (0.1 s, shorter than a syllable) is not decoded: on so little
# Whisper writes a stock phrase ("Thank you."). whisper.cpp refuses input under 100 ms likewise.
MIN_WINDOW_FRAMES = 10


@dataclass(frozen=True)
class Segment:
    id: int  # position in the transcript
    seek: int  # mel frame where its window started
    start: float  # seconds
    end: float  # seconds
    text: str
    tokens: list[int]  # text and timestamp tokens
    token_logprobs: list[float]  # log-probability of each of ``tokens`` when it was sampled
    temperature: float  # temperature of the accepted decode
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None  # with word_timestamps: its words, in order, covering its text


@dataclass
class TranscriptionInfo:
    language: str
    language_probability: float  # 1.0 when the language was given or the model is English-only
    duration: float  # seconds of audio
    language_probs: dict[str, float] = field(default_factory=dict)


ProgressCallback = Callable[[int, int], None]  # (frames done, frames total)


def fails_checks(result: DecodingResult | Segment, options: TranscribeOptions) -> bool:
    """Whisper's fallback rule: a repetition loop or an unsure decode is retried hotter."""
    ratio_limit = options.compression_ratio_threshold
    too_repetitive = ratio_limit is not None and result.compression_ratio > ratio_limit
    runs = options.repetition_threshold
    too_repetitive = too_repetitive or (runs is not None and longest_run(result.text) >= runs)
    too_unsure = options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold
    return too_repetitive or too_unsure


def _decode_with_fallback(
    runtime: ModelRuntime, tokenizer: Tokenizer, cross, base: DecodingOptions,
    options: TranscribeOptions, language: str,
) -> DecodingResult:  # fmt: skip
    result: DecodingResult | None = None
    for temperature in options.temperatures:
        if temperature > 0:
            attempt = replace(base, temperature=temperature, best_of=options.best_of, beam_size=None)
        else:
            beam = options.beam_size if options.beam_size and options.beam_size > 1 else None
            attempt = replace(base, temperature=0.0, best_of=None, beam_size=beam, patience=options.patience)
        result = decode_window(runtime, tokenizer, cross, attempt, language)
        too_unsure = options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold
        is_silence = (
            options.no_speech_threshold is not None
            and result.no_speech_prob > options.no_speech_threshold
            and too_unsure
        )
        if is_silence or not fails_checks(result, options):
            break
    assert result is not None, "temperatures must not be empty"
    return result


def _is_quiet(window_samples: np.ndarray, options: TranscribeOptions) -> bool:
    threshold = options.silence_threshold_db
    return threshold is not None and peak_frame_dbfs(window_samples) < threshold


def _is_no_speech(result: DecodingResult, options: TranscribeOptions) -> bool:
    """Whisper's rule: likely no speech, and the decoded text is not confident either."""
    if options.no_speech_threshold is None or result.no_speech_prob <= options.no_speech_threshold:
        return False
    return options.logprob_threshold is None or result.avg_logprob <= options.logprob_threshold


def _ends_on_single_timestamp(tokens: list[int], begin: int) -> bool:
    """The window's last segment is closed by one timestamp: its speech runs on into the next window."""
    return [t >= begin for t in tokens[-2:]] == [False, True]


def _split_segments(
    tokens: list[int], begin: int, time_offset: float, window_frames: int
) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Cut a window's tokens at timestamp pairs; returns (start, end, tokens) and frames to seek."""
    is_stamp = [t >= begin for t in tokens]
    single_timestamp_ending = _ends_on_single_timestamp(tokens, begin)
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_stamp[i] and is_stamp[i + 1]]
    pieces: list[tuple[float, float, list[int]]] = []
    if consecutive:
        cuts = consecutive + ([len(tokens)] if single_timestamp_ending else [])
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            start = time_offset + (piece[0] - begin) * TIMESTAMP_PRECISION_S
            end = time_offset + (piece[-1] - begin) * TIMESTAMP_PRECISION_S
            pieces.append((start, end, piece))
            last = cut
        if single_timestamp_ending:
            return pieces, window_frames
        return pieces, (tokens[last - 1] - begin) * INPUT_STRIDE
    duration = window_frames / FRAMES_PER_SECOND
    stamps = [t for t in tokens if t >= begin]
    if stamps and stamps[-1] != begin:
        duration = (stamps[-1] - begin) * TIMESTAMP_PRECISION_S
    return [(time_offset, time_offset + duration, tokens)], window_frames


def check_language(tokenizer: Tokenizer, language: str | None, task: str) -> None:
    """Refuse a language or task the model cannot do, before any audio is processed."""
    if task == "translate" and not tokenizer.multilingual:
        raise OptionsError("translation needs a multilingual model (e.g. --model base)")
    if not tokenizer.multilingual and language not in (None, "en"):
        raise OptionsError(f"model is English-only; cannot use language '{language}'")
    if tokenizer.multilingual and language is not None:
        tokenizer.language_token(language)  # raises on an unknown code


def check_tokens(n_vocab: int, token_ids: tuple[int, ...]) -> None:
    """Refuse token ids outside the vocabulary before decoding indexes the logits with them."""
    outside = [t for t in token_ids if t >= n_vocab]
    if outside:
        raise OptionsError(f"token {outside[0]} is outside the vocabulary (ids 0–{n_vocab - 1})")


def transcribe(
    runtime: ModelRuntime,
    tokenizer: Tokenizer,
    samples: Samples,
    options: TranscribeOptions | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[Iterator[Segment], TranscriptionInfo]:
    """Start transcribing mono 16 kHz samples (an array, or a ``samples.SampleFile`` read a window at
    a time); segments are decoded as they are consumed."""
    options = options or TranscribeOptions()
    dims = runtime.checkpoint.dims
    check_language(tokenizer, options.language, options.task)
    check_tokens(dims.n_vocab, options.suppress_tokens)
    if options.window_padding not in WINDOW_PADDINGS:
        raise OptionsError(f"window_padding must be one of {', '.join(WINDOW_PADDINGS)}")
    duration = len(samples) / SAMPLE_RATE
    time_map = TimeMap([])
    if options.vad_filter is not None:
        spans = speech_spans(samples, options.vad_filter)
        if not spans:
            known = options.language is not None or not tokenizer.multilingual
            return iter(()), TranscriptionInfo(options.language or "en", 1.0 if known else 0.0, duration)
        time_map = TimeMap(spans)
        samples = np.concatenate([read_samples(samples, a, b) for a, b in spans])  # the speech only
    pad_samples = N_SAMPLES if options.window_padding == "silence" else HOP_LENGTH
    mel = LogMelWindows(samples, dims.n_mels, padding=pad_samples)  # one window at a time: bounded memory
    content_frames = len(samples) // HOP_LENGTH

    def window(seek: int) -> np.ndarray:
        frames = N_FRAMES if options.window_padding == "silence" else min(N_FRAMES, content_frames - seek)
        return pad_or_trim(mel.window(seek, frames))

    info = TranscriptionInfo("en", 1.0, duration)
    first_cross = None
    if tokenizer.multilingual:
        if options.language is None:
            first_cross = runtime.encoder(window(0))
            language, probs = detect_language(runtime, tokenizer, first_cross)
            info = TranscriptionInfo(language, probs[language], info.duration, probs)
        else:
            info.language = options.language

    def generate() -> Iterator[Segment]:
        nonlocal first_cross
        base = DecodingOptions(
            task=options.task,
            language=info.language,
            length_penalty=options.length_penalty,
            suppress_tokens=options.suppress_tokens,
            suppress_blank=options.suppress_blank,
            without_timestamps=options.without_timestamps,
            max_initial_timestamp=options.max_initial_timestamp,
            sample_len=options.max_new_tokens,
        )
        all_tokens: list[int] = []
        if options.initial_prompt:
            all_tokens.extend(tokenizer.encode(" " + options.initial_prompt.strip()))
        prompt_reset_since = 0
        seek = 0
        segment_id = 0
        last_speech_end = 0.0  # with word timestamps: where the last word ended (seconds)
        while seek < content_frames:
            time_offset = seek * HOP_LENGTH / SAMPLE_RATE
            window_frames = min(N_FRAMES, content_frames - seek)
            window_samples = read_samples(samples, seek * HOP_LENGTH, (seek + window_frames) * HOP_LENGTH)
            result = None
            if window_frames >= MIN_WINDOW_FRAMES and not _is_quiet(window_samples, options):
                cross = first_cross if seek == 0 and first_cross is not None else runtime.encoder(window(seek))
                window_options = replace(base, prompt=tuple(all_tokens[prompt_reset_since:]))
                result = _decode_with_fallback(runtime, tokenizer, cross, window_options, options, info.language)
            first_cross = None
            if result is None or _is_no_speech(result, options):
                seek += window_frames  # silence: skip the whole window
                if progress:
                    progress(min(seek, content_frames), content_frames)
                continue
            pieces, advance = _split_segments(result.tokens, tokenizer.timestamp_begin, time_offset, window_frames)
            window_start = seek
            seek += advance
            first_token = 0  # pieces are consecutive runs of the window's tokens
            kept = []  # (start, end, tokens, log-probabilities) of the window's segments with text
            texts = []
            for start, end, piece in pieces:
                logprobs = result.token_logprobs[first_token : first_token + len(piece)]
                first_token += len(piece)
                text = tokenizer.decode(piece)
                if start != end and text.strip():
                    kept.append((start, end, piece, logprobs))
                    texts.append(text)
            words: list[list[Word] | None] = [None] * len(kept)
            if options.word_timestamps and kept:
                sot = tokenizer.sot_sequence(info.language, options.task)
                timed, speech_end = window_words(
                    aligner_for(runtime), tokenizer, cross, sot, kept, window_frames, info.language,
                    time_offset, last_speech_end,
                )  # fmt: skip
                last_word_end = next((t.words[-1].end for t in reversed(timed) if t.words), None)
                if (
                    last_word_end is not None
                    and last_word_end > time_offset
                    and not _ends_on_single_timestamp(result.tokens, tokenizer.timestamp_begin)
                ):  # the next window starts where the last word ended, not at the last timestamp token
                    seek = round(last_word_end * FRAMES_PER_SECOND)
                threshold = options.hallucination_silence_threshold
                window_end = time_offset + window_frames / FRAMES_PER_SECOND
                audio_end = content_frames / FRAMES_PER_SECOND
                cut = None if threshold is None else hallucination_cut(
                    timed, threshold, time_offset, window_end, audio_end, last_speech_end
                )  # fmt: skip
                if cut is not None:  # drop the doubtful segment and what follows; go on after its silence
                    keep, resume = cut
                    timed, kept, texts = timed[:keep], kept[:keep], texts[:keep]
                    seek = max(window_start + 1, round(resume * FRAMES_PER_SECOND))
                    speech_end = timed[-1].end if timed else last_speech_end
                last_speech_end = speech_end
                kept = [(t.start, t.end, p, lp) for t, (_, _, p, lp) in zip(timed, kept, strict=True)]
                words = [[_original_word(w, time_map) for w in t.words] for t in timed]
            for (start, end, piece, logprobs), text, segment_words in zip(kept, texts, words, strict=True):
                all_tokens.extend(piece)
                start, end = time_map.original(start), time_map.original(end, is_end=True)
                yield Segment(
                    id=segment_id, seek=window_start, start=round(start, 3), end=round(end, 3),
                    text=text, tokens=piece, token_logprobs=logprobs,
                    temperature=result.temperature, avg_logprob=result.avg_logprob,
                    compression_ratio=result.compression_ratio, no_speech_prob=result.no_speech_prob,
                    words=segment_words,
                )  # fmt: skip
                segment_id += 1
            if not options.condition_on_previous_text or result.temperature > 0.5:
                prompt_reset_since = len(all_tokens)
            if progress:
                progress(min(seek, content_frames), content_frames)

    return generate(), info


def _original_word(word: Word, time_map: TimeMap) -> Word:
    """A word's times on the input's clock (they differ where the VAD filter cut silence out)."""
    return replace(word, start=round(time_map.original(word.start), 3), end=round(time_map.original(word.end, True), 3))
