"""Whisper-style text normalizers for scoring: English in full, any other language in the basic form.

References and hypotheses differ in casing, punctuation, contractions, titles and how numbers
are written ("fifteen" vs "15"); WER should count none of that. Both sides go through the
same function: lower case, drop bracketed asides and fillers, expand contractions and
titles, spell numbers as digits, strip symbols, collapse spaces.
"""

from __future__ import annotations

import re
import unicodedata

FILLERS = {"hmm", "mm", "mhm", "mmm", "uh", "um", "er", "ah", "eh"}

_CONTRACTIONS = [
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\blet's\b", "let us"),
    (r"\bain't\b", "aint"), (r"\by'all\b", "you all"), (r"\bwanna\b", "want to"),
    (r"\bgotta\b", "got to"), (r"\bgonna\b", "going to"), (r"\bi'ma\b", "i am going to"),
    (r"\bimma\b", "i am going to"), (r"\bwoulda\b", "would have"), (r"\bcoulda\b", "could have"),
    (r"\bshoulda\b", "should have"), (r"\bma'am\b", "madam"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'d\b", " would"), (r"'ll\b", " will"),
    (r"'ve\b", " have"), (r"'m\b", " am"),
]  # fmt: skip
_TITLES = {
    "mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "prof": "professor",
    "st": "saint", "jr": "junior", "sr": "senior", "gen": "general", "capt": "captain",
    "gov": "governor", "sen": "senator", "rev": "reverend", "hon": "honorable",
}  # fmt: skip
_BRITISH = {
    "colour": "color", "favour": "favor", "honour": "honor", "labour": "labor",
    "neighbour": "neighbor", "centre": "center", "theatre": "theater", "grey": "gray",
    "realise": "realize", "recognise": "recognize", "travelling": "traveling",
    "defence": "defense", "humour": "humor", "rumour": "rumor", "favourite": "favorite",
}  # fmt: skip

ONES = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}  # fmt: skip
MULTIPLIERS = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50,
    "sixtieth": 60, "seventieth": 70, "eightieth": 80, "ninetieth": 90, "hundredth": 100,
    "thousandth": 1000,
}  # fmt: skip
_SUFFIX = {1: "st", 2: "nd", 3: "rd"}


def _ordinal_suffix(n: int) -> str:
    return "th" if 10 <= n % 100 <= 20 else _SUFFIX.get(n % 10, "th")


def _is_number_word(word: str) -> bool:
    return word in ONES or word in TENS or word in MULTIPLIERS


class _NumberRun:
    """Accumulates consecutive number words into digit strings."""

    def __init__(self) -> None:
        self.parts: list[str] = []  # finished digit groups ("19" + "20" → "1920")
        self.total = 0  # value above the current hundreds group
        self.group: int | None = None  # value of the group being built
        self.last_kind = ""  # "one", "teen", "ten", "mult": what the previous word was

    def add(self, word: str) -> None:
        if word in MULTIPLIERS:
            factor = MULTIPLIERS[word]
            group = self.group if self.group is not None else 1
            if factor == 100:
                self.group = group * 100
            else:
                self.total += group * factor
                self.group = None
            self.last_kind = "mult"
            return
        value = ONES.get(word, TENS.get(word))
        kind = "ten" if word in TENS else ("one" if value < 10 else "teen")
        joins = self.group is not None and (
            (self.last_kind == "ten" and kind == "one" and value > 0)
            or (self.last_kind == "mult" and self.group % 100 == 0)
        )
        if self.group is None:
            self.group = value
        elif joins:
            self.group += value
        else:  # "nineteen twenty", "two three": a new group, written next to the old one
            self.flush_group()
            self.group = value
        self.last_kind = kind

    def flush_group(self) -> None:
        if self.group is not None or self.total:
            self.parts.append(str(self.total + (self.group or 0)))
        self.total, self.group = 0, None

    def text(self) -> str:
        self.flush_group()
        return "".join(self.parts)


BREAK = "|"  # marks punctuation between words, so "1855, 123" stays two numbers


