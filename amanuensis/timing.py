"""Word timestamps from cross-attention, by openai/whisper's method.

The alignment heads' attention of each text token over the audio frames is normalised per head,
smoothed along time with a median filter, averaged over heads, and a monotonic path through
tokens × frames is found by dynamic time warping (DTW). A word starts at the frame where its first
token's row of the path begins and ends where the next word's begins. Tokens are grouped into words
by spaces (or by character for languages written without them), punctuation is attached to its
neighbour, and implausibly long words at pauses and segment edges are shortened.
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass

import numpy as np

from amanuensis.aligner import Aligner
from amanuensis.tokenizer import Tokenizer

FRAMES_PER_SECOND = 50  # encoder output frames (cross-attention columns) per second of audio
MEDIAN_FILTER_WIDTH = 7  # frames
# openai/whisper's defaults: attached to the following word …
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
# … and to the preceding one
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_ENDS = ".。!！?？"
MAX_MEDIAN_WORD_SECONDS = 0.7  # a longer median word duration is taken to be this
# languages whose text has no spaces between words: split into characters (Unicode-whole tokens)
UNSPACED_LANGUAGES = {"zh", "ja", "th", "lo", "my", "yue"}


@dataclass(frozen=True)
class Word:
    word: str  # as it appears in the segment's text, with its leading space
    start: float  # seconds
    end: float  # seconds
    probability: float  # mean probability of its tokens when they were decoded


@dataclass
class _Timing:
    word: str
    tokens: list[int]
    start: float  # seconds from the window's start
    end: float
    probability: float


def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Running median along the last axis, the edges padded by reflection (width odd)."""
    half = width // 2
    if x.shape[-1] <= half:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.partition(windows, half, axis=-1)[..., half]


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path from (0, 0) to the last cell, moving one row, one column or
    both per step; returns its (row, column) indices.

    Each row is solved at once: with ``a[j]`` the cheaper of the two cells above, the row's
    accumulated cost is ``x[j] = c[j] + min(a[j], x[j-1])``, which unrolls into a running minimum
    over the row's prefix sums, so only the rows loop in Python.
    """
    rows, cols = cost.shape
    acc = np.full((rows + 1, cols + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, rows + 1):
        above = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])  # diagonal or straight down, per column
        sums = np.concatenate([[0.0], np.cumsum(cost[i - 1])])
        acc[i, 1:] = sums[1:] + np.minimum.accumulate(above - sums[:-1])
    # Trace back from the end: the strictly cheapest of diagonal and up, else left (Whisper's rule).
    i, j = rows, cols
    path_rows, path_cols = [], []
    while i > 0 and j > 0:
        path_rows.append(i - 1)
        path_cols.append(j - 1)
        diagonal, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if diagonal < up and diagonal < left:
            i, j = i - 1, j - 1
        elif up < diagonal and up < left:
            i -= 1
        else:
            j -= 1
    return np.array(path_rows[::-1]), np.array(path_cols[::-1])


def _split_on_unicode(tokenizer: Tokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Group tokens so each group decodes to whole characters (a character may span tokens)."""
    words, groups, current = [], [], []
    for token in tokens:
        current.append(token)
        text = tokenizer.decode(current) if token < tokenizer.eot else "<|endoftext|>"
        if "\ufffd" not in text:
            words.append(text)
            groups.append(current)
            current = []
    if current:  # an incomplete character at the very end
        words.append(tokenizer.decode(current))
        groups.append(current)
    return words, groups


def split_words(tokenizer: Tokenizer, tokens: list[int], language: str) -> tuple[list[str], list[list[int]]]:
    """Words and their tokens: by character for unspaced languages, else a new word at each
    leading space or punctuation mark."""
    pieces, groups = _split_on_unicode(tokenizer, tokens)
    if language in UNSPACED_LANGUAGES:
        return pieces, groups
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, group in zip(pieces, groups, strict=True):
        starts_word = group[0] >= tokenizer.eot or piece.startswith(" ") or piece.strip() in string.punctuation
        if starts_word or not words:
            words.append(piece)
            word_tokens.append(list(group))
        else:
            words[-1] += piece
            word_tokens[-1].extend(group)
    return words, word_tokens


