"""Build the static ONNX graphs from a checkpoint and cache them by weights hash.

The builders (and ``onnx``) are imported only when a graph has to be built: a cached model runs
without them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from amanuensis.export.cachefile import is_complete, save_atomically
from amanuensis.models import WhisperCheckpoint

# Bump when graph construction changes so stale cached graphs are not reused.
EXPORT_VERSION = 1
PREFILL_TOKENS = 32  # tokens per prefill block: a 224-token prompt takes 7 runs instead of 224 steps
# The encoder's self-attention runs in this many slices of its 1500 queries on onnxruntime's CPU EP:
# bit-identical outputs, and a tiny.en INT8 encoder run needs 73 MB of activations instead of 166.
# Accelerators get the graph as exported (their compilers plan memory themselves).
ENCODER_QUERY_CHUNKS = 5
QUANTIZED_IO_VERSION = 2  # bump when quantized_io's rewrites change, so cached rewritten graphs are redone


def cache_root() -> Path:
    """Where built graphs live: ``$AMANUENSIS_CACHE``, else the user's cache folder
    (``$XDG_CACHE_HOME/amanuensis``, by default ``~/.cache/amanuensis``). Never inside the
    installed package or a checkout, which may be shared or read-only."""
    env = os.environ.get("AMANUENSIS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amanuensis"


def model_cache_dir(checkpoint: WhisperCheckpoint) -> Path:
    return cache_root() / f"{checkpoint.files.name}-{checkpoint.digest}-v{EXPORT_VERSION}"


def encoder_path(checkpoint: WhisperCheckpoint) -> Path:
    path = model_cache_dir(checkpoint) / "encoder.onnx"
    if not is_complete(path):
        from amanuensis.export.encoder import build_encoder

        save_atomically(build_encoder(checkpoint.load_weights(), checkpoint.dims), path)
    return path


def decoder_step_path(checkpoint: WhisperCheckpoint, batch: int) -> Path:
    path = model_cache_dir(checkpoint) / f"decoder_step_b{batch}.onnx"
    if not is_complete(path):
        from amanuensis.export.decoder import build_decoder_step

        save_atomically(build_decoder_step(checkpoint.load_weights(), checkpoint.dims, batch), path)
    return path


def decoder_prefill_path(checkpoint: WhisperCheckpoint, n_tokens: int) -> Path:
    """A batch-1 decoder block that feeds ``n_tokens`` prompt tokens in one run (see build_decoder_step)."""
    path = model_cache_dir(checkpoint) / f"decoder_prefill_t{n_tokens}.onnx"
    if not is_complete(path):
        from amanuensis.export.decoder import build_decoder_step

        save_atomically(build_decoder_step(checkpoint.load_weights(), checkpoint.dims, 1, n_tokens), path)
    return path


def decoder_full_path(checkpoint: WhisperCheckpoint, n_tokens: int) -> Path:
    path = model_cache_dir(checkpoint) / f"decoder_full_t{n_tokens}.onnx"
    if not is_complete(path):
        from amanuensis.export.decoder import build_decoder_full

        save_atomically(build_decoder_full(checkpoint.load_weights(), checkpoint.dims, n_tokens), path)
    return path


def query_chunked_path(path: Path, chunks: int) -> Path:
    """``path`` with its multi-query attentions split into ``chunks`` (same outputs, less memory).

    Built once beside the graph it comes from and rebuilt when that graph is newer.
    """
    from amanuensis.export.query_chunks import REWRITE_VERSION

    chunked = path.with_name(f"{path.stem}.q{chunks}-r{REWRITE_VERSION}{path.suffix}")
    if _stale(chunked, path):
        import onnx

        from amanuensis.export.query_chunks import split_attention_queries

        save_atomically(split_attention_queries(onnx.load(str(path)), chunks), chunked)
    return chunked


def free_shapes_decoder_path(path: Path) -> Path:
    """The batch-1 decoder step ``path`` rewritten to take any batch size and cache length (see free_shapes)."""
    from amanuensis.export.free_shapes import REWRITE_VERSION

    rewritten = path.with_name(f"{path.stem}.fs{REWRITE_VERSION}{path.suffix}")
    if _stale(rewritten, path):
        import onnx

        from amanuensis.export.free_shapes import free_decoder_shapes

        model = onnx.load(str(path))
        free_decoder_shapes(model)
        save_atomically(model, rewritten)
    return rewritten


def _stale(derived: Path, source: Path) -> bool:
    return not is_complete(derived) or derived.stat().st_mtime < source.stat().st_mtime


def quantized_io_decoder_path(path: Path, n_layers: int) -> tuple[Path, dict[str, dict]]:
    """An INT8 decoder step rewritten to take and give 8-bit K/V (see quantized_io), and the
    parameters of the inputs it now takes quantized. Built once beside ``path``; the parameters
    are kept in a JSON file next to it, so loading needs neither ``onnx`` nor the graph."""
    stem = f"{path.stem}.qio{QUANTIZED_IO_VERSION}"
    rewritten, params_file = path.with_name(f"{stem}{path.suffix}"), path.with_name(f"{stem}.json")
    if _stale(rewritten, path) or _stale(params_file, path):
        import onnx

        from amanuensis.export.quantized_io import decoder_with_quantized_io

        model = onnx.load(str(path))
        params = decoder_with_quantized_io(model, n_layers)
        save_atomically(model, rewritten)
        save_atomically(json.dumps(params, indent=1, sort_keys=True) + "\n", params_file)
    return rewritten, json.loads(params_file.read_text())


def quantized_output_encoder_path(path: Path, params: dict[str, dict]) -> Path:
    """``path`` with its cross K/V outputs quantized as ``params`` say (a decoder's folded inputs)."""
    if not params:
        return path
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    rewritten = path.with_name(f"{path.stem}.qio{QUANTIZED_IO_VERSION}-{digest}{path.suffix}")
    if _stale(rewritten, path):
        import onnx

        from amanuensis.export.quantized_io import encoder_with_quantized_outputs

        model = onnx.load(str(path))
        encoder_with_quantized_outputs(model, params)
        save_atomically(model, rewritten)
    return rewritten
