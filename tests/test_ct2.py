"""The CTranslate2 reader against files we write ourselves and against the real checkpoints."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from amanuensis.ct2 import CheckpointError, read_checkpoint, read_layout
from amanuensis.models import WhisperCheckpoint, resolve_model


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def write_checkpoint(path: Path, variables: dict[str, tuple[np.ndarray, int]], aliases: dict[str, str]) -> None:
    """Serialize like CTranslate2's ModelSpec._serialize (binary version 6)."""
    out = struct.pack("<I", 6) + _string("TestSpec") + struct.pack("<II", 1, len(variables))
    for name, (array, dtype_id) in variables.items():
        out += _string(name) + struct.pack("<B", array.ndim)
        out += b"".join(struct.pack("<I", d) for d in array.shape)
        raw = array.tobytes()
        out += struct.pack("<BI", dtype_id, len(raw)) + raw
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        out += _string(alias) + _string(target)
    path.write_bytes(out)


def test_reads_every_dtype_and_dequantizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3)).astype(np.float32)
    scale = (127.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    quantized = np.round(weight * scale[:, None]).astype(np.int8)
    scale16 = (32767.0 / np.abs(weight).max(axis=1)).astype(np.float32)
    quantized16 = np.round(weight * scale16[:, None]).astype(np.int16)
    bf16 = (weight.view(np.uint32) >> 16).astype(np.uint16)
    write_checkpoint(
        tmp_path / "model.bin",
        {
            "f32": (weight, 0),
            "f16": (weight.astype(np.float16), 4),
            "bf16": (bf16, 5),
            "q8/weight": (quantized, 1),
            "q8/weight_scale": (scale, 0),
            "q16/weight": (quantized16, 2),
            "q16/weight_scale": (scale16, 0),
            "heads": (np.array(6, np.int16), 2),
        },
        {"tied": "f32"},
    )
    w = read_checkpoint(tmp_path / "model.bin")
    np.testing.assert_array_equal(w["f32"], weight)
    np.testing.assert_allclose(w["f16"], weight, atol=2e-3)
    np.testing.assert_allclose(w["bf16"], weight, rtol=1e-2)
    np.testing.assert_allclose(w["q8/weight"], weight, atol=np.abs(weight).max() / 127)
    np.testing.assert_allclose(w["q16/weight"], weight, atol=np.abs(weight).max() / 32767)
    assert "q8/weight_scale" not in w
    assert int(w["heads"]) == 6
    np.testing.assert_array_equal(w["tied"], weight)
    assert all(w[k].dtype == np.float32 for k in ("f16", "bf16", "q8/weight", "q16/weight"))


def test_split_checkpoint_equals_whole(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "model.bin", {"a": (np.arange(100, dtype=np.float32), 0)}, {})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "p1").write_bytes(data[:37])
    (tmp_path / "p2").write_bytes(data[37:])
    np.testing.assert_array_equal(read_checkpoint([tmp_path / "p1", tmp_path / "p2"])["a"], np.arange(100))


def test_layout_skips_weights_across_parts(tmp_path: Path) -> None:
    """The header-only read finds shapes, small scalars and aliases, even when a skip spans two files."""
    variables = {"big": (np.ones((40, 25), np.float32), 0), "heads": (np.array(6, np.int32), 3)}
    write_checkpoint(tmp_path / "model.bin", variables, {"tied": "big"})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "p1").write_bytes(data[:100])  # cuts through the bytes of "big"
    (tmp_path / "p2").write_bytes(data[100:])
    layout = read_layout([tmp_path / "p1", tmp_path / "p2"])
    assert layout.shapes == {"big": (40, 25), "heads": (), "tied": (40, 25)}
    assert set(layout.scalars) == {"heads"} and int(layout.scalars["heads"]) == 6


def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "model.bin", {"a": (np.ones(1000, np.float32), 0)}, {})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:-500])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(tmp_path / "model.bin")
    with pytest.raises(CheckpointError, match="truncated"):
        read_layout(tmp_path / "model.bin")


EXPECTED_DIMS = {
    # name: (n_audio_state, n_audio_head, layers, n_vocab)
    "tiny.en": (384, 6, 4, 51864),
    "base": (512, 8, 6, 51865),
}


@pytest.mark.parametrize("name", ["tiny.en", "base"])
def test_real_checkpoint_every_tensor(name: str) -> None:
    checkpoint = WhisperCheckpoint(resolve_model(name))
    d, heads, layers, vocab = EXPECTED_DIMS[name]
    dims = checkpoint.dims
    assert (dims.n_audio_state, dims.n_audio_head, dims.n_audio_layer, dims.n_vocab) == (d, heads, layers, vocab)
    assert (dims.n_text_state, dims.n_text_head, dims.n_text_layer) == (d, heads, layers)
    assert (dims.n_mels, dims.n_audio_ctx, dims.n_text_ctx) == (80, 1500, 448)
    w = checkpoint.load_weights()
    expected = {
        "encoder/conv1/weight": (d, 80, 3),
        "encoder/conv2/weight": (d, d, 3),
        "encoder/position_encodings/encodings": (1500, d),
        "decoder/embeddings/weight": (vocab, d),
        "decoder/position_encodings/encodings": (448, d),
    }
    for layer in range(layers):
        for side in ("encoder", "decoder"):
            expected[f"{side}/layer_{layer}/self_attention/linear_0/weight"] = (3 * d, d)
            expected[f"{side}/layer_{layer}/self_attention/linear_1/weight"] = (d, d)
            expected[f"{side}/layer_{layer}/ffn/linear_0/weight"] = (4 * d, d)
            expected[f"{side}/layer_{layer}/ffn/linear_1/weight"] = (d, 4 * d)
        expected[f"decoder/layer_{layer}/attention/linear_0/weight"] = (d, d)
        expected[f"decoder/layer_{layer}/attention/linear_1/weight"] = (2 * d, d)
    for key, shape in expected.items():
        assert w[key].shape == shape, key
    tensors = {k: v for k, v in w.items() if v.ndim > 0}
    # Per block: encoder 12 tensors, decoder 20; plus convs, norms, embeddings and the tied alias.
    assert len(tensors) == 12 + 32 * layers
    for key, array in tensors.items():
        assert array.dtype == np.float32, key
        assert np.isfinite(array).all(), key
    # The output projection is tied to the embedding through an alias.
    assert w["decoder/projection/weight"] is w["decoder/embeddings/weight"]
