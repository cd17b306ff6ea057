"""Streaming transcription: live audio in, partial and confirmed text out."""

from amanuensis.streaming.agreement import Word
from amanuensis.streaming.input import AudioFormat
from amanuensis.streaming.options import AgreementPolicy, StreamDecoding, StreamOptions, VadOptions
from amanuensis.streaming.stream import (
    CONFIRMED,
    PARTIAL,
    StreamEvent,
    StreamStats,
    TranscriptionStream,
    astream_chunks,
    confirmed_text,
    stream_chunks,
)

__all__ = [
    "CONFIRMED",
    "PARTIAL",
    "AgreementPolicy",
    "AudioFormat",
    "StreamDecoding",
    "StreamEvent",
    "StreamOptions",
    "StreamStats",
    "TranscriptionStream",
    "VadOptions",
    "Word",
    "astream_chunks",
    "confirmed_text",
    "stream_chunks",
]
