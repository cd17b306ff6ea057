"""The alignment graph's session: cross-attention scores of the alignment heads for a window's tokens.

Word timestamps are read from these scores (``amanuensis.timing``). The graph is FP32 and runs on
onnxruntime's CPU EP whatever runs the model, since 8-bit attention over 1500 frames loses most of
what the method reads; an INT8 model's 8-bit cross K/V are dequantized for it.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from amanuensis import devices, export
from amanuensis.export import GraphKind
from amanuensis.export.io_names import cross_kv_names, run_time_names
from amanuensis.runtime import CrossKV, ModelRuntime, make_session


def alignment_tokens(n_text_ctx: int) -> int:
    """Tokens one alignment run takes: a window's text (at most half the context, as sampled)
    plus the start-of-transcript sequence, <|notimestamps|> and <|endoftext|>, rounded up to 8."""
    return n_text_ctx // 2 + 8


class Aligner:
    """Runs the alignment graph of ``runtime``'s checkpoint, created on first use."""

    def __init__(self, runtime: ModelRuntime) -> None:
        dims = runtime.checkpoint.dims
        self.n_tokens = alignment_tokens(dims.n_text_ctx)
        self.n_layers = dims.n_text_layer
        path = export.graph_path(runtime.checkpoint, GraphKind.ALIGNMENT, self.n_tokens)
        cpu = devices.plan("onnxruntime", "cpu", None, allow_fallback=True)
        self.session = make_session(path, runtime.options, cpu)
        self._quantized = runtime.decoder(1).cross_params  # empty unless the decoder takes 8-bit K/V

    def scores(self, tokens: list[int], cross: CrossKV) -> np.ndarray:
        """(heads, len(tokens), audio frames) scores q·k/√Dh of the alignment heads."""
        if len(tokens) > self.n_tokens:
            raise ValueError(f"{len(tokens)} tokens do not fit the alignment graph's {self.n_tokens}")
        padded = np.zeros((1, self.n_tokens), np.int64)  # after the real tokens: never attended to by them
        padded[0, : len(tokens)] = tokens
        feed = {"tokens": padded} | self._float_cross(cross)
        (scores,) = self.session.run(["alignment_scores"], feed)
        return scores[:, : len(tokens)]

    def _float_cross(self, cross: CrossKV) -> CrossKV:
        floats = {}
        for layer in range(self.n_layers):
            for name in cross_kv_names(layer):
                value, params = cross[name], self._quantized.get(name)
                if params is None:
                    floats[name] = value
                    continue
                if params.get("run_time"):
                    scale_name, zero_name = run_time_names(name)
                    scale, zero_point = cross[scale_name], cross[zero_name]
                else:
                    scale, zero_point = params["scale"], params["zero_point"]
                floats[name] = (value.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
        return floats


_aligners: weakref.WeakKeyDictionary[ModelRuntime, Aligner] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def aligner_for(runtime: ModelRuntime) -> Aligner:
    """The runtime's aligner, made on first use (word timestamps only: most runs never need it)."""
    with _lock:
        if runtime not in _aligners:
            _aligners[runtime] = Aligner(runtime)
        return _aligners[runtime]
