"""LocalAgreement-n: a word is confirmed once n consecutive hypotheses agree on it.

The policy of Macháček et al. (whisper_streaming), n = 2 by default: the audio buffer is
re-transcribed at every update; the longest common prefix of the newest hypothesis and the
n − 1 before it (past what is already confirmed) becomes confirmed and never changes again; the
rest is partial. A word the model itself is unsure of (a name, a rare word, speech in noise:
its probability in either of the latest two hypotheses is below a threshold) must instead be read
the same by every hypothesis made over a few seconds of audio: a short buffer can misread such a
word the same way two or three times in a row ("Let the forms" where the whole sentence gives
"that the forms"), and only a reading of clearly more audio settles it, while the sure words keep
LocalAgreement-n's delay. With a span, "consecutive" is measured in audio rather than in
updates: every hypothesis over at least that many seconds must agree, so updates can come more
often (a word is confirmed sooner after the span has passed) without agreement resting on two
readings made a moment apart, which share their mistakes.

Words are matched by text, not by time: a word's time moves between updates (measured from the
alignment heads with ``StreamDecoding.word_timestamps``, else its segment's span shared out by
characters), while its text is stable once the model has heard it.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from rapidfuzz.distance import Levenshtein

WORD_PATTERN = re.compile(r"\s*\S+")  # a word keeps its leading space, as Whisper's tokens do
_NOT_WORD = re.compile(r"[^\w']+")
# How many more words than were confirmed the re-transcription of confirmed audio may take
# (rewording: "whom so ever" / "whomsoever"). The search for confirmed words stops there, so a
# repetition loop later in a hypothesis cannot pass for them.
REWORDING_SLACK = 4
_SAME_TIME_S = 1e-6  # hypothesis times closer than this are the same moment of the stream


@dataclass(frozen=True)
class Word:
    start: float  # seconds from the start of the stream (measured, or estimated within its segment)
    end: float  # seconds
    text: str  # with its leading space
    segment: int  # index of the segment of the hypothesis it came from
    probability: float = 1.0  # the model's, for the word given what preceded it (its tokens' product)

    @property
    def key(self) -> str:
        """What agreement compares: case and punctuation are allowed to change between updates."""
        return _NOT_WORD.sub("", self.text.lower()) or self.text.strip()


def split_words(
    text: str, start: float, end: float, segment: int, token_spans: Sequence[tuple[int, float]] = ()
) -> list[Word]:
    """A segment's words, its time span shared out in proportion to their characters.

    ``token_spans``: (character where the token's text ends, log-probability) for each of the
    segment's text tokens; a word's probability is the product of the tokens that overlap it.
    Without them every word has probability 1.
    """
    matches = list(WORD_PATTERN.finditer(text))
    lengths = [len(m.group().strip()) for m in matches]
    total = sum(lengths) or 1
    words, done = [], 0
    for match, length in zip(matches, lengths, strict=True):
        word_start = start + (end - start) * done / total
        done += length
        first_char = match.end() - length  # past the leading space
        logprob, token_start = 0.0, 0
        for token_end, token_logprob in token_spans:
            if token_start < match.end() and token_end > first_char:
                logprob += token_logprob
            token_start = token_end
        words.append(Word(word_start, start + (end - start) * done / total, match.group(), segment, math.exp(logprob)))
    return words


def skip_confirmed(confirmed: Sequence[Word], hypothesis: Sequence[Word]) -> int:
    """Index of the first word of ``hypothesis`` past the already-confirmed words it repeats.

    The buffer still holds audio whose words are confirmed, so every hypothesis starts by
    re-transcribing them, not always identically ("reply the fireman" / "replied, firemen").
    The answer is the hypothesis prefix closest to the confirmed words, by edit distance over
    their letters, so that merged or split words ("whom so ever" / "whomsoever") cost nothing
    and a common word further on ("the") cannot pass for a confirmed one. Ties go to the
    shorter prefix: a word confirmed twice is as wrong as a word lost, but a lost word cannot
    be seen. With no prefix closer than the empty one, fall back to time: skip the words
    centred before the last confirmed word ends.
    """
    if not confirmed:
        return 0
    said = "".join(w.key for w in confirmed)
    best, best_distance = None, len(said)  # the empty prefix's distance: must be beaten
    prefix = ""
    for count, word in enumerate(hypothesis[: len(confirmed) + REWORDING_SLACK], start=1):
        prefix += word.key
        distance = Levenshtein.distance(said, prefix, score_cutoff=best_distance)
        if distance < best_distance:
            best, best_distance = count, distance
    if best is None:
        boundary = confirmed[-1].end
        return sum(1 for w in hypothesis if (w.start + w.end) / 2 < boundary)
    return best


def _all_say(tails: Sequence[list[Word]], position: int, word: Word) -> bool:
    """Every one of ``tails`` has ``word`` at ``position``."""
    return all(position < len(tail) and tail[position].key == word.key for tail in tails)


class _Tail(NamedTuple):
    at: float  # seconds of stream audio when the hypothesis was made
    words: list[Word]  # its words past the confirmed ones


def _since(history: Sequence[_Tail], moment: float) -> list[list[Word]] | None:
    """The words of the newest tail made by ``moment`` (seconds) and of every one after it; None
    when no tail is that old."""
    old_enough = [i for i, tail in enumerate(history) if tail.at <= moment + _SAME_TIME_S]
    return [tail.words for tail in history[old_enough[-1] :]] if old_enough else None


class LocalAgreement:
    """Confirmed and partial words of the audio currently in the buffer."""

    def __init__(
        self, hypotheses: int = 2, unsure_below: float = 0.0, unsure_hold_s: float = 0.0, span_s: float = 0.0
    ) -> None:
        """``hypotheses`` must agree on a word (StreamOptions checks ≥ 2), and so must every
        hypothesis over at least ``span_s`` seconds of audio; a word that either of the latest two
        gives less than ``unsure_below`` probability must be read the same by hypotheses spanning at
        least ``unsure_hold_s`` seconds of audio (and by at least ``hypotheses``)."""
        self.hypotheses = hypotheses
        self.unsure_below = unsure_below
        self.unsure_hold_s = unsure_hold_s
        self.span_s = span_s
        self.in_buffer: list[Word] = []  # confirmed words whose audio is still in the buffer
        # The partial tails of the hypotheses, oldest first, the latest last: the latest
        # ``hypotheses`` and those since the newest one made at least the span or the hold (the
        # longer) before the latest.
        self._tails: deque[_Tail] = deque()

    @property
    def partial(self) -> list[Word]:
        """The latest hypothesis past the confirmed words."""
        return self._tails[-1].words if self._tails else []

    def update(self, hypothesis: list[Word], at: float, settled_before: float = float("inf")) -> list[Word]:
        """Take a new hypothesis of the whole buffer, made at ``at`` seconds of stream audio;
        returns the words it newly confirms.

        Only words ending before ``settled_before`` (seconds) may be confirmed: a word needs
        some audio after it before the model's reading of it can be trusted.
        """
        start = skip_confirmed(self.in_buffer, hypothesis)
        fresh = hypothesis[start:]
        history = list(self._tails)  # oldest first; the latest hypothesis before this one last
        latest = [tail.words for tail in history[1 - self.hypotheses :]]
        # Every word needs the same reading from the latest hypotheses and from all those over the
        # span; an unsure word, from all those over the hold.
        spanned = _since(history, at - self.span_s) if self.span_s > 0 else latest
        held = _since(history, at - self.unsure_hold_s)
        agreed = 0
        for position, new in enumerate(fresh):
            if new.end > settled_before or len(latest) < self.hypotheses - 1 or spanned is None:
                break
            if not (_all_say(latest, position, new) and _all_say(spanned, position, new)):
                break
            unsure = min(new.probability, latest[-1][position].probability) < self.unsure_below
            if unsure and (held is None or not _all_say(held, position, new)):
                break
            agreed += 1
        # Keep the newest wording and times of confirmed audio, unless this hypothesis lost words
        # of it: then the count of confirmed words must not shrink, or they would be confirmed twice.
        repeated = hypothesis[:start] if start >= len(self.in_buffer) else self.in_buffer
        self.in_buffer = [*repeated, *fresh[:agreed]]
        self._tails = deque(_Tail(tail.at, tail.words[agreed:]) for tail in history)
        self._tails.append(_Tail(at, fresh[agreed:]))
        # Forget what no later update can need: beyond the latest hypotheses, only the newest
        # tail made at least the longer of span and hold ago and those after it.
        needed_since = at - max(self.span_s, self.unsure_hold_s)
        while len(self._tails) > max(self.hypotheses, 2) and self._tails[1].at <= needed_since + _SAME_TIME_S:
            self._tails.popleft()
        return fresh[:agreed]

    def forget_partial(self) -> None:
        """The audio of the unconfirmed words is gone (dropped as silence)."""
        self._tails.clear()

    def confirm_partial(self) -> list[Word]:
        """End of stream (or a forced cut): the latest hypothesis is all there is; confirm it."""
        words = self.partial
        self.forget_partial()
        self.in_buffer.extend(words)
        return words

    def cut(self, words: int) -> list[Word]:
        """The buffer lost the audio of its first ``words`` confirmed words; returns them."""
        removed, self.in_buffer = self.in_buffer[:words], self.in_buffer[words:]
        return removed