def merge_punctuations(timings: list[_Timing]) -> None:
    """Attach opening marks to the word after them and closing marks to the word before, in place
    (the emptied entries keep their place with no text)."""
    following = len(timings) - 1
    for i in range(len(timings) - 2, -1, -1):
        previous = timings[i]
        if previous.word.startswith(" ") and previous.word.strip() in PREPEND_PUNCTUATIONS:
            target = timings[following]
            target.word, target.tokens = previous.word + target.word, previous.tokens + target.tokens
            previous.word, previous.tokens = "", []
        else:
            following = i
    preceding = 0
    for i in range(1, len(timings)):
        current = timings[i]
        target = timings[preceding]
        if not target.word.endswith(" ") and current.word in APPEND_PUNCTUATIONS:
            target.word, target.tokens = target.word + current.word, target.tokens + current.tokens
            current.word, current.tokens = "", []
        else:
            preceding = i


def find_alignment(
    aligner: Aligner,
    tokenizer: Tokenizer,
    cross,
    sot_sequence: list[int],
    text_tokens: list[int],
    token_probabilities: list[float],
    frames: int,
    language: str,
) -> list[_Timing]:
    """Word timings (seconds from the window's start) for a window's text tokens; ``frames`` is
    the number of mel frames of real audio in the window."""
    tokens = [*sot_sequence, tokenizer.no_timestamps, *text_tokens, tokenizer.eot]
    scores = aligner.scores(tokens, cross)[:, :, : max(1, frames // 2)].astype(np.float64)
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    weights = (weights - weights.mean(axis=-2, keepdims=True)) / (weights.std(axis=-2, keepdims=True) + 1e-10)
    weights = median_filter(weights, MEDIAN_FILTER_WIDTH)
    # rows from <|notimestamps|> (whose output is the first text token) to the last text token
    matrix = weights.mean(axis=0)[len(sot_sequence) : -1]
    text_indices, time_indices = dtw(-matrix)

    words, word_tokens = split_words(tokenizer, [*text_tokens, tokenizer.eot], language)
    if len(word_tokens) <= 1:
        return []
    boundaries = np.concatenate([[0], np.cumsum([len(t) for t in word_tokens[:-1]])])
    jumps = np.concatenate([[True], np.diff(text_indices) > 0])
    jump_times = time_indices[jumps] / FRAMES_PER_SECOND
    starts, ends = jump_times[boundaries[:-1]], jump_times[boundaries[1:]]
    probabilities = [float(np.mean(token_probabilities[a:b])) for a, b in itertools.pairwise(boundaries)]
    timed = zip(words[:-1], word_tokens[:-1], starts, ends, probabilities, strict=True)  # the last is <|endoftext|>
    return [_Timing(word, list(group), float(a), float(b), p) for word, group, a, b, p in timed]


@dataclass(frozen=True)
class TimedSegment:
    """A segment's times after alignment, and its words (seconds from the start of the audio)."""

    start: float
    end: float
    words: list[Word]


def window_words(
    aligner: Aligner,
    tokenizer: Tokenizer,
    cross,
    sot_sequence: list[int],
    segments: list[tuple[float, float, list[int], list[float]]],
    frames: int,
    language: str,
    time_offset: float,
    last_speech_end: float,
) -> tuple[list[TimedSegment], float]:
    """Words of a window's segments, given as (start, end, tokens, token log-probabilities) in
    seconds from the start of the audio; returns each segment's times and words, and the end of
    the last speech (for the next window's pause rule)."""
    per_segment = [[t for t in tokens if t < tokenizer.eot] for _, _, tokens, _ in segments]
    probabilities = [
        float(np.exp(lp))
        for _, _, tokens, logprobs in segments
        for t, lp in zip(tokens, logprobs, strict=True)
        if t < tokenizer.eot
    ]
    text_tokens = [t for tokens in per_segment for t in tokens]
    timings = find_alignment(aligner, tokenizer, cross, sot_sequence, text_tokens, probabilities, frames, language)
    durations = np.array([t.end - t.start for t in timings])
    durations = durations[durations.nonzero()]
    median = min(MAX_MEDIAN_WORD_SECONDS, float(np.median(durations))) if len(durations) else 0.0
    longest = median * 2
    if len(durations):  # a word spanning a pause is cut at a sentence end beside it
        for i in range(1, len(timings)):
            if timings[i].end - timings[i].start > longest:
                if timings[i].word in SENTENCE_ENDS:
                    timings[i].end = timings[i].start + longest
                elif timings[i - 1].word in SENTENCE_ENDS:
                    timings[i].start = timings[i].end - longest
    merge_punctuations(timings)

    timed: list[TimedSegment] = []
    index = 0
    for (start, end, _, _), tokens in zip(segments, per_segment, strict=True):
        words: list[list] = []  # [word, start, end, probability], adjusted below
        covered = 0
        while index < len(timings) and covered < len(tokens):
            timing = timings[index]
            if timing.word:
                words.append(
                    [timing.word, round(time_offset + timing.start, 2), round(time_offset + timing.end, 2),
                     timing.probability]
                )  # fmt: skip
            covered += len(timing.tokens)
            index += 1
        if words:
            start, end = _trim_edges(words, start, end, median, longest, last_speech_end)
            last_speech_end = end
        timed.append(TimedSegment(start, end, _monotonic(words, start, end)))
    return timed, last_speech_end


def _trim_edges(
    words: list[list], start: float, end: float, median: float, longest: float, last_speech_end: float
) -> tuple[float, float]:
    """Whisper's clean-ups at a segment's edges, in place: a first word after a pause is not
    longer than twice the median word; the segment's own start and end win over a first or last
    word that overhangs them by more than half a second. Returns the segment's start and end."""
    first = words[0]
    after_pause = first[2] - last_speech_end > median * 4
    too_long = first[2] - first[1] > longest or (len(words) > 1 and words[1][2] - first[1] > longest * 2)
    if after_pause and too_long:
        if len(words) > 1 and words[1][2] - words[1][1] > longest:
            boundary = max(words[1][2] / 2, words[1][2] - longest)
            first[2] = words[1][1] = boundary
        first[1] = max(0.0, first[2] - longest)
    if start < first[2] and start - 0.5 > first[1]:
        first[1] = max(0.0, min(first[2] - median, start))
    else:
        start = first[1]
    last = words[-1]
    if end > last[1] and end + 0.5 < last[2]:
        last[2] = max(last[1] + median, end)
    else:
        end = last[2]
    return start, end


def _monotonic(words: list[list], start: float, end: float) -> list[Word]:
    """The words with times made non-decreasing and inside [start, end] (the clean-ups can cross)."""
    result = []
    previous_end = start
    for word, word_start, word_end, probability in words:
        word_start = min(max(word_start, previous_end), end)
        word_end = min(max(word_end, word_start), end)
        result.append(Word(word, round(word_start, 3), round(word_end, 3), round(probability, 4)))
        previous_end = word_end
    return result


# Punctuation marks that do not count as words when judging a segment (PREPEND + APPEND).
_MARKS = set(PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS)


def _word_anomaly(word: Word) -> float:
    """How unlike spoken words a word looks: improbable, far too short or far too long."""
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def is_anomalous(segment: TimedSegment | None) -> bool:
    """A segment whose first words look like a hallucination (faster-whisper's rule)."""
    if segment is None or not segment.words:
        return False
    words = [w for w in segment.words if w.word.strip() not in _MARKS][:8]
    score = sum(_word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def hallucination_cut(
    segments: list[TimedSegment],
    threshold: float,
    window_start: float,
    window_end: float,
    audio_end: float,
    last_speech_end: float,
) -> tuple[int, float] | None:
    """Where a window's suspicious segment surrounded by silence (gaps over ``threshold`` s) or by
    other suspicious segments starts: (segments to keep before it, seconds to resume from), or
    None to keep the window as it is. Times in seconds from the start of the audio."""
    worded = [s for s in segments if s.words]
    if worded and is_anomalous(worded[0]) and worded[0].start - window_start > threshold:
        return 0, worded[0].start  # silence, then something doubtful: decode again from there
    previous_end = last_speech_end
    for index, segment in enumerate(segments):
        if not segment.words:
            continue
        if is_anomalous(segment):
            following = next((s for s in segments[index + 1 :] if s.words), None)
            next_start = following.words[0].start if following else window_end
            silence_before = (
                segment.start - previous_end > threshold
                or segment.start < threshold
                or segment.start - window_start < 2.0
            )
            silence_after = (
                next_start - segment.end > threshold or is_anomalous(following) or window_end - segment.end < 2.0
            )
            if silence_before and silence_after:
                resume = audio_end if audio_end - segment.end < threshold else max(window_start + 1, segment.start)
                return index, resume
        previous_end = segment.end
    return None
