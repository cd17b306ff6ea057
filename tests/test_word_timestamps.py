"""Word timestamps: read from the static graphs' alignment heads, checked against faster-whisper's
on the same weights, and consistent with the segments they belong to."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from amanuensis import TranscribeOptions
from amanuensis.audio import load_audio
from amanuensis.errors import OptionsError
from amanuensis.models import WhisperCheckpoint
from amanuensis.timing import dtw

from .conftest import SAMPLE, silence

GREEDY_WORDS = TranscribeOptions(beam_size=1, word_timestamps=True)


def _assert_consistent(segments) -> None:
    """Every segment's words spell its text, run forward in time and sit inside it."""
    previous_end = 0.0
    for segment in segments:
        assert segment.words, segment.text
        assert "".join(w.word for w in segment.words) == segment.text
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end, (word, segment.start, segment.end)
            assert word.start >= previous_end - 1e-6, (word, previous_end)
            assert 0.0 <= word.probability <= 1.0
            previous_end = word.end


@pytest.fixture(scope="module")
def reference_words() -> list[tuple[str, float, float]]:
    """faster-whisper's word times for the sample, same tiny.en weights, greedy, FP32."""
    from faster_whisper import WhisperModel as ReferenceModel

    directory = WhisperCheckpoint.load("tiny.en").files.config_path.parent
    reference = ReferenceModel(str(directory), device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = reference.transcribe(str(SAMPLE), beam_size=1, language="en", word_timestamps=True)
    return [(w.word, float(w.start), float(w.end)) for s in segments for w in s.words]


@pytest.mark.parametrize("model_name", ["tiny", "tiny_int8"])
def test_sample_words_agree_with_faster_whisper(model_name, reference_words, request) -> None:
    model = request.getfixturevalue(model_name)
    segments = list(model.transcribe(str(SAMPLE), GREEDY_WORDS)[0])
    _assert_consistent(segments)
    ours = [(w.word, w.start, w.end) for s in segments for w in s.words]
    assert [w for w, _, _ in ours] == [w for w, _, _ in reference_words]
    pairs = zip(ours, reference_words, strict=True)
    differences = [abs(a - b) for (_, *x), (_, *y) in pairs for a, b in zip(x, y, strict=True)]
    assert np.median(differences) <= 0.04 and np.percentile(differences, 90) <= 0.15


def test_words_hold_over_long_audio_with_pauses(tiny_int8, validation) -> None:
    """Several windows, and silence between utterances: words stay monotonic, inside their
    segments, and spell them."""
    parts = []
    for entry in validation[:8]:
        parts += [entry.load().samples, silence(1.5)]
    segments = list(tiny_int8.transcribe(np.concatenate(parts), GREEDY_WORDS)[0])
    assert max(s.end for s in segments) > 60.0
    _assert_consistent(segments)
    # As Whisper does with word times: a window starts where the last one's last word ended, or
    # (its last segment left open by a single timestamp) where that window ended
    windows = [[s for s in segments if s.seek == seek] for seek in sorted({s.seek for s in segments})]
    resumed_at_word = 0
    for before, after in itertools.pairwise(windows):
        last_word_end = before[-1].words[-1].end
        at_word = abs(after[0].seek - last_word_end * 100) <= 1
        assert at_word or after[0].seek == before[0].seek + 3000, (before[-1], after[0].seek)
        resumed_at_word += at_word
    assert resumed_at_word, "no window resumed at a word's end"


def test_words_are_off_unless_asked(tiny_int8) -> None:
    segments = list(tiny_int8.transcribe(load_audio(SAMPLE).samples, TranscribeOptions(beam_size=1))[0])
    assert segments and all(s.words is None for s in segments)


def _brute_force_dtw(cost: np.ndarray) -> float:
    """The cheapest monotonic path's cost by trying every path (small matrices only)."""
    rows, cols = cost.shape
    if rows == cols == 1:
        return float(cost[0, 0])
    best = np.inf
    for steps in itertools.product(((1, 0), (0, 1), (1, 1)), repeat=rows + cols - 2):
        i = j = 0
        total = cost[0, 0]
        for di, dj in steps:
            i, j = i + di, j + dj
            if i >= rows or j >= cols:
                break
            total += cost[i, j]
            if (i, j) == (rows - 1, cols - 1):
                best = min(best, total)
                break
    return best


def test_dtw_finds_the_cheapest_monotonic_path() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (1, 5), (4, 1), (3, 4), (4, 5)]:
        cost = rng.normal(size=shape)
        rows, cols = dtw(cost)
        assert (rows[0], cols[0]) == (0, 0) and (rows[-1], cols[-1]) == (shape[0] - 1, shape[1] - 1)
        steps = np.stack([np.diff(rows), np.diff(cols)], axis=1)
        assert all(tuple(s) in {(1, 0), (0, 1), (1, 1)} for s in steps)
        assert cost[rows, cols].sum() == pytest.approx(_brute_force_dtw(cost))


def _cues(text: str) -> list[tuple[str, str, list[str]]]:
    """(start, end, lines) of each srt/vtt cue."""
    cues = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if line and line != "WEBVTT" and not line.isdigit()]
        if not lines:
            continue
        start, end = lines[0].split(" --> ")
        cues.append((start, end, lines[1:]))
    return cues


