"""LocalAgreement-n: a word is confirmed once n consecutive hypotheses agree on it.

The policy of Macháček et al. (whisper_streaming), n = 2 by default: the audio buffer is
re-transcribed at every update; the longest common prefix of the newest hypothesis and the
n − 1 before it (past what is already confirmed) becomes confirmed and never changes again; the
rest is partial. A word the model itself is unsure of (a name, a rare word, speech in noise:
its probability in either of the latest two hypotheses is below a threshold) needs one more
agreeing hypothesis: those are the words a reading of more audio is most likely to change, while
the sure ones keep LocalAgreement-n's delay.

Words are matched by text, not by time: Whisper gives timestamps per segment only, so a word's
time here is an estimate (its segment's span shared out by characters) that moves as a segment
grows, while its text is stable once the model has heard it.
"""

from __future__ import annotations

import math
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


class LocalAgreement:
    """Confirmed and partial words of the audio currently in the buffer."""

    def __init__(self, hypotheses: int = 2, unsure_below: float = 0.0) -> None:
        """``hypotheses`` must agree on a word (StreamOptions checks ≥ 2), one more on a word that
        either of the latest two gives less than ``unsure_below`` probability."""
        self.hypotheses = hypotheses
        self.unsure_below = unsure_below
        self.in_buffer: list[Word] = []  # confirmed words whose audio is still in the buffer
        self.partial: list[Word] = []  # the latest hypothesis past the confirmed words
        # The partial tails of the hypotheses before the latest one, oldest first.
        self._earlier: deque[list[Word]] = deque(maxlen=hypotheses - 1)

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
            if new.end > settled_before or not _all_say(tails[1 - self.hypotheses :], position, new):
                break
            unsure = min(new.probability, tails[-1][position].probability) < self.unsure_below
            if unsure and not _all_say(tails[-self.hypotheses :], position, new):
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
