"""Whisper's byte-level BPE plus its special and timestamp tokens.

Special token ids differ between English-only and multilingual vocabularies, so every id is
looked up by its text in the bundled ``tokenizer.json`` rather than hard-coded.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from amanuensis.errors import OptionsError, UserError

# Whisper's language codes in vocabulary order (openai/whisper tokenizer.LANGUAGES).
LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian",
    "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala",
    "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi",
    "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}  # fmt: skip

TIMESTAMP_PRECISION_S = 0.02  # seconds per timestamp token step


class Tokenizer:
    """Encodes text and names the control tokens of one Whisper vocabulary."""

    def __init__(self, path: Path, multilingual: bool) -> None:
        self._hf = HFTokenizer.from_file(str(path))
        self.multilingual = multilingual

    def _special(self, text: str) -> int:
        token_id = self._hf.token_to_id(text)
        if token_id is None:
            raise UserError(f"tokenizer has no {text}")
        return token_id

    @cached_property
    def eot(self) -> int:
        return self._special("<|endoftext|>")

    @cached_property
    def sot(self) -> int:
        return self._special("<|startoftranscript|>")

    @cached_property
    def transcribe(self) -> int:
        return self._special("<|transcribe|>")

    @cached_property
    def translate(self) -> int:
        return self._special("<|translate|>")

    @cached_property
    def sot_prev(self) -> int:
        return self._special("<|startofprev|>")

    @cached_property
    def sot_lm(self) -> int:
        return self._special("<|startoflm|>")

    @cached_property
    def no_speech(self) -> int:
        for text in ("<|nospeech|>", "<|nocaptions|>"):
            token_id = self._hf.token_to_id(text)
            if token_id is not None:
                return token_id
        raise UserError("tokenizer has no no-speech token")

    @cached_property
    def no_timestamps(self) -> int:
        return self._special("<|notimestamps|>")

    @property
    def timestamp_begin(self) -> int:
        """Timestamp tokens are not in tokenizer.json: they follow <|notimestamps|>."""
        return self.no_timestamps + 1

    @cached_property
    def language_tokens(self) -> dict[str, int]:
        """Language code → token id, for the codes this vocabulary has."""
        found = {}
        for code in LANGUAGE_NAMES:
            token_id = self._hf.token_to_id(f"<|{code}|>")
            if token_id is not None:
                found[code] = token_id
        return found

    def language_token(self, code: str) -> int:
        try:
            return self.language_tokens[code]
        except KeyError:
            raise OptionsError(f"unsupported language '{code}'") from None

    def sot_sequence(self, language: str | None, task: str) -> list[int]:
        """The decoder prefix: <|sot|> [<|lang|> <|task|>] for multilingual models."""
        sequence = [self.sot]
        if self.multilingual:
            sequence.append(self.language_token(language or "en"))
            sequence.append(self.translate if task == "translate" else self.transcribe)
        return sequence

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def decode(self, tokens: list[int]) -> str:
        """Text of the ordinary tokens; control and timestamp tokens are dropped."""
        return self._hf.decode([t for t in tokens if t < self.eot], skip_special_tokens=False)

    def decode_with_timestamps(self, tokens: list[int]) -> str:
        parts: list[str] = []
        text_run: list[int] = []
        for token in tokens:
            if token >= self.timestamp_begin:
                parts.append(self.decode(text_run))
                text_run = []
                parts.append(f"<|{(token - self.timestamp_begin) * TIMESTAMP_PRECISION_S:.2f}|>")
            else:
                text_run.append(token)
        parts.append(self.decode(text_run))
        return "".join(parts)

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of symbols Whisper should not emit (speaker tags, music notes, ...).

        Mirrors openai/whisper's list; single-character tokens are kept in both forms with
        and without a leading space, except the dash and quote which appear in words.
        """
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += ["<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))"]
        symbols += ["(((", ")))", "[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
        miscellaneous = set("♩♪♫♬♭♮♯")  # musical symbols: always suppressed
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for tokens in [self.encode(symbol), self.encode(" " + symbol)]:
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))
