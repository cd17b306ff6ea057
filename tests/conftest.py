"""Shared fixtures: real weights, real audio from the repository's data folders."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from amanuensis.engine import WhisperModel, load_model
from amanuensis.evaluation import ManifestEntry, read_manifest
from amanuensis.quantize import kernels
from amanuensis.runtime import RuntimeOptions

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="openvino is not installed (pip install '.[openvino]')"
)

# onnxruntime's x86 u8×s8 kernel without VNNI saturates (amanuensis.quantize.kernels): static NPU
# graphs with full int8 weights measured on its CPU EP there show the kernel's clipping, not the NPU's numbers
needs_exact_int8_products = pytest.mark.skipif(
    kernels.saturating_cpu(),
    reason="this CPU has no VNNI: onnxruntime's CPU EP saturates u8×s8 products of int8 weights",
)

ROOT = Path(__file__).resolve().parents[1]
VALIDATION_MANIFEST = ROOT / "tests/data/validation/librispeech_test_other/refs.tsv"
CALIBRATION_DIR = ROOT / "calibration_audio"
SAMPLE = ROOT / "samples/2412-153948-0000.flac"
SAMPLE_REFERENCE = (
    "IF THE READER WILL EXCUSE ME I WILL SAY NOTHING OF MY ANTECEDENTS NOR OF THE CIRCUMSTANCES "
    "WHICH LED ME TO LEAVE MY NATIVE COUNTRY THE NARRATIVE WOULD BE TEDIOUS TO HIM AND PAINFUL TO MYSELF"
)


def sqnr_db(reference: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``got`` against ``reference``, in dB (inf when equal)."""
    error = np.linalg.norm(reference - got)
    return float("inf") if error == 0 else float(20 * np.log10(np.linalg.norm(reference) / error))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the whole-validation-set evaluations")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow evaluation: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny() -> WhisperModel:
    return load_model("tiny.en", RuntimeOptions(precision="fp32", threads=2))


@pytest.fixture(scope="session")
def tiny_int8() -> WhisperModel:
    """The default product: tiny.en with calibrated INT8 graphs."""
    return load_model("tiny.en", RuntimeOptions(precision="int8", threads=2))


@pytest.fixture(scope="session")
def base() -> WhisperModel:
    return load_model("base", RuntimeOptions(precision="fp32", threads=2))


@pytest.fixture(scope="session")
def mel_window() -> np.ndarray:
    """The bundled sample as one encoder input window (80 × 3000)."""
    from amanuensis.audio import load_audio, log_mel_spectrogram, pad_or_trim

    return pad_or_trim(log_mel_spectrogram(load_audio(SAMPLE).samples)).astype(np.float32)


@pytest.fixture(scope="session")
def validation() -> list[ManifestEntry]:
    return read_manifest(VALIDATION_MANIFEST)


@pytest.fixture(scope="session")
def calibration_refs() -> dict[Path, str]:
    refs = {}
    for manifest in sorted(CALIBRATION_DIR.glob("*/refs.tsv")):
        refs.update({e.audio: e.reference for e in read_manifest(manifest)})
    return refs


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), np.float32)
