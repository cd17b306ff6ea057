"""Row 15 of issue 28: speech that follows a long stretch of quiet noise.

Whisper stamps such speech from the start of its 30 s window (40 s of noise: 30.0 s for speech
at 40.0 s), and faster-whisper does too unless its ``vad_filter`` is on (measured 2026-12-01:
30.0 s and 90.0 s without, 40.24 s and 112.75 s with). ``TranscribeOptions.vad_filter`` /
``--vad-filter`` transcribe only the speech Silero VAD finds and keep the input's times.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from amanuensis import TranscribeOptions
from amanuensis.audio import SAMPLE_RATE, load_audio
from amanuensis.cli import main
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import word_error_rate
from amanuensis.vad import TimeMap, VadFilter, speech_spans

from ..conftest import SAMPLE, SAMPLE_REFERENCE, silence

NOISE_DBFS = -50.0
NOISE_S = 40.0
ONSET_TOLERANCE_S = 0.5  # the filter keeps 0.4 s before speech; Silero decides in 32 ms steps


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLE).samples


def _after_noise(speech: np.ndarray, seconds: float) -> np.ndarray:
    noise = np.random.default_rng(15).standard_normal(round(seconds * SAMPLE_RATE)).astype(np.float32)
    return np.concatenate([noise * 10 ** (NOISE_DBFS / 20), speech])


def test_with_the_vad_filter_speech_after_noise_keeps_its_time(tiny_int8: WhisperModel, speech) -> None:
    audio = _after_noise(speech, NOISE_S)
    segments, info = tiny_int8.transcribe(audio, TranscribeOptions(vad_filter=VadFilter()))
    segments = list(segments)
    assert info.duration == pytest.approx(len(audio) / SAMPLE_RATE)
    assert abs(segments[0].start - NOISE_S) <= ONSET_TOLERANCE_S, segments[0]
    assert segments[-1].end <= len(audio) / SAMPLE_RATE + 0.01
    assert word_error_rate([SAMPLE_REFERENCE], ["".join(s.text for s in segments)]) == 0.0


def test_the_cli_flag_gives_the_same(tmp_path, speech) -> None:
    path = tmp_path / "late.wav"
    sf.write(path, _after_noise(speech, NOISE_S), SAMPLE_RATE)
    assert main(["transcribe", str(path), "--vad-filter", "--output-format", "srt", "-o", str(tmp_path)]) == 0
    first_cue = (tmp_path / "late.srt").read_text().splitlines()[1]
    assert first_cue.startswith("00:00:40,") or first_cue.startswith("00:00:39,"), first_cue


def test_noise_alone_gives_no_segments(tiny_int8: WhisperModel) -> None:
    noise = _after_noise(np.zeros(0, np.float32), 20.0)
    segments, _ = tiny_int8.transcribe(noise, TranscribeOptions(vad_filter=VadFilter()))
    assert list(segments) == []


def test_spans_cover_the_speech_and_times_map_back(speech) -> None:
    """Two utterances 5 s apart after 3 s of silence: two padded spans; times in the kept audio
    map back to where the speech is in the input."""
    gap = silence(5.0)
    audio = np.concatenate([silence(3.0), speech, gap, speech])
    spans = speech_spans(audio, VadFilter())
    assert len(spans) == 2
    length = len(speech) / SAMPLE_RATE
    for (start, end), utterance in zip(spans, (3.0, 3.0 + length + 5.0), strict=True):
        # from just before the utterance's first word (it opens with a short pause) to past its end
        assert utterance - 0.5 <= start / SAMPLE_RATE <= utterance + 1.0
        assert utterance + length - 1.0 <= end / SAMPLE_RATE <= utterance + length + 0.5
    time_map = TimeMap(spans)
    first_length = (spans[0][1] - spans[0][0]) / SAMPLE_RATE
    assert time_map.original(0.0) == pytest.approx(spans[0][0] / SAMPLE_RATE)
    assert time_map.original(first_length, is_end=True) == pytest.approx(spans[0][1] / SAMPLE_RATE)
    assert time_map.original(first_length) == pytest.approx(spans[1][0] / SAMPLE_RATE)
