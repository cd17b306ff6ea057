"""Build the static ONNX graphs from a checkpoint and cache them by weights hash.

The builders (and ``onnx``) are imported only when a graph has to be built: a cached model runs
without them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from amanuensis.models import WhisperCheckpoint

if TYPE_CHECKING:
    import onnx

# Bump when graph construction changes so stale cached graphs are not reused.
EXPORT_VERSION = 1
PREFILL_TOKENS = 32  # tokens per prefill block: a 224-token prompt takes 7 runs instead of 224 steps


def cache_root() -> Path:
    """Where built graphs live: $AMANUENSIS_CACHE, else models/cache in a source checkout,
    else ~/.cache/amanuensis."""
    env = os.environ.get("AMANUENSIS_CACHE")
    if env:
        return Path(env)
    checkout_models = Path(__file__).resolve().parents[2] / "models"
    if checkout_models.is_dir() and os.access(checkout_models, os.W_OK):
        return checkout_models / "cache"
    return Path.home() / ".cache" / "amanuensis"


def model_cache_dir(checkpoint: WhisperCheckpoint) -> Path:
    return cache_root() / f"{checkpoint.files.name}-{checkpoint.digest}-v{EXPORT_VERSION}"


def _save_atomically(model: onnx.ModelProto, path: Path) -> None:
    """Write beside the target and rename, so an interrupted build never leaves a bad cache."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".partial")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def encoder_path(checkpoint: WhisperCheckpoint) -> Path:
    path = model_cache_dir(checkpoint) / "encoder.onnx"
    if not path.exists():
        from amanuensis.export.encoder import build_encoder

        _save_atomically(build_encoder(checkpoint.load_weights(), checkpoint.dims), path)
    return path


def decoder_step_path(checkpoint: WhisperCheckpoint, batch: int) -> Path:
    path = model_cache_dir(checkpoint) / f"decoder_step_b{batch}.onnx"
    if not path.exists():
        from amanuensis.export.decoder import build_decoder_step

        _save_atomically(build_decoder_step(checkpoint.load_weights(), checkpoint.dims, batch), path)
    return path


def decoder_prefill_path(checkpoint: WhisperCheckpoint, n_tokens: int) -> Path:
    """A batch-1 decoder block that feeds ``n_tokens`` prompt tokens in one run (see build_decoder_step)."""
    path = model_cache_dir(checkpoint) / f"decoder_prefill_t{n_tokens}.onnx"
    if not path.exists():
        from amanuensis.export.decoder import build_decoder_step

        _save_atomically(build_decoder_step(checkpoint.load_weights(), checkpoint.dims, 1, n_tokens), path)
    return path


def decoder_full_path(checkpoint: WhisperCheckpoint, n_tokens: int) -> Path:
    path = model_cache_dir(checkpoint) / f"decoder_full_t{n_tokens}.onnx"
    if not path.exists():
        from amanuensis.export.decoder import build_decoder_full

        _save_atomically(build_decoder_full(checkpoint.load_weights(), checkpoint.dims, n_tokens), path)
    return path


def query_chunked_path(path: Path, chunks: int) -> Path:
    """``path`` with its multi-query attentions split into ``chunks`` (same outputs, less memory).

    Built once beside the graph it comes from and rebuilt when that graph is newer.
    """
    from amanuensis.export.query_chunks import REWRITE_VERSION

    chunked = path.with_name(f"{path.stem}.q{chunks}-r{REWRITE_VERSION}{path.suffix}")
    if not chunked.exists() or chunked.stat().st_mtime < path.stat().st_mtime:
        import onnx

        from amanuensis.export.query_chunks import split_attention_queries

        _save_atomically(split_attention_queries(onnx.load(str(path)), chunks), chunked)
    return chunked
