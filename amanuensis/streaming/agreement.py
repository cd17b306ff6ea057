"""LocalAgreement-n: a word is confirmed once n consecutive hypotheses agree on it.

The policy of Macháček et al. (whisper_streaming), n = 2 by default: the audio buffer is
re-transcribed at every update; the longest common prefix of the newest hypothesis and the
n − 1 before it (past what is already confirmed) becomes confirmed and never changes again; the
rest is partial.

Words are matched by text, not by time: Whisper gives timestamps per segment only, so a word's
time here is an estimate (its segment's span shared out by characters) that moves as a segment
grows, while its text is stable once the model has heard it.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

WORD_PATTERN = re.compile(r"\s*\S+")  # a word keeps its leading space, as Whisper's tokens do
_NOT_WORD = re.compile(r"[^\w']+")
# How many more words than were confirmed the re-transcription of confirmed audio may take
# (rewording: "whom so ever" / "whomsoever"). The search for confirmed words stops there, so a
# repetition loop later in a hypothesis cannot pass for them.
REWORDING_SLACK = 4


@dataclass(frozen=True)
class Word:
    start: float  # seconds from the start of the stream (estimated within its segment)
    end: float  # seconds
    text: str  # with its leading space
    segment: int  # index of the segment of the hypothesis it came from

    @property
    def key(self) -> str:
        """What agreement compares: case and punctuation are allowed to change between updates."""
        return _NOT_WORD.sub("", self.text.lower()) or self.text.strip()


def split_words(text: str, start: float, end: float, segment: int) -> list[Word]:
    """A segment's words, its time span shared out in proportion to their characters."""
    pieces = WORD_PATTERN.findall(text)
    lengths = [len(p.strip()) for p in pieces]
    total = sum(lengths) or 1
    words, done = [], 0
    for piece, length in zip(pieces, lengths, strict=True):
        word_start = start + (end - start) * done / total
        done += length
        words.append(Word(word_start, start + (end - start) * done / total, piece, segment))
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


class LocalAgreement:
    """Confirmed and partial words of the audio currently in the buffer."""

    def __init__(self, hypotheses: int = 2) -> None:  # StreamOptions checks hypotheses ≥ 2
        self.in_buffer: list[Word] = []  # confirmed words whose audio is still in the buffer
        self.partial: list[Word] = []  # the latest hypothesis past the confirmed words
        # The partial tails of the hypotheses before the latest one, oldest first.
        self._earlier: deque[list[Word]] = deque(maxlen=hypotheses - 2)

    def update(self, hypothesis: list[Word], settled_before: float = float("inf")) -> list[Word]:
        """Take a new hypothesis of the whole buffer; returns the words it newly confirms.

        Only words ending before ``settled_before`` (seconds) may be confirmed: a word needs
        some audio after it before the model's reading of it can be trusted.
        """
        start = skip_confirmed(self.in_buffer, hypothesis)
        fresh = hypothesis[start:]
        agreed = 0
        tails = [*self._earlier, self.partial]
        for position, new in enumerate(fresh):
            if new.end > settled_before or any(
                position >= len(tail) or tail[position].key != new.key for tail in tails
            ):
                break
            agreed += 1
        # Keep the newest wording and times of confirmed audio, unless this hypothesis lost words
        # of it: then the count of confirmed words must not shrink, or they would be confirmed twice.
        repeated = hypothesis[:start] if start >= len(self.in_buffer) else self.in_buffer
        self.in_buffer = [*repeated, *fresh[:agreed]]
        self._earlier.append(self.partial)  # drops the oldest (keeps nothing for LocalAgreement-2)
        self._earlier = deque((tail[agreed:] for tail in self._earlier), maxlen=self._earlier.maxlen)
        self.partial = fresh[agreed:]
        return fresh[:agreed]

    def forget_partial(self) -> None:
        """The audio of the unconfirmed words is gone (dropped as silence)."""
        self.partial = []
        self._earlier.clear()

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
