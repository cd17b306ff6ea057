"""WER regression over the validation set, FP32 and INT8, against committed baselines, and the INT8
gate on every listening condition (clean, unseen noise, NOIZEUS).

Baselines (tests/baselines/*.json) are measured numbers, refreshed deliberately with
``python tools/wer_baselines.py``; a rise of more than REGRESSION_POINTS fails.
"""

from __future__ import annotations

import json

import pytest

from amanuensis import conditions
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import EvaluationReport, evaluate
from amanuensis.quantize.pipeline import GATE_DECODING, GATE_MAX_DELTA
from amanuensis.runtime import RuntimeOptions

from .conftest import ROOT, needs_openvino

GATE_CONDITIONS = {
    c.name: c
    for c in conditions.gate_conditions(
        ROOT / conditions.DEFAULT_VALIDATION, ROOT / conditions.DEFAULT_GATE_NOISE, ROOT / conditions.DEFAULT_NOIZEUS
    )
}

BASELINES = ROOT / "tests/baselines"
REGRESSION_POINTS = 0.5


def _baseline(name: str) -> dict:
    return json.loads((BASELINES / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def clean_reports(tiny, tiny_int8, validation) -> dict[str, EvaluationReport]:
    return {"fp32": evaluate(tiny, validation, GATE_DECODING), "int8": evaluate(tiny_int8, validation, GATE_DECODING)}


@pytest.fixture(scope="module")
def wers(clean_reports) -> dict[str, float]:
    return {precision: report.wer for precision, report in clean_reports.items()}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_no_wer_regression(wers, validation, precision: str) -> None:
    baseline = _baseline(f"tiny.en-{precision}")
    assert baseline["utterances"] == len(validation)
    assert wers[precision] <= baseline["wer"] + REGRESSION_POINTS, (wers[precision], baseline)


@pytest.mark.slow
def test_int8_gate(wers) -> None:
    assert wers["int8"] - wers["fp32"] < GATE_MAX_DELTA, wers


@pytest.mark.slow
@needs_openvino
def test_int8_gate_on_openvino(tiny, wers, validation) -> None:
    """The graphs the OpenVINO backend runs (the openvino table's, f32 pinned) pass the clean gate.

    Measured 2026-12-01: 13.93 % (−0.16 over FP32, QoI 92 %). In noise the same build passes the
    noisy condition (−0.89, QoI 89 %) but not NOIZEUS (+1.66, QoI 84.4 %), where onnxruntime's CPU EP
    measured +0.88 on the same graphs; that is docs/devices.md's open gap, not held here.
    """
    options = RuntimeOptions(precision="int8", threads=2, backend="openvino", device="cpu")
    wer = evaluate(WhisperModel(tiny.checkpoint, options), validation, GATE_DECODING).wer
    assert wer - wers["fp32"] < GATE_MAX_DELTA, (wer, wers)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["noisy", "noizeus"])
def test_int8_gate_in_noise(tiny, tiny_int8, name: str) -> None:
    """The shipped CPU flavour against FP32 on speech in noise: Δ WER within the condition's limit
    and at least QOI_MIN of the clips not made worse (clean speech: test_int8_gate and the baseline)."""
    if name not in GATE_CONDITIONS:
        pytest.skip(f"{name}: the shared data is not beside this checkout")
    condition = GATE_CONDITIONS[name]
    entries = list(condition.entries)
    result = conditions.compare(
        condition, evaluate(tiny, entries, GATE_DECODING), evaluate(tiny_int8, entries, GATE_DECODING)
    )
    print(f"\n{result.to_dict()}")
    assert result.passed, result.to_dict()


@pytest.mark.slow
def test_int8_gate_on_clean_speech(clean_reports) -> None:
    """Clean speech: Δ WER at most 0.5 points and at least QOI_MIN of the clips not made worse."""
    result = conditions.compare(GATE_CONDITIONS["clean"], clean_reports["fp32"], clean_reports["int8"])
    assert result.passed, result.to_dict()
