"""Word timestamps of Amanuensis (FP32 and INT8) against faster-whisper's on the same weights.

    python tools/word_timing.py [--model tiny.en] [--manifest M] [--limit N] [--json OUT]

Each clip is transcribed greedily with word timestamps by faster-whisper (float32, the reference)
and by Amanuensis FP32 and INT8. Words are paired where both engines wrote the same word in the
same place (a diff of the two word sequences), and the start and end times of each pair compared.
Prints, per precision, the pairs found and the median and 90th percentile of the absolute
difference (Δ) in ms, starts and ends together.
"""

from __future__ import annotations

import difflib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from common import VALIDATION_MANIFEST, model_parser

from amanuensis import TranscribeOptions, load_model
from amanuensis.audio import load_audio
from amanuensis.evaluation import read_manifest
from amanuensis.runtime import RuntimeOptions

Timed = list[tuple[str, float, float]]  # (word, start, end)


def paired_differences(ours: Timed, reference: Timed) -> list[float]:
    """|start| and |end| differences, in seconds, of the words both sequences have in the same place."""
    matcher = difflib.SequenceMatcher(None, [w.strip() for w, _, _ in ours], [w.strip() for w, _, _ in reference])
    differences = []
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            (_, a_start, a_end), (_, b_start, b_end) = ours[block.a + k], reference[block.b + k]
            differences += [abs(a_start - b_start), abs(a_end - b_end)]
    return differences


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--manifest", type=Path, default=VALIDATION_MANIFEST)
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    from faster_whisper import WhisperModel as ReferenceModel

    engines = {p: load_model(args.model, RuntimeOptions(precision=p, threads=args.threads)) for p in ("fp32", "int8")}
    directory = engines["fp32"].checkpoint.files.config_path.parent
    reference = ReferenceModel(str(directory), device="cpu", compute_type="float32", cpu_threads=args.threads)
    options = TranscribeOptions(beam_size=1, word_timestamps=True, language="en")
    differences: dict[str, list[float]] = {p: [] for p in engines}
    words = {"reference": 0} | {p: 0 for p in engines}
    for entry in read_manifest(args.manifest)[: args.limit]:
        samples = load_audio(entry.audio).samples
        segments, _ = reference.transcribe(samples, beam_size=1, language="en", word_timestamps=True)
        theirs = [(w.word, float(w.start), float(w.end)) for s in segments for w in s.words]
        words["reference"] += len(theirs)
        for precision, engine in engines.items():
            ours = [(w.word, w.start, w.end) for s in engine.transcribe(samples, options)[0] for w in s.words]
            words[precision] += len(ours)
            differences[precision] += paired_differences(ours, theirs)
    rows = {}
    for precision, found in differences.items():
        ms = 1000 * np.array(found)
        rows[precision] = {
            "words": words[precision],
            "paired_words": len(found) // 2,
            "median_ms": float(np.median(ms)),
            "p90_ms": float(np.percentile(ms, 90)),
        }
    clips = f"first {args.limit}" if args.limit else "all"
    print(f"{args.model}, {args.manifest.parent.name}, {clips} clips, greedy, {args.threads} threads")
    print(f"faster-whisper float32 (reference): {words['reference']} words\n")
    print("| Amanuensis | words | paired with the reference | median Δ (ms) | 90th percentile Δ (ms) |")
    print("|---|---:|---:|---:|---:|")
    for precision, row in rows.items():
        print(
            f"| {precision.upper()} | {row['words']} | {row['paired_words']} | {row['median_ms']:.0f} "
            f"| {row['p90_ms']:.0f} |"
        )
    if args.json:
        measured = f"{platform.processor() or platform.machine()}, {args.threads} threads, {time.strftime('%Y-%m-%d')}"
        figures = {"model": args.model, "set": args.manifest.parent.name, "clips": clips, "machine": measured}
        figures |= {"reference_words": words["reference"], **rows}
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
