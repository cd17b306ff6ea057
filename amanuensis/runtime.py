"""ONNX Runtime sessions for the exported graphs, and the host-side KV cache.

The decoder graph returns only the new token's keys and values; ``KVCache`` writes them into
preallocated fixed-size arrays in place, so a step costs the same at token 1 and token 400
and nothing grows.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from amanuensis import devices, export
from amanuensis.devices import CPU_EP, SessionPlan
from amanuensis.errors import OptionsError
from amanuensis.export import ENCODER_QUERY_CHUNKS, GraphKind
from amanuensis.export.io_names import MASKED_SCORE, Feed, cross_kv_names, new_kv_names, run_time_names, self_kv_names
from amanuensis.models import ModelDims, WhisperCheckpoint
from amanuensis.precision import choose_precision
from amanuensis.sessions import GraphSession, SessionSettings, nodes_per_ep, open_session

DEFAULT_THREADS = 0  # 0 lets onnxruntime use one thread per physical core


@dataclass(frozen=True)
class RuntimeOptions:
    """How sessions are created and where they run."""

    # "auto": INT8 where the model has a calibration for where it runs, else FP32 (amanuensis.precision);
    # "int8" (an error without one) or "fp32"
    precision: str = "auto"
    device: str = "auto"  # "auto" | "npu" | "gpu" | "cpu"; auto = an NPU if one is present, else the CPU
    backend: str = "onnxruntime"  # "onnxruntime" | "openvino"
    ep: str | None = None  # onnxruntime only: one execution provider by name (overrides device)
    allow_fallback: bool = True  # False: a missing device or an unsupported node is an error, not CPU work
    threads: int = DEFAULT_THREADS  # intra-op threads per session
    range_table: Path | None = None  # INT8 only: calibration table to build from (None = the shipped one)

    def plan(self) -> SessionPlan:
        return devices.plan(self.backend, self.device, self.ep, self.allow_fallback)

    def settings(self) -> SessionSettings:
        exact = False
        if self.precision == "int8":
            from amanuensis.quantize.kernels import needs_exact_products

            exact = needs_exact_products()
        return SessionSettings(threads=self.threads, allow_fallback=self.allow_fallback, exact_integer_products=exact)


def make_session(path: Path, options: RuntimeOptions, session_plan: SessionPlan | None = None) -> GraphSession:
    return open_session(path, session_plan or options.plan(), options.settings())


CrossKV = dict[str, np.ndarray]  # cross_k_i / cross_v_i arrays from the encoder
FeedObserver = Callable[[Feed], None]  # sees every input a graph is given (calibration records them)


def graph_paths(
    checkpoint: WhisperCheckpoint, options: RuntimeOptions
) -> tuple[Callable[[], Path], Callable[[int], Path], Callable[[int], Path] | None]:
    """Encoder, decoder-step (by batch) and prefill (by block length; None where INT8 has none,
    see quantize.int8_graph_paths) path getters."""
    if options.precision == "fp32":
        return (
            lambda: export.graph_path(checkpoint, GraphKind.ENCODER),
            lambda batch: export.graph_path(checkpoint, GraphKind.DECODER, batch),
            lambda n_tokens: export.graph_path(checkpoint, GraphKind.PREFILL, n_tokens),
        )
    if options.precision == "int8":
        from amanuensis.quantize import int8_graph_paths

        return int8_graph_paths(checkpoint, options.range_table)
    raise OptionsError(f"unknown precision {options.precision!r} (expected fp32 or int8)")


QuantizedTensors = dict[str, dict]  # tensor name → {"scale", "zero_point", "dtype"} (export.quantized_io)


def _on_cpu_ep(plan: SessionPlan) -> bool:
    return plan.backend == "onnxruntime" and plan.ep == CPU_EP


class Encoder:
    def __init__(
        self,
        path: Path,
        dims: ModelDims,
        options: RuntimeOptions,
        session_plan: SessionPlan | None = None,
        cross_params: QuantizedTensors | None = None,
    ) -> None:
        """``cross_params``: cross K/V outputs to hand over quantized (to a quantized-I/O decoder)."""
        self.path = path  # the graph as exported (or quantized); the session may run a rewritten copy
        session_plan = session_plan or options.plan()
        run_path = path
        if _on_cpu_ep(session_plan):
            run_path = export.query_chunked_path(path, ENCODER_QUERY_CHUNKS)
        if cross_params:
            run_path = export.quantized_output_encoder_path(run_path, cross_params)
        self.session = make_session(run_path, options, session_plan)
        self.dims = dims
        self.observer: FeedObserver | None = None
        names = [n for layer in range(self.dims.n_text_layer) for n in cross_kv_names(layer)]
        # tensors quantized at run time hand over their scale and zero point too
        run_time = [n for n, p in (cross_params or {}).items() if p.get("run_time")]
        self._names = names + [extra for n in run_time for extra in run_time_names(n)]

    def __call__(self, mel_window: np.ndarray) -> CrossKV:
        """mel_window: (n_mels, 3000) float32."""
        names = self._names
        feed = {"mel": mel_window[None].astype(np.float32, copy=False)}
        if self.observer:
            self.observer(feed)
        outputs = self.session.run(names, feed)
        return dict(zip(names, outputs, strict=True))


def _empty_cache(shape: tuple[int, ...], quantized: dict | None) -> np.ndarray:
    """A cache array of zeros: float, or 8-bit holding the quantized 0.0 (its zero point)."""
    if quantized is None:
        return np.zeros(shape, np.float32)
    return np.full(shape, quantized["zero_point"], np.dtype(quantized["dtype"]))


class KVCache:
    """Fixed-size self-attention cache for one batch of hypotheses."""

    def __init__(self, dims: ModelDims, batch: int, quantized: QuantizedTensors | None = None) -> None:
        """``quantized``: cache inputs the decoder takes in 8 bits, with their parameters."""
        h, dh, ctx = dims.n_text_head, dims.n_text_state // dims.n_text_head, dims.n_text_ctx
        self.capacity = ctx
        layers = [self_kv_names(layer) for layer in range(dims.n_text_layer)]
        self.keys = [_empty_cache((batch, h, dh, ctx), (quantized or {}).get(k)) for k, _ in layers]
        self.values = [_empty_cache((batch, h, ctx, dh), (quantized or {}).get(v)) for _, v in layers]
        self.mask = np.full((1, ctx), MASKED_SCORE, np.float32)
        self.length = 0  # filled slots; also the position of the next token

    def write(self, new_keys: list[np.ndarray], new_values: list[np.ndarray]) -> None:
        slot = self.length
        for cache, new in zip(self.keys, new_keys, strict=True):
            cache[..., slot] = new[..., 0]
        for cache, new in zip(self.values, new_values, strict=True):
            cache[:, :, slot, :] = new[:, :, 0, :]
        self.mask[0, slot] = 0.0
        self.length += 1

    def inputs(self, rows: int | None = None, slots: int | None = None) -> dict[str, np.ndarray]:
        """The cache as decoder graph inputs: the first ``rows`` hypotheses and ``slots`` slots, or all
        (a part is copied into contiguous arrays, as onnxruntime takes them)."""
        feed = {}
        for layer, (keys, values) in enumerate(zip(self.keys, self.values, strict=True)):
            k_name, v_name = self_kv_names(layer)
            if slots is None:
                feed[k_name], feed[v_name] = keys[:rows], values[:rows]
            else:
                feed[k_name] = np.ascontiguousarray(keys[:rows, ..., :slots])
                feed[v_name] = np.ascontiguousarray(values[:rows, :, :slots])
        return feed

    def write_block(self, new_keys: list[np.ndarray], new_values: list[np.ndarray], count: int) -> None:
        """The first ``count`` positions of a prefill block, into every batch row."""
        slots = slice(self.length, self.length + count)
        for cache, new in zip(self.keys, new_keys, strict=True):
            cache[..., slots] = new[..., :count]
        for cache, new in zip(self.values, new_values, strict=True):
            cache[:, :, slots, :] = new[:, :, :count, :]
        self.mask[0, slots] = 0.0
        self.length += count

    def copy(self) -> KVCache:
        """An independent cache with the same contents (samples that share a prefilled prompt)."""
        return copy.deepcopy(self)

    def reorder(self, order: np.ndarray) -> None:
        """Beam search: hypothesis i continues from hypothesis order[i]."""
        if np.array_equal(order, np.arange(len(order))):
            return
        self.keys = [k[order] for k in self.keys]
        self.values = [v[order] for v in self.values]


class Decoder:
    """One-token decoder step for a fixed batch size."""

    def __init__(
        self,
        path: Path,
        dims: ModelDims,
        options: RuntimeOptions,
        batch: int,
        session_plan: SessionPlan | None = None,
        quantized_io: bool = False,
        free_shapes: bool = False,
    ) -> None:
        """``quantized_io``: run the INT8 step rewritten to take its cache and cross K/V in 8 bits
        (export.quantized_io); the encoder must then hand over ``cross_params`` quantized.
        ``free_shapes``: run the batch-1 step ``path`` rewritten to take any batch size and only the
        filled cache slots (export.free_shapes); ``with_batch`` gives other batch sizes on the same
        session."""
        self.path = path  # the graph as exported (or quantized); the session may run a rewritten copy
        params: QuantizedTensors = {}
        if quantized_io:
            path, params = export.quantized_io_decoder_path(path, dims.n_text_layer)
        if free_shapes:
            path = export.free_shapes_decoder_path(path)
        self.free_shapes = free_shapes
        self.cache_params = {k: p for k, p in params.items() if k.startswith("self_")}
        self.cross_params = {k: p for k, p in params.items() if k.startswith("cross_")}
        self.session = make_session(path, options, session_plan)
        self.dims = dims
        self.batch = batch
        self.observer: FeedObserver | None = None
        layers = range(self.dims.n_text_layer)
        self._output_names = ["logits"] + [n for i in layers for n in new_kv_names(i)]

    def with_batch(self, batch: int) -> Decoder:
        """This decoder for ``batch`` hypotheses on the same session (a free-shapes step only)."""
        if not self.free_shapes:
            raise ValueError(f"a batch-{self.batch} step graph cannot run batch {batch}")
        other = copy.copy(self)
        other.batch = batch
        return other

    def new_cache(self) -> KVCache:
        return KVCache(self.dims, self.batch, self.cache_params)

    def step(self, tokens: np.ndarray, cache: KVCache, cross: CrossKV) -> np.ndarray:
        """Run one token per hypothesis; returns logits (batch, n_vocab) and fills the cache."""
        if cache.length >= cache.capacity:
            raise RuntimeError("decoder context is full")
        feed: dict[str, np.ndarray] = {
            "tokens": tokens.reshape(self.batch, 1).astype(np.int64, copy=False),
            "offset": np.array([cache.length], np.int64),
            "mask": cache.mask,
            **cross,
        }
        if self.observer:
            self.observer(feed | cache.inputs())  # what the fixed-shape step takes (calibration feeds it to one)
        if self.free_shapes:  # the filled slots only (at least one: a masked empty slot to start)
            slots = max(cache.length, 1)
            feed["mask"] = cache.mask[:, :slots]
            feed |= cache.inputs(slots=slots)
        else:
            feed |= cache.inputs()
        logits, *new_kv = self.session.run(self._output_names, feed)
        cache.write(new_kv[0::2], new_kv[1::2])
        return logits


class Prefill:
    """Feeds a prompt in blocks of ``PREFILL_TOKENS`` instead of one decoder step per token.

    The block graph is the step graph with more tokens (causal among themselves), so its K/V and
    logits match the steps' (FP32, to float rounding).
    """

    def __init__(
        self,
        path: Path,
        dims: ModelDims,
        options: RuntimeOptions,
        session_plan: SessionPlan | None = None,
        quantized_io: bool = False,
    ) -> None:
        """``quantized_io``: take the cross K/V as the encoder hands them to the INT8 step (see
        Decoder); the cache stays float, as the run-time-scale step keeps it."""
        self.path = path
        if quantized_io:
            path, params = export.quantized_io_decoder_path(path, dims.n_text_layer)
            if any(name.startswith("self_") for name in params):
                raise ValueError("a prefill block cannot take an 8-bit cache")
        self.session = make_session(path, options, session_plan)
        self.block = export.PREFILL_TOKENS
        layers = range(dims.n_text_layer)
        self._output_names = ["logits"] + [n for i in layers for n in new_kv_names(i)]

    def __call__(self, tokens: list[int], cache: KVCache, cross: CrossKV) -> np.ndarray:
        """Writes the tokens' K/V into every row of ``cache``; returns (batch, n_vocab) logits after the last."""
        if cache.length + len(tokens) > cache.capacity:
            raise RuntimeError("decoder context is full")
        logits = np.empty(0)
        for start in range(0, len(tokens), self.block):
            chunk = tokens[start : start + self.block]
            feed = block_feed(chunk, self.block, cache, cross) | {"last": np.array([len(chunk) - 1], np.int64)}
            logits, *new_kv = self.session.run(self._output_names, feed)
            cache.write_block(new_kv[0::2], new_kv[1::2], len(chunk))
        return np.repeat(logits, cache.keys[0].shape[0], axis=0)


