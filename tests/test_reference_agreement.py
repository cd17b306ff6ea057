"""Agreement with faster-whisper (CTranslate2) on the same weights, via tools/compare_reference.py.

Both engines see the same samples; ours uses faster-whisper's window padding here so that
the comparison isolates graphs and decoding (our default pads like openai/whisper; the tool
reports that configuration too).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT


def compare(*args: str) -> dict:
    command = [sys.executable, str(ROOT / "tools/compare_reference.py"), "--json", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=True)
    return json.loads(result.stdout)


def test_first_utterances_agree_token_for_token() -> None:
    summary = compare("--limit", "4", "--window-padding", "zeros")  # 8 of 8 agreed on 2026-12-02
    assert summary["utterances"] == 4
    assert summary["tokens_identical"] >= 3


@pytest.mark.slow
def test_validation_set_agrees_with_faster_whisper() -> None:
    summary = compare("--window-padding", "zeros")
    assert summary["utterances"] == 100
    assert summary["tokens_identical"] >= 95
    assert abs(summary["wer"]["amanuensis"] - summary["wer"]["faster-whisper"]) <= 0.3
