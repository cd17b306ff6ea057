"""A file's decoded samples kept on disk, so transcribing it takes memory that does not grow with
its length (an hour of 16 kHz float32 is 230 MB, and decoding it whole made copies of that).

``open_audio`` decodes a block at a time (libsndfile's blocks, down-mixed, NaN/inf silenced,
resampled by a streaming soxr resampler with the same quality as ``audio.resample``) into an
anonymous temporary file; ``SampleFile.read`` gives any stretch back. Formats libsndfile cannot
read are decoded whole in memory by ``audio.load_audio``.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from amanuensis.audio import (
    SAMPLE_RATE,
    AudioError,
    DecodedAudio,
    Samples,
    checked_audio_path,
    load_audio,
    mono_16k,
    read_with_soundfile,
    replace_non_finite,
)

BLOCK_SECONDS = 30  # seconds of the source decoded at a time
# Each block is read from a point this far before it, after a seek, and the lead is dropped.
# libsndfile's MP3 decoder gave other samples just after a plain read boundary (a few hundred per
# boundary, 2026-12-01); after a seek with two frames (2304 samples) of lead or more, the same
# samples as one whole read. Other formats read the same either way.
LEAD_SECONDS = 1
SAMPLE_BYTES = np.dtype(np.float32).itemsize


class SampleFile:
    """Mono 16 kHz float32 samples in a temporary file (unlinked at once: nothing is left behind)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="amanuensis-samples-")  # noqa: SIM115 (lives with the object)
        self._length = 0

    def append(self, samples: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(samples, np.float32).tobytes())
        self._length += len(samples)

    def __len__(self) -> int:
        return self._length

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start`` … ``stop``, clipped to the file (thread-safe: one positioned read)."""
        start, stop = max(start, 0), min(stop, self._length)
        if stop <= start:
            return np.zeros(0, np.float32)
        self._file.flush()
        data = os.pread(self._file.fileno(), (stop - start) * SAMPLE_BYTES, start * SAMPLE_BYTES)
        return np.frombuffer(data, np.float32)

    def close(self) -> None:
        self._file.close()


def _stream_to_file(path: Path) -> tuple[SampleFile, int, int, int] | None:
    """(samples, source rate, source channels, silenced samples), or None where libsndfile cannot read it."""
    import soundfile as sf
    import soxr

    try:
        source = sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    with source:
        rate, channels, frames = source.samplerate, source.channels, source.frames
        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        samples, replaced = SampleFile(), 0
        block, lead = BLOCK_SECONDS * rate, LEAD_SECONDS * rate
        try:
            for start in range(0, frames, block):
                first = max(start - lead, 0)
                source.seek(first)
                data = source.read(min(block, frames - start) + start - first, dtype="float32", always_2d=True)
                data = data[start - first :]
                mono = data.mean(axis=1) if channels > 1 else data[:, 0]
                mono, bad = replace_non_finite(mono)
                replaced += bad
                samples.append(mono if rate == SAMPLE_RATE else resampler.resample_chunk(mono))
            if rate != SAMPLE_RATE:
                samples.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
        except (sf.LibsndfileError, RuntimeError) as exc:
            samples.close()
            raise AudioError(f"{path}: not a readable audio file (corrupt or truncated: {exc})") from None
    if len(samples) == 0:
        samples.close()
        raise AudioError(f"{path}: contains no audio samples")
    return samples, rate, channels, replaced


def open_audio(path: str | os.PathLike[str]) -> DecodedAudio:
    """``load_audio``, with the samples on disk (a ``SampleFile``) where libsndfile can stream the file."""
    path = checked_audio_path(path)
    streamed = _stream_to_file(path)
    if streamed is None:
        return load_audio(path)  # decodes what libsndfile cannot, or says it cannot be read
    samples, rate, channels, replaced = streamed
    return DecodedAudio(samples, rate, channels, replaced)  # type: ignore[arg-type]


INTEGER_FULL_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int8): 128.0}
MAX_CHANNELS = 8  # a 2-D array with one side this short is read as (samples, channels) or its transpose


def as_samples(audio: object) -> tuple[Samples, int]:
    """Whatever the Python API was given, as mono float32 samples at 16 kHz (and how many
    non-finite samples were silenced), or an AudioError saying what was wrong.

    A path or file bytes are decoded; an array or list is taken to be 16 kHz already: float in
    [-1, 1], or integer PCM (int8/16/32, scaled to full scale; uint8 around 128). A 2-D array with
    up to ``MAX_CHANNELS`` channels on either side is averaged to mono.
    """
    if isinstance(audio, SampleFile):
        return audio, 0
    if isinstance(audio, (str, os.PathLike)):
        decoded = open_audio(audio)
        return decoded.samples, decoded.replaced_samples
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return _decode_bytes(bytes(audio))
    if isinstance(audio, (list, tuple)):
        audio = np.asarray(audio)
    if not isinstance(audio, np.ndarray):
        raise AudioError(f"cannot transcribe a {type(audio).__name__}: pass a file path, file bytes or a numpy array")
    return _array_samples(audio)


def _array_samples(array: np.ndarray) -> tuple[np.ndarray, int]:
    if array.ndim == 2 and min(array.shape) <= MAX_CHANNELS:
        array = array.mean(axis=int(np.argmin(array.shape)))
    if array.ndim != 1:
        raise AudioError(f"expected mono samples of shape (n,) or (n, channels), got an array of shape {array.shape}")
    if array.size == 0:
        raise AudioError("the audio contains no samples")
    if array.dtype in INTEGER_FULL_SCALE:
        array = array.astype(np.float32) / np.float32(INTEGER_FULL_SCALE[array.dtype])
    elif array.dtype == np.uint8:
        array = (array.astype(np.float32) - 128.0) / 128.0
    elif not np.issubdtype(array.dtype, np.floating):
        raise AudioError(f"audio samples must be float or integer PCM, got {array.dtype}")
    return replace_non_finite(array.astype(np.float32, copy=False))


def _decode_bytes(data: bytes) -> tuple[np.ndarray, int]:
    """The bytes of an audio file (wav, flac, ogg, mp3), decoded in memory."""
    decoded = read_with_soundfile(io.BytesIO(data))
    if decoded is None:
        raise AudioError(
            "these bytes are not an audio file soundfile can read; for raw PCM, pass an array "
            "(e.g. np.frombuffer(data, np.int16)) at 16 kHz"
        )
    audio = mono_16k(*decoded, where="the audio bytes")
    return audio.samples, audio.replaced_samples
