"""Build the static ONNX graphs from a checkpoint and cache them by weights hash."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx

from amanuensis.export.decoder import build_decoder_full, build_decoder_step
from amanuensis.export.encoder import build_encoder
from amanuensis.models import WhisperCheckpoint

# Bump when graph construction changes so stale cached graphs are not reused.
EXPORT_VERSION = 1


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
        _save_atomically(build_encoder(checkpoint.load_weights(), checkpoint.dims), path)
    return path


def decoder_step_path(checkpoint: WhisperCheckpoint, batch: int) -> Path:
    path = model_cache_dir(checkpoint) / f"decoder_step_b{batch}.onnx"
    if not path.exists():
        _save_atomically(build_decoder_step(checkpoint.load_weights(), checkpoint.dims, batch), path)
    return path


def decoder_full_path(checkpoint: WhisperCheckpoint, n_tokens: int) -> Path:
    path = model_cache_dir(checkpoint) / f"decoder_full_t{n_tokens}.onnx"
    if not path.exists():
        _save_atomically(build_decoder_full(checkpoint.load_weights(), checkpoint.dims, n_tokens), path)
    return path
