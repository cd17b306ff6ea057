"""Amanuensis: offline Whisper transcription on static ONNX graphs."""

from amanuensis.engine import WhisperModel, load_model
from amanuensis.timing import Word
from amanuensis.transcribe import Segment, TranscribeOptions, TranscriptionInfo

__version__ = "0.1.0"
__all__ = ["Segment", "TranscribeOptions", "TranscriptionInfo", "WhisperModel", "Word", "load_model"]
