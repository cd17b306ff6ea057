"""Cached files that are whole or absent.

A built graph is written under a temporary name beside its place, renamed into place, and then
marked complete by a small ``<name>.size`` file holding its byte count. A file without a matching
mark — truncated by a full disk, cut off by a crash between the rename and the mark, or damaged
by hand — counts as missing and is built again, instead of failing every later run with a
protobuf error. Two processes building the same file at once each write their own temporary
file; whichever renames last wins, and both results are whole.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from amanuensis.errors import UserError

if TYPE_CHECKING:
    import onnx

MARK_SUFFIX = ".size"


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
