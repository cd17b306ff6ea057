"""Splitting an FFN's second product by hidden-channel range changes no number in float, and gives
the quiet channels of tiny.en's last encoder FFN an 8-bit scale of their own."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

from amanuensis import export
from amanuensis.errors import OptionsError
from amanuensis.export import GraphKind
from amanuensis.quantize.calibration import compute_ranges
from amanuensis.quantize.qdq import build_qdq
from amanuensis.quantize.recipe import QuantRecipe
from amanuensis.quantize.split import find_ffns, rewritten_copy, splitting_for

from ..conftest import sqnr_db

LOUDEST = "encoder/layer_3/ffn/linear_1/MatMul"  # GELU outputs: 3 channels near 500, the median near 2
OUTPUTS = ["cross_k_0", "cross_v_3"]  # the first and the last thing the encoder's output feeds
# The encoder's output with only that product quantized (openvino flavour, ranges from the same window):
# one range for all its channels against one per group (7.2 → 28.4 dB on calibration inputs, 2026-12-01)
MIN_GAIN_DB = 10.0
RECIPE = QuantRecipe(target="openvino", per_channel=True)


def _run(path: Path, feed: dict) -> list:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(OUTPUTS, feed)


def test_split_encoder_is_the_same_function_and_quantizes_better(tiny, mel_window) -> None:
    path = export.graph_path(tiny.checkpoint, GraphKind.ENCODER)
    assert len(find_ffns(onnx.load(str(path)))) == tiny.checkpoint.dims.n_audio_layer
    feeds = [{"mel": mel_window[None]}]
    splits = splitting_for(path, feeds, len(feeds))
    assert LOUDEST in splits and len(splits[LOUDEST][0]) < 10  # a handful of loud channels first
    assert sorted(c for g in splits[LOUDEST] for c in g) == list(range(4 * tiny.checkpoint.dims.n_audio_state))
    reference = _run(path, feeds[0])
    with tempfile.TemporaryDirectory() as tmp:
        split_path = rewritten_copy(path, splits, {}, Path(tmp))
        for r, s in zip(reference, _run(split_path, feeds[0]), strict=True):
            assert sqnr_db(r, s) > 60.0  # float rounding only
        quantized = Path(tmp) / "q.onnx"
        build_qdq(path, quantized, RECIPE, compute_ranges(path, iter(feeds), RECIPE), only=[LOUDEST])
        whole = min(sqnr_db(r, q) for r, q in zip(reference, _run(quantized, feeds[0]), strict=True))
        groups = [f"{LOUDEST.rsplit('/', 1)[0]}/group_{g}/MatMul" for g in range(len(splits[LOUDEST]))]
        build_qdq(split_path, quantized, RECIPE, compute_ranges(split_path, iter(feeds), RECIPE), only=groups)
        split = min(sqnr_db(r, q) for r, q in zip(reference, _run(quantized, feeds[0]), strict=True))
    print(f"{LOUDEST} alone in 8 bits: {whole:.1f} dB, split into {len(groups)} groups {split:.1f} dB")
    assert split > whole + MIN_GAIN_DB


def test_split_needs_a_flavour_that_leaves_the_split_float() -> None:
    with pytest.raises(OptionsError, match="compute ops"):
        QuantRecipe(target="qnn", split_ffn=True)  # its Split would share one scale again
    with pytest.raises(OptionsError, match="static"):
        QuantRecipe(scheme="dynamic", split_ffn=True)
    assert "split by channel range" in QuantRecipe(target="vitisai", split_ffn=True).describe()
