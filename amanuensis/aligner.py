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
from amanuensis.export.io_names import cross_kv_names, new_kv_names, run_time_names
from amanuensis.runtime import CrossKV, KVCache, ModelRuntime, block_feed, make_session

ALIGNMENT_BLOCK = 32  # tokens per run: a window's 20–120 tokens take 1–4 runs, not one padded to 232


class Aligner:
    """Runs the alignment block graph of ``runtime``'s checkpoint over a window's tokens, a block
    at a time with a self-attention cache (as the prompt prefill does)."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.dims = runtime.checkpoint.dims
        path = export.graph_path(runtime.checkpoint, GraphKind.ALIGNMENT, ALIGNMENT_BLOCK)
        cpu = devices.plan("onnxruntime", "cpu", None, allow_fallback=True)
        self.session = make_session(path, runtime.options, cpu)
        self._quantized = runtime.decoder(1).cross_params  # empty unless the decoder takes 8-bit K/V
        layers = range(self.dims.n_text_layer)
        self._outputs = ["alignment_scores"] + [n for i in layers for n in new_kv_names(i)]

    def scores(self, tokens: list[int], cross: CrossKV) -> np.ndarray:
        """(heads, len(tokens), audio frames) scores q·k/√Dh of the alignment heads."""
        cache = KVCache(self.dims, 1)
        if len(tokens) > cache.capacity:
            raise ValueError(f"{len(tokens)} tokens do not fit the decoder's {cache.capacity}")
        floats = self._float_cross(cross)
        blocks = []
        for start in range(0, len(tokens), ALIGNMENT_BLOCK):
            chunk = tokens[start : start + ALIGNMENT_BLOCK]
            scores, *new_kv = self.session.run(self._outputs, block_feed(chunk, ALIGNMENT_BLOCK, cache, floats))
            cache.write_block(new_kv[0::2], new_kv[1::2], len(chunk))
            blocks.append(scores[:, : len(chunk)])
        return np.concatenate(blocks, axis=1)

    def _float_cross(self, cross: CrossKV) -> CrossKV:
        floats = {}
        for layer in range(self.dims.n_text_layer):
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
