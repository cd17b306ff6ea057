"""Streaming transcription: live audio in, partial and confirmed text out."""

from amanuensis.streaming.agreement import Word
from amanuensis.streaming.input import AudioFormat
from amanuensis.streaming.stream import (
    CONFIRMED,
    PARTIAL,
    StreamEvent,
    StreamOptions,
    StreamStats,
    TranscriptionStream,
    astream_chunks,
    confirmed_text,
    stream_chunks,
)

__all__ = [
    "CONFIRMED",
    "PARTIAL",
    "AudioFormat",
    "StreamEvent",
    "StreamOptions",
    "StreamStats",
    "TranscriptionStream",
    "Word",
    "astream_chunks",
    "confirmed_text",
    "stream_chunks",
]
