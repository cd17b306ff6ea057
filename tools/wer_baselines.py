"""Measure and write the WER baselines that tests/test_wer_regression.py holds the code to.

    python tools/wer_baselines.py [--model tiny.en]

Run it deliberately (after a change that is meant to move WER) and commit the JSON files.
"""

from __future__ import annotations

import datetime
import json
import platform

from common import ROOT, VALIDATION_MANIFEST, model_parser

from amanuensis.engine import WhisperModel
from amanuensis.evaluation import evaluate, read_manifest
from amanuensis.models import WhisperCheckpoint
from amanuensis.quantize.pipeline import GATE_DECODING
from amanuensis.runtime import RuntimeOptions


def main() -> None:
    parser = model_parser(__doc__)
    args = parser.parse_args()
    checkpoint = WhisperCheckpoint.load(args.model)
    entries = read_manifest(VALIDATION_MANIFEST)
    for precision in ("fp32", "int8"):
        model = WhisperModel(checkpoint, RuntimeOptions(precision=precision, threads=args.threads))
        report = evaluate(model, entries, GATE_DECODING)
        baseline = {
            "model": args.model,
            "precision": precision,
            "decoding": "greedy",
            "manifest": VALIDATION_MANIFEST.relative_to(ROOT).as_posix(),
            "utterances": len(entries),
            "wer": round(report.wer, 3),
            "measured": datetime.date.today().isoformat(),
            "machine": f"{platform.machine()}, {platform.python_version()}",
        }
        path = ROOT / "tests/baselines" / f"{args.model}-{precision}.json"
        path.write_text(json.dumps(baseline, indent=1) + "\n")
        print(f"{precision}: WER {report.wer:.2f} % → {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
