"""What the scripts in tools/ share: where the checkout's data is, and their common options."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VALIDATION_MANIFEST = ROOT / "tests/data/validation/librispeech_test_other/refs.tsv"


def model_parser(doc: str) -> argparse.ArgumentParser:
    """A parser titled from the script's docstring, with --model and --threads (2, as benchmarked)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    return parser