def block_feed(chunk: list[int], block: int, cache: KVCache, cross: CrossKV) -> Feed:
    """A block graph's inputs for ``chunk`` after the cached tokens: the chunk padded to ``block``
    (padding sits after it, so it is never attended to), its position, the cache's first row
    (every row holds the same prompt) and the cross K/V."""
    padded = np.zeros((1, block), np.int64)
    padded[0, : len(chunk)] = chunk
    feed: Feed = {"tokens": padded, "offset": np.array([cache.length], np.int64), "mask": cache.mask, **cross}
    return feed | cache.inputs(rows=1)


class ModelRuntime:
    """Encoder plus decoder sessions per batch size, created once and shared."""

    def __init__(self, checkpoint: WhisperCheckpoint, options: RuntimeOptions | None = None) -> None:
        self.checkpoint = checkpoint
        options = options or RuntimeOptions()
        self.plan = options.plan()  # decided once, so every graph runs where the first one does
        choice = choose_precision(checkpoint, options.precision, self.plan, options.range_table)
        self.options = replace(options, precision=choice.precision, range_table=choice.table)
        self.precision_note = choice.note  # why the precision is not what was asked, if it is not
        encoder_path, self._decoder_path, self._prefill_path = graph_paths(checkpoint, self.options)
        self._decoders: dict[int, Decoder] = {}
        self._prefill: Prefill | None = None
        self._lock = threading.Lock()
        self.decoder_observer: FeedObserver | None = None  # given to every decoder step session
        # INT8 on the CPU EP: K/V cross from graph to graph in 8 bits (see export.quantized_io).
        self._quantized_io = self.options.precision == "int8" and _on_cpu_ep(self.plan)
        # On the CPU EP one decoder session serves every batch size (export.free_shapes).
        self.batches_share_a_session = _on_cpu_ep(self.plan)
        cross_params = self.decoder(1).cross_params if self._quantized_io else None
        self.encoder = Encoder(encoder_path(), checkpoint.dims, self.options, self.plan, cross_params)

    def decoder(self, batch: int) -> Decoder:
        with self._lock:
            if batch not in self._decoders:
                if self.batches_share_a_session and 1 in self._decoders:
                    self._decoders[batch] = self._decoders[1].with_batch(batch)
                else:
                    free = self.batches_share_a_session
                    path = self._decoder_path(1 if free else batch)
                    single = Decoder(
                        path,
                        self.checkpoint.dims,
                        self.options,
                        1 if free else batch,
                        self.plan,
                        self._quantized_io,
                        free,
                    )
                    self._decoders[single.batch] = single
                    self._decoders[batch] = single.with_batch(batch) if free else single
            decoder = self._decoders[batch]
            decoder.observer = self.decoder_observer
            return decoder

    def loaded_graphs(self) -> list[Path]:
        """The graph files whose sessions exist so far (the prefill block and other batch sizes are
        created on first use): what a run really holds in memory."""
        with self._lock:
            decoders = list(dict.fromkeys(d.path for d in self._decoders.values()))
            return [self.encoder.path, *decoders] + ([self._prefill.path] if self._prefill is not None else [])

    def prefill(self) -> Prefill | None:
        """The prompt prefill block; None for INT8 with fixed scales (see quantize.int8_graph_paths)
        and while a decoder observer is set (calibration records every single-token step the step
        graph sees)."""
        if self.decoder_observer is not None or self._prefill_path is None:
            return None
        with self._lock:
            if self._prefill is None:
                path = self._prefill_path(export.PREFILL_TOKENS)
                self._prefill = Prefill(path, self.checkpoint.dims, self.options, self.plan, self._quantized_io)
            return self._prefill

    @property
    def decoder_sessions(self) -> int:
        """How many decoder-step sessions exist (each holds its own prepacked weights)."""
        with self._lock:
            return len({id(d.session) for d in self._decoders.values()})

    def where(self) -> str:
        """One line for the log: the EP/device each graph's nodes really went to."""
        parts = []
        for graph, session in ((GraphKind.ENCODER, self.encoder.session), (GraphKind.DECODER, self.decoder(1).session)):
            counts = nodes_per_ep(session.assignments())
            parts.append(f"{graph} → " + ", ".join(f"{ep} ({n} nodes)" for ep, n in counts.items()))
        note = f" [{self.plan.fallback_reason}]" if self.plan.fallback_reason else ""
        return "; ".join(parts) + note