def test_srt_lines_follow_width_and_count(tmp_path) -> None:
    from .test_cli import run

    result = run(
        "transcribe", SAMPLE, "--word-timestamps", "--max-line-width", "30", "--max-line-count", "2",
        "-f", "all", "-o", tmp_path, "--beam-size", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cues = _cues((tmp_path / f"{SAMPLE.stem}.srt").read_text())
    lines = [line for _, _, cue_lines in cues for line in cue_lines]
    # hand-checked: each line as full as 30 characters allows, two lines a cue, across segments
    assert lines == [
        "If the reader will excuse me,", "I will say nothing of my", "antecedents, nor of the",
        "circumstances which led me to", "leave my native country. The", "narrative would be tedious to",
        "him and painful to myself.",
    ]  # fmt: skip
    assert [len(c[2]) for c in cues] == [2, 2, 2, 1]
    words = [w for s in json.loads((tmp_path / f"{SAMPLE.stem}.json").read_text())["segments"] for w in s["words"]]
    assert cues[0][0] == "00:00:00,000" and cues[-1][1] == _srt_time(words[-1]["end"])
    assert cues[1][0] == _srt_time(next(w for w in words if w["word"] == " antecedents,")["start"])


def _srt_time(seconds: float) -> str:
    from amanuensis.writers import format_timestamp

    return format_timestamp(seconds, True, ",")


def test_vtt_highlights_each_word_in_turn(tmp_path) -> None:
    from .test_cli import run

    result = run(
        "transcribe", SAMPLE, "--word-timestamps", "--highlight-words", "--max-words-per-line", "4",
        "-f", "vtt", "-o", tmp_path, "--beam-size", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    cues = _cues((tmp_path / f"{SAMPLE.stem}.vtt").read_text())
    assert cues[0][2] == ["<u>If</u> the reader will"] and cues[1][2] == ["If <u>the</u> reader will"]
    highlighted = [c for c in cues if "<u>" in c[2][0]]
    assert len(highlighted) == len(SAMPLE_WORDS) and all(c[2][0].count("<u>") == 1 for c in highlighted)
    assert [c[2][0].split("<u>")[1].split("</u>")[0] for c in highlighted] == SAMPLE_WORDS
    assert all(c[0] <= c[1] for c in cues) and all(a[1] <= b[0] for a, b in itertools.pairwise(cues))


SAMPLE_TEXT = (
    "If the reader will excuse me, I will say nothing of my antecedents, nor of the circumstances "
    "which led me to leave my native country. The narrative would be tedious to him and painful to myself."
)
SAMPLE_WORDS = SAMPLE_TEXT.split()


def test_subtitle_layout_needs_word_timestamps(tmp_path) -> None:
    from .test_cli import run

    result = run("transcribe", SAMPLE, "--max-line-width", "30", "-o", tmp_path)
    assert result.returncode == 2 and "need --word-timestamps" in result.stderr
    assert not list(tmp_path.iterdir())


def test_silence_threshold_drops_what_the_model_writes_for_noise(tiny_int8) -> None:
    """40 s of quiet noise before the sample: greedy decoding writes " ." segments into the noise;
    with a silence threshold they are dropped and nothing else is invented. With the default beams
    the whole sample is kept at its time."""
    from amanuensis.evaluation import word_error_rate
    from amanuensis.normalizer import normalize_english

    from .conftest import SAMPLE_REFERENCE

    noise = np.random.default_rng(15).standard_normal(40 * 16000).astype(np.float32) * 10 ** (-50 / 20)
    audio = np.concatenate([noise, load_audio(SAMPLE).samples])
    greedy = list(tiny_int8.transcribe(audio, GREEDY_WORDS)[0])
    assert any(s.end < 39.0 for s in greedy)  # the noise got text
    guarded = replace(GREEDY_WORDS, hallucination_silence_threshold=2.0)
    kept = list(tiny_int8.transcribe(audio, guarded)[0])
    assert kept and min(s.start for s in kept) > 39.5
    reference = iter(normalize_english(SAMPLE_REFERENCE).split())
    assert all(word in reference for word in normalize_english("".join(s.text for s in kept)).split())  # in order
    _assert_consistent(kept)

    beams = list(tiny_int8.transcribe(audio, replace(guarded, beam_size=5))[0])
    assert min(s.start for s in beams) > 39.5
    assert word_error_rate([SAMPLE_REFERENCE], ["".join(s.text for s in beams)]) == 0.0
    with pytest.raises(OptionsError, match="needs word_timestamps"):
        TranscribeOptions(hallucination_silence_threshold=2.0)


@pytest.mark.parametrize("language", ["zh", "de"])
def test_multilingual_words_spell_their_segments(base, language) -> None:
    """Chinese is split into characters (no spaces between words), German at spaces; either way the
    words spell the segment and run forward in time."""
    from amanuensis.evaluation import read_manifest

    from .conftest import ROOT

    entry = read_manifest(ROOT / f"tests/data/validation/multilingual/{language}/refs.tsv")[0]
    options = replace(GREEDY_WORDS, language=language)
    segments = list(base.transcribe(entry.load().samples, options)[0])
    _assert_consistent(segments)
    words = [w.word for s in segments for w in s.words]
    if language == "zh":  # a character or a token's few, a mark attached to some
        text = "".join(s.text for s in segments)
        assert len(words) >= len(text) // 2 and not any(" " in w for w in words)
    else:
        assert all(w.startswith(" ") for w in words)
