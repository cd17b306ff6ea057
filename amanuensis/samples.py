"""A file's decoded samples kept on disk, so transcribing it takes memory that does not grow with
its length (an hour of 16 kHz float32 is 230 MB, and decoding it whole made copies of that).

``open_audio`` decodes a block at a time (libsndfile's blocks, down-mixed, NaN/inf silenced,
resampled by a streaming soxr resampler with the same quality as ``audio.resample``) into an
anonymous temporary file; ``SampleFile.read`` gives any stretch back. Formats libsndfile cannot
read are decoded whole in memory by ``audio.load_audio``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from amanuensis.audio import SAMPLE_RATE, AudioError, DecodedAudio, load_audio, replace_non_finite

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
    path = Path(path)
    checked = path.is_file() and path.stat().st_size > 0 and os.access(path, os.R_OK)
    streamed = _stream_to_file(path) if checked else None
    if streamed is None:
        return load_audio(path)  # says what is wrong, or decodes what libsndfile cannot
    samples, rate, channels, replaced = streamed
    return DecodedAudio(samples, rate, channels, replaced)  # type: ignore[arg-type]
