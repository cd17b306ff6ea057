"""What the scripts in tools/ share: where the checkout's data is, and their common options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amanuensis.conditions import Condition

ROOT = Path(__file__).resolve().parents[1]
VALIDATION_MANIFEST = ROOT / "tests/data/validation/librispeech_test_other/refs.tsv"


def model_parser(doc: str) -> argparse.ArgumentParser:
    """A parser titled from the script's docstring, with --model and --threads (2, as benchmarked)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def gate_conditions(model: str, manifest: Path = VALIDATION_MANIFEST) -> list[Condition]:
    """The quantization gate's conditions for ``model``: ``manifest`` clean and in the gate's noise,
    NOIZEUS where the shared data is present, and every language for a multilingual model."""
    from amanuensis import conditions
    from amanuensis.models import WhisperCheckpoint

    multilingual = WhisperCheckpoint.load(model).is_multilingual
    return conditions.gate_conditions(
        manifest,
        ROOT / conditions.DEFAULT_GATE_NOISE,
        ROOT / conditions.DEFAULT_NOIZEUS,
        ROOT / conditions.DEFAULT_MULTILINGUAL if multilingual else None,
    )
