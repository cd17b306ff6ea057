from __future__ import annotations

import pytest

from amanuensis.evaluation import (
    ManifestError,
    paired_wer_difference,
    read_manifest,
    utterance_errors,
    word_error_rate,
)
from amanuensis.normalizer import normalize_english, scoring_units

from .conftest import ROOT

MULTILINGUAL = ROOT / "tests/data/validation/multilingual"


@pytest.mark.parametrize("text,expected", [
    ("I REALLY LIKED THAT ACCOUNT", "i really liked that account"),
    (" Well, Mr. Smith won't go!", "well mister smith will not go"),
    ("In eighteen fifty five, one hundred and twenty three men", "in 1855 123 men"),
    ("In 1855, 123 men", "in 1855 123 men"),
    ("the twenty first of May", "the 21st of may"),
    ("the 21st of May", "the 21st of may"),
    ("no one came [laughs] uh at first", "no one came at first"),
    ("It cost 3.5% (roughly) more", "it cost 3.5 percent more"),
    ("the colour grey", "the color gray"),
])  # fmt: skip
def test_normalizer(text: str, expected: str) -> None:
    assert normalize_english(text) == expected


def test_wer_is_corpus_level_and_ignores_form() -> None:
    refs = ["THE CAT SAT", "ON THE MAT TODAY"]
    assert word_error_rate(refs, [" The cat sat.", "On the mat, today!"]) == 0.0
    assert word_error_rate(refs, ["the cat", "on the mat today"]) == pytest.approx(100 / 7)


def test_manifest_errors(tmp_path) -> None:
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "missing.tsv")
    (tmp_path / "empty.tsv").write_text("# only a comment\n\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(tmp_path / "empty.tsv")
    (tmp_path / "ok.tsv").write_text("a.wav\tHELLO\n")
    assert read_manifest(tmp_path / "ok.tsv")[0].audio == tmp_path / "a.wav"


REFERENCES = ["the cat sat on the mat", "Mister Smith paid twenty dollars", "yes", ""]
CLOSE = ["the cat sat on a mat", "Mr. Smith paid $20", "yes", "uh"]
WORSE = ["a cat sat in the hat", "mister smith", "no", ""]


def test_utterance_errors_add_up_to_corpus_wer() -> None:
    for hypotheses in (CLOSE, WORSE):
        counts = utterance_errors(REFERENCES, hypotheses)
        edits, words = map(sum, zip(*counts, strict=True))
        assert 100.0 * edits / words == pytest.approx(word_error_rate(REFERENCES, hypotheses))
    assert utterance_errors(REFERENCES, CLOSE)[3] == (0, 0)  # no reference words: not scored


def test_paired_wer_difference_interval() -> None:
    close, worse = utterance_errors(REFERENCES, CLOSE), utterance_errors(REFERENCES, WORSE)
    assert paired_wer_difference(close, close) == (0.0, 0.0, 0.0)
    difference, low, high = paired_wer_difference(worse, close)
    expected = word_error_rate(REFERENCES, WORSE) - word_error_rate(REFERENCES, CLOSE)
    assert difference == pytest.approx(expected) and difference > 0
    assert low <= difference <= high and high > low
    with pytest.raises(ValueError):
        paired_wer_difference(close, close[:2])


@pytest.mark.parametrize("text,language,expected", [
    ("Die Überschrift ist reiner Clickbait.", "de", "die überschrift ist reiner clickbait"),
    ("L'été, c'est « super » !", "fr", "l été c est super"),
    ("Это [шум] правда?", "ru", "это правда"),
    ("你是有能力的，不是吗？", "zh", "你 是 有 能 力 的 不 是 吗"),
    ("ようこそ、日本へ！", "ja", "よ う こ そ 日 本 へ"),
    ("Mr. Smith won't go", None, "mister smith will not go"),
])  # fmt: skip
def test_scoring_units_per_language(text: str, language: str | None, expected: str) -> None:
    assert scoring_units(text, language) == expected


def test_languages_without_spaces_are_scored_by_character() -> None:
    reference = ["你是有能力的不是吗"]
    assert word_error_rate(reference, ["你是有能力的不是嗎"], "zh") == pytest.approx(100 / 9)  # one character
    assert utterance_errors(reference, ["你是有能力的"], "zh") == [(3, 9)]
    assert word_error_rate(["Sie fährt nach Rosenheim"], ["Sie fährt nach Hause"], "de") == 25.0


@pytest.mark.parametrize(("language", "metric", "limit"), [("de", "WER", 40.0), ("zh", "CER", 50.0)])
def test_base_transcribes_unseen_speech_in_its_language(base, language: str, metric: str, limit: float) -> None:
    """Two validation clips of real Common Voice speech: base, told the language, transcribes them
    in that language's script (a wrong language or script scores near or above 100), and detects
    that language when not told."""
    from amanuensis.evaluation import evaluate
    from amanuensis.transcribe import TranscribeOptions

    entries = read_manifest(MULTILINGUAL / language / "refs.tsv")[3:5]
    report = evaluate(base, entries, TranscribeOptions(language=language), detect=True)
    assert report.metric == metric and report.language == language
    assert report.detection_accuracy == 1.0, [u.detected_language for u in report.utterances]
    assert report.wer < limit, [(u.reference, u.hypothesis) for u in report.utterances]
