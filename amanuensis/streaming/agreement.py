"""LocalAgreement-2: a word is confirmed once two consecutive hypotheses agree on it.

The policy of Macháček et al. (whisper_streaming): the audio buffer is re-transcribed at every
update; the longest common prefix of the newest hypothesis and the previous one (past what is
already confirmed) becomes confirmed and never changes again; the rest is partial.

Words are matched by text, not by time: Whisper gives timestamps per segment only, so a word's
time here is an estimate (its segment's span shared out by characters) that moves as a segment
grows, while its text is stable once the model has heard it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

WORD_PATTERN = re.compile(r"\s*\S+")  # a word keeps its leading space, as Whisper's tokens do
_NOT_WORD = re.compile(r"[^\w']+")


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
    re-transcribing them, not always identically; align the two word lists by text and skip
    past the last confirmed word (or where it would be, if the hypothesis reworded it). With no
    word in common, fall back to time: skip the words centred before the last confirmed one ends.
    """
    if not confirmed:
        return 0
    keys = [w.key for w in hypothesis]
    matcher = SequenceMatcher(None, [w.key for w in confirmed], keys, autojunk=False)
    last_confirmed, after = -1, 0
    for a, b, size in matcher.get_matching_blocks():
        if size:
            last_confirmed, after = a + size - 1, b + size
    if last_confirmed < 0:
        boundary = confirmed[-1].end
        return sum(1 for w in hypothesis if (w.start + w.end) / 2 < boundary)
    return min(len(hypothesis), after + (len(confirmed) - 1 - last_confirmed))


class LocalAgreement:
    """Confirmed and partial words of the audio currently in the buffer."""

    def __init__(self) -> None:
        self.in_buffer: list[Word] = []  # confirmed words whose audio is still in the buffer
        self.partial: list[Word] = []  # the latest hypothesis past the confirmed words

    def update(self, hypothesis: list[Word], settled_before: float = float("inf")) -> list[Word]:
        """Take a new hypothesis of the whole buffer; returns the words it newly confirms.

        Only words ending before ``settled_before`` (seconds) may be confirmed: a word needs
        some audio after it before the model's reading of it can be trusted.
        """
        start = skip_confirmed(self.in_buffer, hypothesis)
        fresh = hypothesis[start:]
        agreed = 0
        for new, old in zip(fresh, self.partial, strict=False):  # up to the shorter one
            if new.key != old.key or new.end > settled_before:
                break
            agreed += 1
        # Keep the newest wording and times of confirmed audio, unless this hypothesis lost words
        # of it: then the count of confirmed words must not shrink, or they would be confirmed twice.
        repeated = hypothesis[:start] if start >= len(self.in_buffer) else self.in_buffer
        self.in_buffer = [*repeated, *fresh[:agreed]]
        self.partial = fresh[agreed:]
        return fresh[:agreed]

    def confirm_partial(self) -> list[Word]:
        """End of stream (or a forced cut): the latest hypothesis is all there is; confirm it."""
        words, self.partial = self.partial, []
        self.in_buffer.extend(words)
        return words

    def cut(self, words: int) -> list[Word]:
        """The buffer lost the audio of its first ``words`` confirmed words; returns them."""
        removed, self.in_buffer = self.in_buffer[:words], self.in_buffer[words:]
        return removed
