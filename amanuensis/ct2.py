"""Reader for CTranslate2 ``model.bin`` checkpoints.

The registry packages ship Whisper weights only in this format, so we read it directly
instead of depending on CTranslate2 at run time. Layout (little endian), as written by
CTranslate2's ``ModelSpec._serialize`` and read by ``src/models/model.cc``:

    u32 binary_version, str spec_name, u32 spec_revision, u32 n_variables
    n_variables × (str name, u8 rank, u32 dims[rank], u8 dtype, u32 n_bytes, bytes)
    u32 n_aliases × (str alias, str target)

where ``str`` is a u16 length (including a trailing NUL) followed by UTF-8 bytes.
Quantized weights (int8/int16) come with a float32 ``<name>_scale`` variable holding the
per-row factor the integers were multiplied by.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from amanuensis.errors import UserError

# Order of CTranslate2's DataType enum (include/ctranslate2/types.h).
CT2_DTYPES: tuple[np.dtype | None, ...] = (
    np.dtype("<f4"),  # 0 float32
    np.dtype("i1"),  # 1 int8
    np.dtype("<i2"),  # 2 int16
    np.dtype("<i4"),  # 3 int32
    np.dtype("<f2"),  # 4 float16
    None,  # 5 bfloat16: converted by hand below (numpy has no bfloat16)
)
BFLOAT16_ID = 5
SUPPORTED_BINARY_VERSIONS = range(2, 7)


class CheckpointError(UserError):
    """The file is not a CTranslate2 checkpoint this reader understands."""


@dataclass(frozen=True)
class RawVariable:
    """One variable as stored: its dtype id tells how to widen it."""

    name: str
    shape: tuple[int, ...]
    dtype_id: int
    data: bytes


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise CheckpointError("model.bin ends early (truncated file?)")
    return data


def _read_struct(stream: BinaryIO, fmt: str) -> int:
    return struct.unpack("<" + fmt, _read_exact(stream, struct.calcsize("<" + fmt)))[0]


def _read_string(stream: BinaryIO) -> str:
    length = _read_struct(stream, "H")
    return _read_exact(stream, length)[:-1].decode("utf-8")


def iter_raw_variables(
    stream: _ConcatenatedReader, skip_data_above: int | None = None
) -> Iterator[RawVariable | tuple[str, str]]:
    """Yield each stored variable, then each ``(alias, target)`` pair.

    Variables larger than ``skip_data_above`` bytes are yielded with empty ``data`` (their bytes
    skipped), so a caller that wants only names, shapes and scalars never holds the weights.
    """
    version = _read_struct(stream, "I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise CheckpointError(f"unsupported CTranslate2 binary version {version}")
    _read_string(stream)  # spec name, e.g. "WhisperSpec"
    _read_struct(stream, "I")  # spec revision
    for _ in range(_read_struct(stream, "I")):
        name = _read_string(stream)
        rank = _read_struct(stream, "B")
        shape = tuple(_read_struct(stream, "I") for _ in range(rank))
        dtype_id = _read_struct(stream, "B")
        n_bytes = _read_struct(stream, "I")
        if skip_data_above is not None and n_bytes > skip_data_above:
            stream.skip(n_bytes)
            yield RawVariable(name, shape, dtype_id, b"")
        else:
            yield RawVariable(name, shape, dtype_id, _read_exact(stream, n_bytes))
    for _ in range(_read_struct(stream, "I")):
        yield _read_string(stream), _read_string(stream)


def _to_array(var: RawVariable) -> np.ndarray:
    if var.dtype_id == BFLOAT16_ID:
        halves = np.frombuffer(var.data, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(var.shape)
    if var.dtype_id >= len(CT2_DTYPES):
        raise CheckpointError(f"{var.name}: unknown dtype id {var.dtype_id}")
    dtype = CT2_DTYPES[var.dtype_id]
    array = np.frombuffer(var.data, dtype=dtype)
    if array.size != int(np.prod(var.shape, dtype=np.int64)):
        raise CheckpointError(f"{var.name}: {len(var.data)} bytes do not fit shape {var.shape}")
    return array.reshape(var.shape)


def read_checkpoint(paths: Path | list[Path]) -> dict[str, np.ndarray]:
    """Read every variable as float32 (weights) or its stored integer type (scalars).

    ``paths`` may list several files that together form ``model.bin`` (a split package).
    Quantized weights are multiplied back by their ``_scale``, so callers always see the
    float values the model computes with.
    """
    parts = [paths] if isinstance(paths, Path) else list(paths)
    stream = _ConcatenatedReader(parts)
    try:
        raw: dict[str, np.ndarray] = {}
        aliases: list[tuple[str, str]] = []
        for item in iter_raw_variables(stream):
            if isinstance(item, RawVariable):
                raw[item.name] = _to_array(item)
            else:
                aliases.append(item)
        if stream.read(1):
            raise CheckpointError("trailing bytes after the alias table")
    finally:
        stream.close()
    weights = _dequantize(raw)
    for alias, target in aliases:
        weights[alias] = weights[target]
    return weights


@dataclass(frozen=True)
class CheckpointLayout:
    """Names and shapes of every variable, and the values of the small ones (e.g. ``num_heads``)."""

    shapes: dict[str, tuple[int, ...]]
    scalars: dict[str, np.ndarray]


SCALAR_BYTES = 64  # variables up to this size are read by ``read_layout``; the rest are skipped


def read_layout(paths: Path | list[Path]) -> CheckpointLayout:
    """The checkpoint's layout without its weights: what a model needs when its graphs are built."""
    parts = [paths] if isinstance(paths, Path) else list(paths)
    stream = _ConcatenatedReader(parts)
    shapes: dict[str, tuple[int, ...]] = {}
    scalars: dict[str, np.ndarray] = {}
    try:
        for item in iter_raw_variables(stream, skip_data_above=SCALAR_BYTES):
            if isinstance(item, RawVariable):
                shapes[item.name] = item.shape
                if item.data:
                    scalars[item.name] = _to_array(item)
            else:
                alias, target = item
                shapes[alias] = shapes[target]
    finally:
        stream.close()
    return CheckpointLayout(shapes, scalars)


def _dequantize(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, array in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(name + "_scale")
        if scale is not None and array.dtype in (np.int8, np.int16):
            # CTranslate2 stores q = round(w * scale) with one scale per output row.
            scale = scale.astype(np.float32).reshape(-1, *([1] * (array.ndim - 1)))
            out[name] = array.astype(np.float32) / scale
        elif array.dtype == np.float16:
            out[name] = array.astype(np.float32)
        else:
            out[name] = array.copy()
    return out


class _ConcatenatedReader:
    """A read-only stream over files laid end to end (``model.bin.part1`` + ``part2``)."""

    def __init__(self, paths: list[Path]) -> None:
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self._index = 0

    def read(self, size: int) -> bytes:
        chunks: list[bytes] = []
        while size > 0 and self._index < len(self._files):
            chunk = self._files[self._index].read(size)
            if not chunk:
                self._index += 1
                continue
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def skip(self, size: int) -> None:
        """Move ``size`` bytes forward without reading them."""
        while size > 0 and self._index < len(self._files):
            f = self._files[self._index]
            position = f.tell()
            end = f.seek(0, os.SEEK_END)
            if position + size <= end:
                f.seek(position + size)
                return
            size -= end - position
            self._index += 1
        if size > 0:
            raise CheckpointError("model.bin ends early (truncated file?)")

    def close(self) -> None:
        for f in self._files:
            f.close()
