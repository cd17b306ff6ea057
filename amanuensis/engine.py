"""The public entry point: load a model once, transcribe many inputs with it."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import numpy as np

from amanuensis.models import DEFAULT_MODEL, WhisperCheckpoint
from amanuensis.runtime import ModelRuntime, RuntimeOptions
from amanuensis.samples import as_samples
from amanuensis.tokenizer import Tokenizer
from amanuensis.transcribe import ProgressCallback, Segment, TranscribeOptions, TranscriptionInfo, transcribe
from amanuensis.writers import Transcript


class WhisperModel:
    """Weights, tokenizer and inference sessions of one model, shareable across threads."""

    def __init__(self, checkpoint: WhisperCheckpoint, options: RuntimeOptions | None = None) -> None:
        self.checkpoint = checkpoint
        self.tokenizer = Tokenizer(checkpoint.files.tokenizer_path, checkpoint.is_multilingual)
        self.runtime = ModelRuntime(checkpoint, options)

    @property
    def name(self) -> str:
        return self.checkpoint.files.name

    def transcribe(
        self,
        audio: str | os.PathLike[str] | bytes | np.ndarray,
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Segments (lazy) and info for a file path, file bytes, or 16 kHz samples (see
        ``samples.as_samples`` for the arrays accepted)."""
        samples, replaced = as_samples(audio)
        if replaced:
            warnings.warn(f"{replaced} NaN or infinite samples were set to silence", RuntimeWarning, stacklevel=2)
        return transcribe(self.runtime, self.tokenizer, samples, options, progress)

    def transcribe_all(
        self,
        audio: str | os.PathLike[str] | bytes | np.ndarray,
        options: TranscribeOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> Transcript:
        segments, info = self.transcribe(audio, options, progress)
        segments = list(segments)
        return Transcript("".join(s.text for s in segments), info.language, info.duration, segments)


def load_model(name_or_dir: str = DEFAULT_MODEL, options: RuntimeOptions | None = None) -> WhisperModel:
    """Load ``tiny.en``, ``base`` or a CTranslate2 model directory (never downloads)."""
    return WhisperModel(WhisperCheckpoint.load(name_or_dir), options)
