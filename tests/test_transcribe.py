"""Long-form transcription: windows, seeking, silence, prompts, options."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from amanuensis import TranscribeOptions
from amanuensis.audio import load_audio
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import word_error_rate

from .conftest import CALIBRATION_DIR, SAMPLE, SAMPLE_REFERENCE, silence

GREEDY = TranscribeOptions(beam_size=1)


@pytest.fixture(scope="module")
def long_speech(calibration_refs) -> tuple[np.ndarray, str]:
    """About 75 s of real read speech: ten LJSpeech clips back to back, 0.5 s apart."""
    clips = sorted(CALIBRATION_DIR.glob("ljspeech/*.wav"))[:10]
    gap = silence(0.5)
    audio = np.concatenate([np.concatenate([load_audio(c).samples, gap]) for c in clips])
    return audio, " ".join(calibration_refs[c] for c in clips)


def test_long_form_spans_windows_in_order(tiny: WhisperModel, long_speech) -> None:
    audio, reference = long_speech
    seen_progress: list[tuple[int, int]] = []
    segments, info = tiny.transcribe(audio, GREEDY, progress=lambda done, total: seen_progress.append((done, total)))
    segments = list(segments)
    duration = len(audio) / 16000
    assert info.duration == pytest.approx(duration)
    assert len({s.seek for s in segments}) >= 3  # at least three 30 s windows were decoded
    for previous, current in itertools.pairwise(segments):
        assert previous.end <= current.start + 1e-6
    assert all(s.start < s.end <= duration + 0.5 for s in segments)
    assert word_error_rate([reference], ["".join(s.text for s in segments)]) < 10.0
    assert seen_progress[-1][0] == seen_progress[-1][1]  # progress reaches 100 %


def test_segments_are_lazy(tiny: WhisperModel, long_speech) -> None:
    audio, _ = long_speech
    seeks: list[int] = []
    segments, _ = tiny.transcribe(audio, GREEDY, progress=lambda done, total: seeks.append(done))
    assert seeks == []  # nothing decoded yet
    next(segments)
    assert seeks == [] or seeks[-1] < len(audio) // 160  # only the first window so far


def test_silence_gives_no_text(tiny: WhisperModel) -> None:
    segments, _ = tiny.transcribe(silence(10))
    assert list(segments) == []


def test_initial_prompt_steers_spelling(tiny: WhisperModel) -> None:
    clip = CALIBRATION_DIR / "read_misc/1221-135766-0002.wav"
    plain = tiny.transcribe_all(clip, GREEDY).text
    prompted = tiny.transcribe_all(clip, TranscribeOptions(beam_size=1, initial_prompt="Hester Prynne")).text
    assert "Prynne" not in plain
    assert "Hester Prynne" in prompted


def test_without_timestamps_gives_one_segment_per_window(tiny: WhisperModel, long_speech) -> None:
    audio, reference = long_speech
    transcript = tiny.transcribe_all(audio, TranscribeOptions(beam_size=1, without_timestamps=True))
    assert [s.seek for s in transcript.segments] == [0, 3000, 6000][: len(transcript.segments)]
    assert len(transcript.segments) == 3
    assert word_error_rate([reference], [transcript.text]) < 15.0


def test_option_errors_are_clear(tiny: WhisperModel) -> None:
    with pytest.raises(ValueError, match="English-only"):
        tiny.transcribe(silence(1), TranscribeOptions(language="de"))
    with pytest.raises(ValueError, match="multilingual"):
        tiny.transcribe(silence(1), TranscribeOptions(task="translate"))
    with pytest.raises(ValueError, match="window_padding"):
        tiny.transcribe(silence(1), TranscribeOptions(window_padding="mirror"))


def test_quiet_speech_passes_the_silence_gate(tiny: WhisperModel) -> None:
    """Speech 40 dB down is still transcribed; a noise floor at -75 dBFS is not speech."""
    speech = load_audio(SAMPLE).samples
    quiet = tiny.transcribe_all(speech * 0.01, GREEDY).text
    assert word_error_rate([SAMPLE_REFERENCE], [quiet]) < 5.0
    hiss = np.random.default_rng(0).normal(0, 10 ** (-75 / 20), 10 * 16000).astype(np.float32)
    assert tiny.transcribe_all(hiss, GREEDY).segments == []
