"""A real NPU compiler: Qualcomm's HTP backend (x86 emulator) takes the QNN-flavour INT8 graphs.

CPU fallback is disabled, so a node the HTP cannot take fails the session instead of quietly
running on the CPU. Outputs are compared with the CPU EP running the very same QDQ graph.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from amanuensis.devices import DeviceUnavailable, plan
from amanuensis.export.io_names import cross_kv_names, new_kv_names, self_kv_names
from amanuensis.placement import agreement
from amanuensis.quantize import build_int8_graph, load_table
from amanuensis.sessions import SessionSettings, open_session

QNN_EP = "QNNExecutionProvider"
MIN_SQNR_DB = 20.0  # HTP requantizes inside fused ops where the CPU EP goes through float; measured ~27 dB
MIN_STEP_SQNR_DB = 12.0  # decoder steps after the first, shipped table: 16–25 dB measured (2026-12-01)

pytestmark = [
    pytest.mark.slow,  # the emulator runs the HTP's integer kernels in software: about a minute a window
    pytest.mark.skipif(importlib.util.find_spec("onnxruntime_qnn") is None, reason="onnxruntime-qnn not installed"),
]


@pytest.fixture(scope="module")
def qnn_table(tiny):
    """The shipped QNN-flavour table (calibrated on calibration_audio/, gated on the validation set)."""
    return load_table(tiny.checkpoint, target="qnn")


def _htp_session(path, allow_fallback: bool = False, compiled_cache: bool = False):
    """A session on the HTP; without the compiled cache by default, so placement is read node by node."""
    chosen = plan("onnxruntime", "auto", ep=QNN_EP, allow_fallback=allow_fallback)
    settings = SessionSettings(threads=2, allow_fallback=allow_fallback, compiled_cache=compiled_cache)
    return open_session(path, chosen, settings)


def test_encoder_runs_entirely_on_the_htp(tiny, qnn_table, mel_window) -> None:
    path = build_int8_graph(tiny.checkpoint, qnn_table, "encoder")
    names = [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in cross_kv_names(layer)]
    result = agreement("encoder", path, _htp_session(path), {"mel": mel_window[None]}, names)
    print(f"\nencoder on HTP: {result.placement.summary()}; SQNR vs CPU INT8 {min(result.sqnr_db.values()):.1f} dB")
    assert set(result.placement.nodes_per_ep) == {QNN_EP}
    assert result.placement.accelerator_int8_share == 1.0
    assert min(result.sqnr_db.values()) >= MIN_SQNR_DB


def test_decoder_step_runs_on_the_htp(tiny, qnn_table, mel_window) -> None:
    """Every MAC of a decoder step on the HTP, the 51864-wide vocabulary projection included (it
    gets int8 per-channel weights of its own: the HTP has no 16 × 16-bit FullyConnected); only
    the Q/DQ of the graph's inputs stay on the CPU."""
    path = build_int8_graph(tiny.checkpoint, qnn_table, "decoder", 1)
    cross = tiny.runtime.encoder(mel_window)
    cache = tiny.runtime.decoder(1).new_cache()
    feed = {"tokens": np.array([[tiny.tokenizer.sot]], np.int64), "offset": np.array([0], np.int64), "mask": cache.mask}
    feed |= cross
    for layer in range(tiny.checkpoint.dims.n_text_layer):
        k_name, v_name = self_kv_names(layer)
        feed[k_name], feed[v_name] = cache.keys[layer], cache.values[layer]
    names = ["logits"] + [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in new_kv_names(layer)]
    result = agreement("decoder", path, _htp_session(path, allow_fallback=True), feed, names)
    print(f"\ndecoder on HTP: {result.placement.summary()}; logits SQNR vs CPU INT8 {result.sqnr_db['logits']:.1f} dB")
    nodes = result.placement.nodes_per_ep
    assert nodes[QNN_EP] / sum(nodes.values()) > 0.9
    assert set(result.placement.fallback_ops) <= {"QuantizeLinear", "DequantizeLinear"}
    assert result.placement.accelerator_int8_share >= 0.95
    assert result.sqnr_db["logits"] >= MIN_SQNR_DB


def test_cpu_flavour_is_refused_without_fallback(tiny) -> None:
    """The CPU-flavour graph keeps GELU in float, which this HTP has no kernel for: a clear error."""
    path = tiny.runtime.encoder.path if tiny.runtime.options.precision == "int8" else None
    path = path or build_int8_graph(tiny.checkpoint, load_table(tiny.checkpoint), "encoder")
    with pytest.raises(DeviceUnavailable, match=f"{QNN_EP} could not take"):
        _htp_session(path)