def _ordinal(run: _NumberRun | None, value: int) -> str:
    """Finish a number run with an ordinal word: "twenty first" → "21st"."""
    if run is None:
        return f"{value}{_ordinal_suffix(value)}"
    if value in (100, 1000):
        run.add("hundred" if value == 100 else "thousand")
        number = int(run.text())
    elif run.group is not None and run.last_kind in ("ten", "mult") and value < 10:
        run.group += value
        number = int(run.text())
    else:
        return f"{run.text()} {value}{_ordinal_suffix(value)}"
    return f"{number}{_ordinal_suffix(number)}"


def normalize_numbers(words: list[str]) -> list[str]:
    """Spelled numbers to digits: "one hundred and five" → "105", "fifth" → "5th"."""
    out: list[str] = []
    run: _NumberRun | None = None
    for i, word in enumerate(words):
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if _is_number_word(word) and not (word == "one" and run is None and _lone_one(nxt)):
            run = run or _NumberRun()
            run.add(word)
            continue
        if word == "and" and run is not None and run.last_kind == "mult" and (nxt in ONES or nxt in TENS):
            continue  # "hundred and five"
        if word in ORDINALS and not (run is None and word in ("first", "second")):
            out.append(_ordinal(run, ORDINALS[word]))  # "at first", "a second" stay words
            run = None
            continue
        if run is not None:
            out.append(run.text())
            run = None
        if word != BREAK:
            out.append(word)
    if run is not None:
        out.append(run.text())
    return out


def _lone_one(nxt: str) -> bool:
    """'one' as a pronoun ("no one", "the one") rather than a count: no number follows."""
    return not _is_number_word(nxt) and nxt not in ORDINALS


def _strip_symbols(text: str) -> str:
    """Accents off; punctuation and symbols become spaces (keeping digits' . and %)."""
    text = unicodedata.normalize("NFKD", text)
    chars = []
    for ch in text:
        category = unicodedata.category(ch)
        if category == "Mn":
            continue
        chars.append(" " if category[0] in "PSZ" and ch not in "'" + BREAK else ch)
    return "".join(chars)


def normalize_english(text: str) -> str:
    text = text.lower()
    text = re.sub(r"[<\[][^>\]]*[>\]]", " ", text)  # [laughs], <noise>
    text = re.sub(r"\(([^)]+?)\)", " ", text)  # (asides)
    text = re.sub(r"[’‘`]", "'", text)
    for pattern, replacement in _CONTRACTIONS:
        text = re.sub(pattern, replacement, text)
    text = re.sub(r"(\d),(\d{3})", r"\1\2", text)  # 1,000 → 1000
    text = re.sub(r"(\d)\.(\d)", r"\1DOT\2", text)  # keep decimals through symbol removal
    text = re.sub(r"(\d)%", r"\1 percent", text)
    text = re.sub(r"[,;:.!?]+(\s|$)", f" {BREAK} ", text)
    text = _strip_symbols(text).replace("DOT", ".")
    text = text.replace("'", " ")
    words = [w for w in text.split() if w not in FILLERS]
    words = [_TITLES.get(w, _BRITISH.get(w, w)) for w in words]
    words = normalize_numbers(words)
    return " ".join(words)


# Languages written without spaces between words: their error rate counts characters (CER)
CHARACTER_SCORED = frozenset({"zh", "ja", "yue", "th", "lo", "my", "km", "bo"})


def normalize_basic(text: str) -> str:
    """Any language, as Whisper's basic normalizer treats it: NFKC, lower case, bracketed asides
    out, punctuation and symbols to spaces, spaces collapsed. Letters and their accents stay (a
    French é is a different word from e); numbers are left as written."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[<\[][^>\]]*[>\]]", " ", text)  # [laughs], <noise>
    text = re.sub(r"\(([^)]+?)\)", " ", text)  # (asides)
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZ" else ch for ch in text)
    return " ".join(text.split())


def scoring_units(text: str, language: str | None = None) -> str:
    """The units an error rate counts, space-separated: English words (``normalize_english``) for
    ``None`` or "en"; each character for ``CHARACTER_SCORED`` languages (so a word error rate over
    them is the CER); words after ``normalize_basic`` for every other language."""
    if language in (None, "en"):
        return normalize_english(text)
    basic = normalize_basic(text)
    if language in CHARACTER_SCORED:
        return " ".join(basic.replace(" ", ""))
    return basic
