"""Any CTranslate2 Whisper checkpoint: shapes read from the weights, graphs, INT8 builds and
transcription for a layout the real packages do not have (128 mel bins as large-v3 has, other
widths, head and layer counts). Random weights: only the plumbing is checked, never accuracy."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from amanuensis import load_model
from amanuensis.audio import load_audio
from amanuensis.ct2 import read_layout
from amanuensis.models import WhisperCheckpoint, resolve_model
from amanuensis.quantize.calibration import CalibrationClip, sha256_file
from amanuensis.quantize.pipeline import calibrate
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.runtime import RuntimeOptions
from amanuensis.transcribe import TranscribeOptions

from .conftest import SAMPLE

N_MELS, WIDTH, HEADS, LAYERS = 128, 64, 2, 2
BASE_WIDTH, BASE_LAYERS = 512, 6
FLOAT16, INT8, INT16 = 4, 1, 2  # CTranslate2 dtype ids


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def _resized(shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """base's shape of a variable, with every width-derived size scaled to WIDTH and mel bins to N_MELS."""
    sizes = [size * WIDTH // BASE_WIDTH if size in (512, 1024, 1536, 2048) else size for size in shape]
    if name == "encoder/conv1/weight":
        sizes[1] = N_MELS
    return tuple(sizes)


def write_random_checkpoint(folder: Path) -> Path:
    """A CTranslate2 Whisper directory shaped like base but narrower, shallower, with 128 mel bins."""
    files = resolve_model("base")
    layout = read_layout(list(files.weight_parts))
    rng = np.random.default_rng(0)
    variables = []
    for name, shape in sorted(layout.shapes.items()):
        layer = re.search(r"layer_(\d+)/", name)
        if (layer and int(layer.group(1)) >= LAYERS) or name == "decoder/projection/weight":
            continue
        if name in layout.scalars:
            value = layout.scalars[name]
            if name.endswith("num_heads"):
                value = np.array(HEADS, value.dtype)
            variables.append((name, value, {np.dtype("int8"): INT8, np.dtype("int16"): INT16}[value.dtype]))
            continue
        size = _resized(shape, name)
        scale = 1.0 if name.endswith(("gamma", "encodings")) else 0.05
        values = rng.normal(0.0, scale, size) + (1.0 if name.endswith("gamma") else 0.0)
        variables.append((name, values.astype(np.float16), FLOAT16))
    out = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, array, dtype_id in variables:
        raw = array.tobytes()
        out += _string(name) + struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape)
        out += struct.pack("<BI", dtype_id, len(raw)) + raw
    out += struct.pack("<I", 1) + _string("decoder/projection/weight") + _string("decoder/embeddings/weight")
    folder.mkdir()
    (folder / "model.bin").write_bytes(out)
    config = json.loads(files.config_path.read_text())
    config["alignment_heads"] = [[LAYERS - 1, h] for h in range(HEADS)]
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copyfile(files.tokenizer_path, folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("checkpoint") / "whisper-128-mels")


BRIEF = TranscribeOptions(beam_size=1, temperatures=(0.0,), language="en")  # random weights: one pass is enough


def test_shapes_come_from_the_checkpoint(random_checkpoint: Path) -> None:
    dims = WhisperCheckpoint.load(random_checkpoint).dims
    assert (dims.n_mels, dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer) == (N_MELS, WIDTH, HEADS, LAYERS)
    assert (dims.n_text_state, dims.n_text_head, dims.n_text_layer, dims.n_vocab) == (WIDTH, HEADS, LAYERS, 51865)


@pytest.mark.parametrize("scheme", ["dynamic", pytest.param("static", marks=pytest.mark.slow)])
def test_a_128_mel_checkpoint_is_exported_quantized_and_run(random_checkpoint: Path, tmp_path, scheme: str) -> None:
    """FP32 graphs from the weights, an INT8 table calibrated on a real clip (run-time scales for
    the CPU; QNN's static QDQ), the INT8 graphs built from it, and a transcription through each."""
    audio = load_audio(SAMPLE).samples[: 4 * 16000]
    fp32 = load_model(str(random_checkpoint), RuntimeOptions(precision="fp32", threads=2))
    segments, info = fp32.transcribe(audio, BRIEF)
    list(segments)
    assert info.language == "en" and fp32.checkpoint.dims.n_mels == N_MELS

    recipe = QuantRecipe.for_target("cpu" if scheme == "dynamic" else "qnn")
    clip = CalibrationClip(SAMPLE, sha256_file(SAMPLE))
    table, _ = calibrate(fp32.checkpoint, [clip], recipe, SAMPLE.parent, threads=2)
    assert table.recipe.scheme == scheme and (scheme == "dynamic" or table.ranges["encoder"])
    path = tmp_path / "table.json"
    table.save(path)
    int8 = load_model(str(random_checkpoint), RuntimeOptions(precision="int8", threads=2, range_table=path))
    segments, info = int8.transcribe(audio, BRIEF)
    list(segments)
    loaded = int8.runtime.loaded_graphs()
    assert loaded and all(p.parent.name.startswith("int8-") for p in loaded), loaded
