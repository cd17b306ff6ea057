"""The graph cache: where built files live, which versions key them, and how they are written.

Every built graph (and every file derived from one: rewritten graphs, INT8 builds, their
parameter files) lives under ``cache_root()``, keyed by the checkpoint's weights digest and the
versions in ``VERSIONS``; bumping one there makes every cached file it keys be built again.

A file is written under a temporary name beside its place, renamed into place, and then marked
complete by a small ``<name>.size`` file holding its byte count. A file without a matching
mark — truncated by a full disk, cut off by a crash between the rename and the mark, or damaged
by hand — counts as missing and is built again, instead of failing every later run with a
protobuf error. Two processes building the same file at once each write their own temporary
file; whichever renames last wins, and both results are whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from amanuensis.errors import UserError

if TYPE_CHECKING:
    import onnx

MARK_SUFFIX = ".size"

# One place for every version that keys cached files; bump an entry when what it names changes.
VERSIONS = {
    "export": 1,  # graph construction from the weights (export/encoder.py, export/decoder.py)
    "query_chunks": 1,  # the CPU EP's encoder in query slices (export/query_chunks.py)
    "free_shapes": 1,  # the CPU EP's decoder step of any batch and cache length (export/free_shapes.py)
    "quantized_io": 2,  # INT8 graphs handing K/V over in 8 bits (export/quantized_io.py)
    "alignment": 2,  # the word-timestamp block graph (export/decoder.py, alignment_heads)
    "int8_build": 15,  # what quantize builds from the same range table (quantize/qdq.py, quantize/dynamic.py)
}


def cache_root() -> Path:
    """Where built graphs live: ``$AMANUENSIS_CACHE``, else the user's cache folder
    (``$XDG_CACHE_HOME/amanuensis``, by default ``~/.cache/amanuensis``). Never inside the
    installed package or a checkout, which may be shared or read-only."""
    env = os.environ.get("AMANUENSIS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "amanuensis"


class CacheNotWritable(UserError):
    """A graph has to be built but its cache folder cannot be written."""


def _mark(path: Path) -> Path:
    return path.with_name(path.name + MARK_SUFFIX)


def is_complete(path: Path) -> bool:
    """Whether ``path`` exists with the size it was published with."""
    try:
        return int(_mark(path).read_text()) == path.stat().st_size
    except (OSError, ValueError):
        return False


def publish(staged: Path, path: Path) -> None:
    """Rename a finished file into place, then mark it complete."""
    size = staged.stat().st_size
    os.replace(staged, path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".mark")
    with os.fdopen(fd, "w") as out:
        out.write(str(size))
    os.replace(tmp, _mark(path))


def writable_folder(folder: Path) -> Path:
    """``folder``, created if needed; a clear error if graphs cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as exc:
        raise CacheNotWritable(
            f"cannot write built graphs to {folder} ({exc.strerror or exc}); set AMANUENSIS_CACHE to a writable folder"
        ) from None
    return folder


def save_atomically(content: onnx.ModelProto | str, path: Path) -> None:
    """Write a graph (or text) beside the target, rename it into place and mark it complete."""
    writable_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        if isinstance(content, str):
            Path(tmp).write_text(content)
        else:
            import onnx

            onnx.save(content, tmp)
        publish(Path(tmp), path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def get_or_build(path: Path, build: Callable[[], onnx.ModelProto | str]) -> Path:
    """``path``, built by ``build`` and saved atomically unless a complete copy is there."""
    if not is_complete(path):
        save_atomically(build(), path)
    return path


def stale(derived: Path, source: Path) -> bool:
    """Whether a file made from ``source`` is missing, incomplete or older than its source."""
    return not is_complete(derived) or derived.stat().st_mtime < source.stat().st_mtime


def get_or_derive(derived: Path, source: Path, build: Callable[[], onnx.ModelProto | str]) -> Path:
    """``derived`` (made from ``source`` by ``build``), built again when missing or stale."""
    if stale(derived, source):
        save_atomically(build(), derived)
    return derived
