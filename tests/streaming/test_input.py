"""Chunked input conversion equals converting the whole recording at once."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from amanuensis.audio import AudioError, load_audio, resample
from amanuensis.streaming.input import AudioFormat, InputConverter, read_wav_header

from ..conftest import SAMPLE


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLE).samples


def _random_pieces(data: bytes | np.ndarray, seed: int, largest: int) -> list:
    rng = np.random.default_rng(seed)
    pieces, start = [], 0
    while start < len(data):
        size = int(rng.integers(1, largest))
        pieces.append(data[start : start + size])
        start += size
    return pieces


def test_int16_stereo_bytes_in_odd_pieces_convert_like_the_whole(speech: np.ndarray) -> None:
    # A 44.1 kHz stereo int16 stream, split at arbitrary byte offsets (mid-sample, mid-frame).
    left = resample(speech, 16000, 44100)
    frames = np.stack([left, 0.5 * left], axis=1)
    pcm = np.round(frames * 32767).astype("<i2").tobytes()
    fmt = AudioFormat(sample_rate=44100, channels=2, encoding="int16")

    whole = InputConverter(fmt)
    expected = np.concatenate([whole.convert(pcm), whole.flush()])
    chunked = InputConverter(fmt)
    got = np.concatenate([chunked.convert(p) for p in _random_pieces(pcm, 0, 9000)] + [chunked.flush()])

    assert chunked.frames_in == len(frames)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # Back at 16 kHz, the mono mix (0.75 × the original) survives the round trip.
    assert abs(len(got) - len(speech)) <= 2
    n = min(len(got), len(speech))
    error = got[:n] - 0.75 * speech[:n]
    assert 10 * np.log10(np.sum(speech[:n] ** 2) / np.sum(error**2)) > 30  # SNR, dB


def test_arrays_keep_partial_frames_and_check_their_shape() -> None:
    converter = InputConverter(AudioFormat(channels=2))
    interleaved = np.arange(10, dtype=np.float32)  # five stereo frames
    first = converter.convert(interleaved[:3])  # ends mid-frame
    second = converter.convert(interleaved[3:])
    np.testing.assert_array_equal(np.concatenate([first, second]), [0.5, 2.5, 4.5, 6.5, 8.5])
    np.testing.assert_array_equal(converter.convert(np.array([[1, 3]], np.int16)), [2 / 32768])
    with pytest.raises(ValueError, match="3 channels"):
        converter.convert(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="float or int16"):
        converter.convert(np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="encoding"):
        AudioFormat(encoding="mulaw")


@pytest.mark.parametrize(("subtype", "encoding"), [("PCM_16", "int16"), ("FLOAT", "float32")])
def test_wav_header_from_a_pipe(subtype: str, encoding: str) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((100, 2), np.float32), 22050, format="WAV", subtype=subtype)
    data = buffer.getvalue()
    stream = io.BytesIO(data[4:])  # the first bytes were already read to recognise RIFF
    assert read_wav_header(stream, data[:4]) == AudioFormat(22050, 2, encoding)
    assert len(stream.read()) == 100 * 2 * (2 if encoding == "int16" else 4)  # exactly the samples remain


def test_wav_header_rejects_what_it_cannot_stream() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(100, np.float32), 16000, format="WAV", subtype="PCM_24")
    with pytest.raises(AudioError, match="16-bit PCM or 32-bit float"):
        read_wav_header(io.BytesIO(buffer.getvalue()))
    with pytest.raises(AudioError, match="RIFF"):
        read_wav_header(io.BytesIO(b"ID3\x04" + bytes(40)))
    with pytest.raises(AudioError, match="ends early"):
        read_wav_header(io.BytesIO(buffer.getvalue()[:20]))