def test_decoder_steps_with_a_cache_agree_with_the_cpu_ep(tiny, mel_window) -> None:
    """The first step attends to nothing cached; later ones do. A table whose decoder leaves the
    CPU EP's once the cache fills (it happened with noisy-calibrated ranges: 4–16 dB, the HTP then
    wrote a different sentence) fails here in a minute instead of a 20-minute transcription."""
    from amanuensis import export
    from amanuensis.engine import WhisperModel
    from amanuensis.quantize import find_table
    from amanuensis.runtime import RuntimeOptions

    table = find_table(tiny.checkpoint.files.name, "qnn")
    options = RuntimeOptions(precision="int8", ep="CPUExecutionProvider", threads=2, range_table=table)
    cpu = WhisperModel(tiny.checkpoint, options)
    feeds: list[dict] = []
    decoder = cpu.runtime.decoder(1)
    decoder.observer = lambda feed: feeds.append({k: v.copy() for k, v in feed.items()})
    cache, cross = decoder.new_cache(), cpu.runtime.encoder(mel_window)
    for token in [tiny.tokenizer.sot, tiny.tokenizer.no_timestamps, *tiny.tokenizer.encode(" If the reader")]:
        decoder.step(np.array([token]), cache, cross)
    run_path = decoder.path  # the graph the CPU session runs: rewritten for quantized I/O when it takes any
    if decoder.cache_params or decoder.cross_params:
        run_path = export.quantized_io_decoder_path(decoder.path, tiny.checkpoint.dims.n_text_layer)[0]
    htp = _htp_session(run_path, allow_fallback=True)
    for step, feed in enumerate(feeds):
        reference = decoder.session.run(["logits"], feed)[0]
        logits = htp.run(["logits"], feed)[0]
        sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((reference - logits) ** 2))
        print(f"step {step}: logits SQNR HTP vs CPU EP {sqnr:.1f} dB")
        assert sqnr >= MIN_STEP_SQNR_DB and logits.argmax() == reference.argmax(), f"step {step}: {sqnr:.1f} dB"


def test_compiled_encoder_is_cached_and_gives_the_same_outputs(tiny, qnn_table, mel_window, tmp_path) -> None:
    """The first session compiles for the HTP and saves an EP context model beside the graph; the
    second loads it instead of compiling, faster, and computes the same cross K/V."""
    import shutil
    import time

    from amanuensis.sessions import context_cache_path

    graph = tmp_path / "encoder.onnx"
    shutil.copy(build_int8_graph(tiny.checkpoint, qnn_table, "encoder"), graph)
    names = [n for layer in range(tiny.checkpoint.dims.n_text_layer) for n in cross_kv_names(layer)]
    feed = {"mel": mel_window[None]}
    timings, outputs = [], []
    for _ in range(2):
        start = time.perf_counter()
        session = _htp_session(graph, compiled_cache=True)
        timings.append(time.perf_counter() - start)
        outputs.append(session.run(names, feed))
    chosen = plan("onnxruntime", "auto", ep=QNN_EP, allow_fallback=False)
    assert context_cache_path(graph, chosen).is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging file left behind
    print(f"\nHTP encoder session: first {timings[0]:.1f} s (compile + save), second {timings[1]:.1f} s (cached)")
    assert session.compiled_from_cache and timings[1] < timings[0]
    for first, second in zip(*outputs, strict=True):
        np.testing.assert_array_equal(first, second)


def test_cli_on_the_qnn_ep_transcribes_and_keeps_stdout_clean() -> None:
    """Issue 28 row 1: the audio is read after the QNN libraries are loaded (it crashed), and the
    QNN banner does not reach stdout (it broke ``inspect --json`` and transcripts)."""
    import json
    import subprocess
    import sys

    from amanuensis.evaluation import word_error_rate

    from .conftest import SAMPLE, SAMPLE_REFERENCE

    cli = [sys.executable, "-m", "amanuensis.cli"]
    run = subprocess.run([*cli, "transcribe", "--ep", QNN_EP, str(SAMPLE)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("If the reader") and word_error_rate([SAMPLE_REFERENCE], [run.stdout]) < 0.05
    inspected = subprocess.run(
        [*cli, "inspect", "--ep", QNN_EP, "--json"], capture_output=True, text=True, timeout=1200
    )
    assert inspected.returncode == 0, inspected.stderr[-2000:]
    json.loads(inspected.stdout)
