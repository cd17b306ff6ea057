"""Device discovery and selection through onnxruntime's EP registry and OpenVINO, on this machine."""

from __future__ import annotations

import json

import numpy as np
import pytest

from amanuensis import devices
from amanuensis.devices import CPU_EP, DeviceUnavailable, plan
from amanuensis.engine import WhisperModel
from amanuensis.errors import OptionsError
from amanuensis.evaluation import word_error_rate
from amanuensis.placement import graph_placement
from amanuensis.runtime import Decoder, Encoder, RuntimeOptions

from .conftest import SAMPLE, SAMPLE_REFERENCE, needs_openvino
from .test_cli import run

HAS_NPU = any(e.hardware == "npu" for e in devices.list_devices())
needs_no_npu = pytest.mark.skipif(HAS_NPU, reason="this machine has an NPU; the fallback path is not taken")


def test_cpu_is_always_listed() -> None:
    entries = devices.list_devices()
    assert any(e.backend == "onnxruntime" and e.ep == CPU_EP and e.hardware == "cpu" for e in entries)


@needs_no_npu
def test_npu_request_falls_back_to_cpu_and_says_why() -> None:
    chosen = plan("onnxruntime", "npu")
    assert chosen.ep == CPU_EP and "no NPU execution provider" in chosen.fallback_reason
    with pytest.raises(DeviceUnavailable, match="not falling back"):
        plan("onnxruntime", "npu", allow_fallback=False)


@needs_no_npu
def test_auto_does_not_pick_an_emulator() -> None:
    """PREFER_NPU alone would take the QNN x86 emulator (a CPU-type device); auto must not."""
    assert plan("onnxruntime", "auto").ep == CPU_EP


def test_missing_ep_is_replaced_and_unknown_one_refused() -> None:
    """An EP onnxruntime knows but this machine lacks falls back to the CPU (or fails under
    --no-fallback); a name no onnxruntime has is a typo, refused as an option error."""
    assert plan("onnxruntime", "auto", ep="CUDAExecutionProvider").ep == CPU_EP
    with pytest.raises(DeviceUnavailable, match="CUDAExecutionProvider is not available"):
        plan("onnxruntime", "auto", ep="CUDAExecutionProvider", allow_fallback=False)
    with pytest.raises(OptionsError, match="unknown execution provider"):
        plan("onnxruntime", "auto", ep="NoSuchExecutionProvider")


def test_placement_is_read_from_the_session(tiny) -> None:
    """On the CPU EP every node is the CPU's, and no INT8 work is credited to an accelerator."""
    model = WhisperModel(tiny.checkpoint, RuntimeOptions(precision="int8", threads=2, device="cpu"))
    encoder = model.runtime.encoder
    placement = graph_placement("encoder", encoder.path, encoder.session)
    assert set(placement.nodes_per_ep) == {CPU_EP} and placement.nodes_per_ep[CPU_EP] > 100
    assert placement.int8_macs > 0 and placement.int8_macs_on_accelerator == 0
    assert placement.fallback_ops == {}


def test_devices_command() -> None:
    table = run("devices")
    assert table.returncode == 0, table.stderr
    assert CPU_EP in table.stdout and "--device auto --backend onnxruntime:" in table.stdout
    listing = json.loads(run("devices", "--json").stdout)
    assert {"backend", "ep", "hardware", "vendor"} <= set(listing["devices"][0])


@needs_no_npu
def test_transcribe_on_npu_request_runs_on_cpu_and_says_so() -> None:
    result = run("transcribe", SAMPLE, "--device", "npu", "--beam-size", "1")
    assert result.returncode == 0, result.stderr
    assert word_error_rate([SAMPLE_REFERENCE], [result.stdout]) == 0.0
    assert "no NPU execution provider found, using the CPU" in result.stderr
    assert f"encoder → {CPU_EP}" in result.stderr


def test_inspect_reports_nodes_per_ep() -> None:
    result = run("inspect", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    graphs = {p["graph"]: p for p in json.loads(result.stdout)}
    assert set(graphs) == {"encoder", "decoder"}
    assert all(CPU_EP in p["nodes_per_ep"] and p["int8_macs"] > 0 for p in graphs.values())


@needs_openvino
def test_openvino_f32_matches_onnxruntime_on_the_fp32_encoder(tiny, mel_window) -> None:
    """OpenVINO pinned to f32 computes what onnxruntime computes (its bf16 default would not)."""
    path = tiny.runtime.encoder.path
    options = RuntimeOptions(threads=2, backend="openvino", device="cpu")
    ours = Encoder(path, tiny.checkpoint.dims, options)(mel_window)
    reference = tiny.runtime.encoder(mel_window)
    for name, value in reference.items():
        np.testing.assert_allclose(ours[name], value, atol=2e-3, rtol=1e-3)
    assert ours and ours.keys() == reference.keys()


@needs_openvino
def test_openvino_f32_decoder_step_matches_onnxruntime(tiny, mel_window) -> None:
    """Outputs are found by the graph's names (OpenVINO may also name a port after its producer)."""
    cross = tiny.runtime.encoder(mel_window)
    options = RuntimeOptions(threads=2, backend="openvino", device="cpu")
    ours = Decoder(tiny.runtime.decoder(1).path, tiny.checkpoint.dims, options, batch=1)
    reference = tiny.runtime.decoder(1)
    ours_cache, reference_cache = ours.new_cache(), reference.new_cache()
    for token in (tiny.tokenizer.sot, tiny.tokenizer.no_timestamps):
        got = ours.step(np.array([token]), ours_cache, cross)
        expected = reference.step(np.array([token]), reference_cache, cross)
        np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(ours_cache.keys[3], reference_cache.keys[3], atol=2e-3, rtol=1e-3)


@needs_openvino
def test_transcribe_with_openvino_backend() -> None:
    result = run("transcribe", SAMPLE, "--backend", "openvino", "--beam-size", "1")
    assert result.returncode == 0, result.stderr
    assert word_error_rate([SAMPLE_REFERENCE], [result.stdout]) == 0.0
    assert "OpenVINO:CPU" in result.stderr
