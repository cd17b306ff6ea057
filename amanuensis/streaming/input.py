"""Live audio in any common PCM layout, turned into the model's mono 16 kHz float32.

Chunks arrive in arbitrary sizes, so conversion is stateful: a byte chunk may end inside a
sample, an array chunk inside a multi-channel frame, and resampling keeps filter state across
chunk edges (soxr's streaming resampler) so that chunked audio equals audio converted whole.
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from amanuensis.audio import SAMPLE_RATE, AudioError, replace_non_finite
from amanuensis.errors import OptionsError

ENCODINGS = {"float32": np.dtype("<f4"), "int16": np.dtype("<i2")}  # PCM layouts accepted as bytes
INT16_FULL_SCALE = 32768.0  # int16 PCM value of 1.0
WAV_FORMAT_PCM = 1  # WAVE_FORMAT_PCM
WAV_FORMAT_FLOAT = 3  # WAVE_FORMAT_IEEE_FLOAT
WAV_FORMAT_EXTENSIBLE = 0xFFFE  # the real format code sits in the extension's GUID


@dataclass(frozen=True)
class AudioFormat:
    """What the caller feeds; the stream converts it to mono 16 kHz float32."""

    sample_rate: int = SAMPLE_RATE  # Hz
    channels: int = 1  # interleaved channels, averaged to mono
    encoding: str = "float32"  # "float32" (−1…1) or "int16"; how bytes are read (arrays carry their dtype)

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise OptionsError(f"sample rate must be positive, got {self.sample_rate}")
        if self.channels < 1:
            raise OptionsError(f"channels must be at least 1, got {self.channels}")
        if self.encoding not in ENCODINGS:
            raise OptionsError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")

    @property
    def bytes_per_frame(self) -> int:
        return ENCODINGS[self.encoding].itemsize * self.channels


# Bytes of 16-bit PCM read as float32 turn every quiet negative sample into NaN: so many non-finite
# samples in one chunk mean a wrong format, not a glitch.
WRONG_FORMAT_SHARE = 0.01
MIN_FORMAT_CHECK = 256  # samples a chunk needs before the share is judged


class InputConverter:
    """Stateful chunk converter for one stream."""

    def __init__(self, audio_format: AudioFormat) -> None:
        self.format = audio_format
        self._pending_bytes = b""  # tail of a byte chunk shorter than one frame
        self._pending_frame = np.zeros((0,), np.float32)  # tail of an array chunk shorter than one frame
        self._resampler = None
        if audio_format.sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(audio_format.sample_rate, SAMPLE_RATE, 1, dtype="float32")
        self.frames_in = 0  # frames (one sample per channel) received in the caller's format
        self.replaced_samples = 0  # NaN/inf samples set to silence so far

    def convert(self, chunk: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
        """Model samples for this chunk (may be empty while a resampler or frame fills up)."""
        mono = self._to_mono(self._to_frames(chunk))
        mono, replaced = replace_non_finite(mono)
        if replaced and len(mono) >= MIN_FORMAT_CHECK and replaced > WRONG_FORMAT_SHARE * len(mono):
            raise AudioError(
                f"{replaced} of {len(mono)} samples in this chunk are NaN or infinite: the audio is not "
                f"{self.format.encoding}; declare its format (e.g. AudioFormat(encoding='int16') for 16-bit PCM)"
            )
        if replaced and not self.replaced_samples:
            warnings.warn("NaN or infinite samples in the stream are set to silence", RuntimeWarning, stacklevel=3)
        self.replaced_samples += replaced
        self.frames_in += len(mono)
        if self._resampler is None:
            return mono
        return self._resampler.resample_chunk(mono, last=False)

    def flush(self) -> np.ndarray:
        """What the resampler still holds at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, np.float32)
        return self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)

    def _to_frames(self, chunk: np.ndarray | bytes | bytearray | memoryview) -> np.ndarray:
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            data = self._pending_bytes + bytes(chunk)
            usable = len(data) // self.format.bytes_per_frame * self.format.bytes_per_frame
            self._pending_bytes = data[usable:]
            samples = np.frombuffer(data[:usable], ENCODINGS[self.format.encoding])
            return _as_float(samples).reshape(-1, self.format.channels)
        array = np.asarray(chunk)
        if array.ndim == 2:
            if array.shape[1] != self.format.channels:
                raise OptionsError(
                    f"chunk has {array.shape[1]} channels (shape {array.shape}), format says {self.format.channels}"
                )
            return _as_float(array)
        if array.ndim != 1:
            raise OptionsError(f"audio chunks must be 1-D (interleaved) or 2-D (frames × channels), got {array.shape}")
        samples = np.concatenate([self._pending_frame, _as_float(array)])
        usable = len(samples) // self.format.channels * self.format.channels
        self._pending_frame = samples[usable:]
        return samples[:usable].reshape(-1, self.format.channels)

    @staticmethod
    def _to_mono(frames: np.ndarray) -> np.ndarray:
        mono = frames[:, 0] if frames.shape[1] == 1 else frames.mean(axis=1)
        return np.ascontiguousarray(mono, np.float32)


def _as_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / INT16_FULL_SCALE
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise OptionsError(f"audio samples must be float or int16, got {samples.dtype}")


def read_wav_header(stream: BinaryIO, first: bytes = b"") -> AudioFormat:
    """Parse a RIFF/WAVE header from a (possibly unseekable) byte stream, up to the data chunk.

    ``first`` holds bytes already read from the stream. Used for wav piped on stdin, whose data
    length is often unknown (0 or 0xFFFFFFFF), so only the format is taken from the header.
    """
    buffer = bytearray(first)

    def take(count: int) -> bytes:
        while len(buffer) < count:
            more = stream.read(count - len(buffer))
            if not more:
                raise AudioError("wav header ends early")
            buffer.extend(more)
        out = bytes(buffer[:count])
        del buffer[:count]
        return out

    riff, _, wave = struct.unpack("<4sI4s", take(12))
    if riff != b"RIFF" or wave != b"WAVE":
        raise AudioError("not a RIFF/WAVE stream")
    audio_format: AudioFormat | None = None
    while True:
        chunk_id, size = struct.unpack("<4sI", take(8))
        if chunk_id == b"data":
            if audio_format is None:
                raise AudioError("wav data chunk comes before its fmt chunk")
            return audio_format
        body = take(size + (size & 1))  # chunks are padded to even length
        if chunk_id == b"fmt ":
            code, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if code == WAV_FORMAT_EXTENSIBLE and len(body) >= 26:
                code = struct.unpack("<H", body[24:26])[0]
            if code == WAV_FORMAT_PCM and bits == 16:
                encoding = "int16"
            elif code == WAV_FORMAT_FLOAT and bits == 32:
                encoding = "float32"
            else:
                raise AudioError(f"wav on stdin must be 16-bit PCM or 32-bit float (got format {code}, {bits} bits)")
            audio_format = AudioFormat(sample_rate=rate, channels=channels, encoding=encoding)
