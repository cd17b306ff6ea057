"""The static ONNX graphs of a checkpoint, built on first use and cached by weights digest.

``graph_path(checkpoint, kind, size)`` is the one way to a graph: ``GRAPH_SPECS`` says for each
``GraphKind`` what its file is called and how it is built. Files derived from a built graph
(rewritten for the CPU EP, INT8 builds) sit beside it and are rebuilt when it is newer. The
builders (and ``onnx``) are imported only when a graph has to be built: a cached model runs
without them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from amanuensis.export.cache import VERSIONS, cache_root, get_or_build, get_or_derive, save_atomically, stale
from amanuensis.models import WhisperCheckpoint

if TYPE_CHECKING:
    import onnx

PREFILL_TOKENS = 32  # tokens per prefill block: a 224-token prompt takes 7 runs instead of 224 steps
# The encoder's self-attention runs in this many slices of its 1500 queries on onnxruntime's CPU EP:
# bit-identical outputs, and a tiny.en INT8 encoder run needs 73 MB of activations instead of 166.
# Accelerators get the graph as exported (their compilers plan memory themselves).
ENCODER_QUERY_CHUNKS = 5


class GraphKind(str, Enum):
    """The graphs exported from a checkpoint. The encoder and decoder values are also the keys of
    a range table's per-graph entries."""

    ENCODER = "encoder"  # log-mel window → cross-attention K/V of every decoder layer
    DECODER = "decoder"  # one token per hypothesis over a fixed-size self-attention cache
    PREFILL = "prefill"  # FP32: a block of prompt tokens in one run, batch 1
    FULL_DECODER = "full_decoder"  # no cache: logits of every position of a prefix (a reference)
    ALIGNMENT = "alignment"  # FP32: a prefill block that also gives the alignment heads' cross-attention scores

    def __str__(self) -> str:  # "encoder" in messages and f-strings, as the table keys spell it
        return self.value


Builder = Callable[[WhisperCheckpoint, int], "onnx.ModelProto"]


@dataclass(frozen=True)
class GraphSpec:
    file_name: Callable[[int], str]  # the file in the model's cache folder, from the size
    build: Builder  # (checkpoint, size) → the graph


def _encoder(checkpoint: WhisperCheckpoint, _size: int) -> onnx.ModelProto:
    from amanuensis.export.encoder import build_encoder

    return build_encoder(checkpoint.load_weights(), checkpoint.dims)


def _decoder(checkpoint: WhisperCheckpoint, batch: int) -> onnx.ModelProto:
    from amanuensis.export.decoder import build_decoder_step

    return build_decoder_step(checkpoint.load_weights(), checkpoint.dims, batch)


def _prefill(checkpoint: WhisperCheckpoint, n_tokens: int) -> onnx.ModelProto:
    from amanuensis.export.decoder import build_decoder_step

    return build_decoder_step(checkpoint.load_weights(), checkpoint.dims, 1, n_tokens)


def _full_decoder(checkpoint: WhisperCheckpoint, n_tokens: int) -> onnx.ModelProto:
    from amanuensis.export.decoder import build_decoder_full

    return build_decoder_full(checkpoint.load_weights(), checkpoint.dims, n_tokens)


def _alignment(checkpoint: WhisperCheckpoint, n_tokens: int) -> onnx.ModelProto:
    from amanuensis.export.decoder import build_decoder_step

    weights, heads = checkpoint.load_weights(), checkpoint.alignment_heads
    return build_decoder_step(weights, checkpoint.dims, 1, n_tokens, alignment_heads=heads)


GRAPH_SPECS = {  # what ``size`` is: unused for the encoder; the batch of a step; tokens of a block or prefix
    GraphKind.ENCODER: GraphSpec(lambda _: "encoder.onnx", _encoder),
    GraphKind.DECODER: GraphSpec(lambda batch: f"decoder_step_b{batch}.onnx", _decoder),
    GraphKind.PREFILL: GraphSpec(lambda tokens: f"decoder_prefill_t{tokens}.onnx", _prefill),
    GraphKind.FULL_DECODER: GraphSpec(lambda tokens: f"decoder_full_t{tokens}.onnx", _full_decoder),
    GraphKind.ALIGNMENT: GraphSpec(
        lambda tokens: f"decoder_alignment_t{tokens}-a{VERSIONS['alignment']}.onnx", _alignment
    ),
}


def model_cache_dir(checkpoint: WhisperCheckpoint) -> Path:
    return cache_root() / f"{checkpoint.files.name}-{checkpoint.digest}-v{VERSIONS['export']}"


def graph_path(checkpoint: WhisperCheckpoint, kind: GraphKind, size: int = 1) -> Path:
    """The FP32 graph of ``kind`` (``size``: see its spec), built and cached if it is not yet."""
    spec = GRAPH_SPECS[kind]
    path = model_cache_dir(checkpoint) / spec.file_name(size)
    return get_or_build(path, lambda: spec.build(checkpoint, size))


def _load(path: Path) -> onnx.ModelProto:
    import onnx

    return onnx.load(str(path))


def query_chunked_path(path: Path, chunks: int) -> Path:
    """``path`` with its multi-query attentions split into ``chunks`` (same outputs, less memory)."""

    def build() -> onnx.ModelProto:
        from amanuensis.export.query_chunks import split_attention_queries

        return split_attention_queries(_load(path), chunks)

    return get_or_derive(path.with_name(f"{path.stem}.q{chunks}-r{VERSIONS['query_chunks']}{path.suffix}"), path, build)


def free_shapes_decoder_path(path: Path) -> Path:
    """The batch-1 decoder step ``path`` rewritten to take any batch size and cache length (see free_shapes)."""

    def build() -> onnx.ModelProto:
        from amanuensis.export.free_shapes import free_decoder_shapes

        model = _load(path)
        free_decoder_shapes(model)
        return model

    return get_or_derive(path.with_name(f"{path.stem}.fs{VERSIONS['free_shapes']}{path.suffix}"), path, build)


def quantized_io_decoder_path(path: Path, n_layers: int) -> tuple[Path, dict[str, dict]]:
    """An INT8 decoder step rewritten to take and give 8-bit K/V (see quantized_io), and the
    parameters of the inputs it now takes quantized. Built once beside ``path``; the parameters
    are kept in a JSON file next to it, so loading needs neither ``onnx`` nor the graph."""
    stem = f"{path.stem}.qio{VERSIONS['quantized_io']}"
    rewritten, params_file = path.with_name(f"{stem}{path.suffix}"), path.with_name(f"{stem}.json")
    if stale(rewritten, path) or stale(params_file, path):
        from amanuensis.export.quantized_io import decoder_with_quantized_io

        model = _load(path)
        params = decoder_with_quantized_io(model, n_layers)
        save_atomically(model, rewritten)
        save_atomically(json.dumps(params, indent=1, sort_keys=True) + "\n", params_file)
    return rewritten, json.loads(params_file.read_text())


def quantized_output_encoder_path(path: Path, params: dict[str, dict]) -> Path:
    """``path`` with its cross K/V outputs quantized as ``params`` say (a decoder's folded inputs)."""
    if not params:
        return path

    def build() -> onnx.ModelProto:
        from amanuensis.export.quantized_io import encoder_with_quantized_outputs

        model = _load(path)
        encoder_with_quantized_outputs(model, params)
        return model

    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    rewritten = path.with_name(f"{path.stem}.qio{VERSIONS['quantized_io']}-{digest}{path.suffix}")
    return get_or_derive(rewritten, path, build)
