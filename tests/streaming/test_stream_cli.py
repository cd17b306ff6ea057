"""``amanuensis stream``: a file in simulated real time, or wav / raw PCM on stdin."""

from __future__ import annotations

import io
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from amanuensis.audio import load_audio, resample
from amanuensis.evaluation import word_error_rate

from ..conftest import SAMPLE, SAMPLE_REFERENCE
from ..test_cli import EXE, run

LINE = re.compile(r"^\[(\d\d):(\d\d\.\d{3}) --> (\d\d):(\d\d\.\d{3})\] (.+)$")


def run_with_stdin(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The console script reading stdin; an update each second (the input paths are what is
    tested here, and a quarter of the updates keeps these process tests short)."""
    assert EXE
    command = [EXE, "stream", "-", "--update-interval", "1.0", *args]
    return subprocess.run(command, input=data, capture_output=True, timeout=600)


def _text_of(lines: list[str]) -> str:
    return " ".join(LINE.match(line).group(5) for line in lines)


def test_streams_a_file_with_timestamped_confirmed_lines() -> None:
    result = run("stream", SAMPLE, "--realtime-factor", "0", "--verbose")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) >= 4 and all(LINE.match(line) for line in lines), lines
    assert word_error_rate([SAMPLE_REFERENCE], [_text_of(lines)]) == 0.0
    assert "samples fed" in result.stderr and "0 left" in result.stderr
    assert "\x1b[" not in result.stderr  # no partials when stderr is not a terminal


def test_realtime_pacing_is_honoured(tmp_path: Path) -> None:
    path, duration = tmp_path / "first_words.wav", 3.0
    sf.write(path, load_audio(SAMPLE).samples[: round(duration * 16000)], 16000)
    started = time.perf_counter()
    result = run("stream", path, "--realtime-factor", "1", "--no-timestamps")
    assert time.perf_counter() - started >= duration  # fed no faster than real time (processing alone is faster)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:5] == ["If", "the", "reader", "will", "excuse"]


def test_reads_wav_from_stdin() -> None:
    samples = load_audio(SAMPLE).samples
    buffer = io.BytesIO()
    sf.write(buffer, resample(samples, 16000, 22050), 22050, format="WAV", subtype="PCM_16")
    result = run_with_stdin(buffer.getvalue(), "--no-timestamps")
    assert result.returncode == 0, result.stderr.decode()
    assert word_error_rate([SAMPLE_REFERENCE], [result.stdout.decode()]) == 0.0


def test_reads_raw_stereo_pcm_from_stdin() -> None:
    mono = np.round(resample(load_audio(SAMPLE).samples, 16000, 8000) * 32767).astype("<i2")
    result = run_with_stdin(np.repeat(mono, 2).tobytes(), "--sample-rate", "8000", "--channels", "2")
    assert result.returncode == 0, result.stderr.decode()
    assert word_error_rate([SAMPLE_REFERENCE], [_text_of(result.stdout.decode().splitlines())]) < 15.0


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    missing = run("stream", tmp_path / "nothing.wav")
    assert missing.returncode == 1 and missing.stderr.strip().endswith("no such file")
    assert "Traceback" not in missing.stderr
    empty = run_with_stdin(b"")
    assert empty.returncode == 1 and b"no audio on the input" in empty.stderr
    bad_wav = run_with_stdin(b"RIFF" + bytes(4) + b"WAVEfmt ")
    assert bad_wav.returncode == 1 and b"wav header ends early" in bad_wav.stderr
    assert run("stream", SAMPLE, "--update-interval", "0").returncode == 2
    one_vote = run("stream", SAMPLE, "--agreement", "1")
    assert one_vote.returncode == 2 and "at least 2 hypotheses" in one_vote.stderr


def test_silence_says_nothing_was_heard(tmp_path: Path) -> None:
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(16000 * 5, np.float32), 16000)
    result = run("stream", path, "--realtime-factor", "0")
    assert result.returncode == 0 and result.stdout == ""
    assert "no speech heard in 5.0 s" in result.stderr


def test_policy_flags_come_from_the_options_with_their_defaults() -> None:
    """`stream` has a flag for each flagged AgreementPolicy field, with the field's default; what
    they parse to is the policy (the tools build their flags the same way)."""
    import argparse

    from amanuensis.cli.flags import add_flags, from_flags
    from amanuensis.streaming import AgreementPolicy, StreamDecoding
    from amanuensis.transcribe import TranscribeOptions

    parser = argparse.ArgumentParser()
    add_flags(parser, AgreementPolicy)
    assert from_flags(AgreementPolicy, parser.parse_args([])) == AgreementPolicy()
    chosen = from_flags(AgreementPolicy, parser.parse_args(["--agreement", "3", "--trim-after", "12.5"]))
    assert chosen == AgreementPolicy(agreement=3, trim_after_s=12.5)
    help_text = run("stream", "--help").stdout
    for flag in ("--update-interval", "--agreement-span", "--unsure-probability", "--unsure-hold", "--lookahead"):
        assert flag in help_text
    # Whisper's checks have one default, offline and streaming alike
    offline, streaming = TranscribeOptions(), StreamDecoding()
    assert streaming.logprob_threshold == offline.logprob_threshold
    assert streaming.compression_ratio_threshold == offline.compression_ratio_threshold
    assert streaming.no_speech_threshold == offline.no_speech_threshold
