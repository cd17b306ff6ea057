"""Chunk sources for a stream: a file played at a chosen speed, or PCM/wav arriving on a pipe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from amanuensis.audio import SAMPLE_RATE, AudioError, load_audio
from amanuensis.streaming.input import AudioFormat, read_wav_header

DEFAULT_CHUNK_S = 0.1  # seconds of audio per chunk read from a file or a pipe
RIFF_MAGIC = b"RIFF"


def paced(chunks: Iterator[np.ndarray], realtime_factor: float) -> Iterator[np.ndarray]:
    """Release 16 kHz chunks no faster than ``realtime_factor`` × real time (0 = no pacing)."""
    started = time.perf_counter()
    released = 0
    for chunk in chunks:
        released += len(chunk)
        if realtime_factor > 0:
            due = started + released / SAMPLE_RATE / realtime_factor
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        yield chunk


def file_chunks(path: str, chunk_s: float = DEFAULT_CHUNK_S) -> Iterator[np.ndarray]:
    """A decoded file (any format load_audio reads) in 16 kHz chunks of ``chunk_s`` seconds.

    The file is decoded before this returns, so a bad file fails at once, not at the first chunk.
    """
    samples = load_audio(path).samples
    step = max(1, round(chunk_s * SAMPLE_RATE))
    return (samples[start : start + step] for start in range(0, len(samples), step))


def pipe_chunks(
    pipe: BinaryIO, raw_format: AudioFormat, chunk_s: float = DEFAULT_CHUNK_S
) -> tuple[AudioFormat, Iterator[bytes]]:
    """The format and the byte chunks of a pipe carrying wav (header read) or raw PCM (``raw_format``)."""
    first = pipe.read(len(RIFF_MAGIC))
    if not first:
        raise AudioError("no audio on the input")
    audio_format = read_wav_header(pipe, first) if first == RIFF_MAGIC else raw_format
    size = max(audio_format.bytes_per_frame, round(chunk_s * audio_format.sample_rate) * audio_format.bytes_per_frame)

    def chunks() -> Iterator[bytes]:
        if first != RIFF_MAGIC:
            yield first
        while True:
            data = pipe.read(size)
            if not data:
                return
            yield data

    return audio_format, chunks()
