"""Compare Amanuensis FP32 with faster-whisper float32 on a manifest, same weights, greedy.

Both engines get the same decoded 16 kHz samples and the same decoding rules (greedy,
temperature 0 only, timestamps on), so any difference comes from features, graphs or
decoding. Prints a table (or JSON with --json): WER, RTF and how many utterances produced
identical tokens.

    python tools/compare_reference.py [--manifest M] [--model tiny.en] [--limit N] [--json]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from common import VALIDATION_MANIFEST, model_parser

from amanuensis import TranscribeOptions, load_model
from amanuensis.audio import load_audio
from amanuensis.evaluation import read_manifest, word_error_rate
from amanuensis.runtime import RuntimeOptions


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--manifest", type=Path, default=VALIDATION_MANIFEST)
    parser.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    parser.add_argument(
        "--window-padding",
        choices=["silence", "zeros"],
        default="silence",
        help="ours: Whisper's silence padding (default) or faster-whisper's zero features",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from faster_whisper import WhisperModel as ReferenceModel

    ours = load_model(args.model, RuntimeOptions(precision="fp32", threads=args.threads))
    reference = ReferenceModel(
        str(ours.checkpoint.files.config_path.parent), device="cpu", compute_type="float32", cpu_threads=args.threads
    )
    eot = ours.tokenizer.eot
    options = TranscribeOptions(beam_size=1, temperatures=(0.0,), window_padding=args.window_padding)
    entries = read_manifest(args.manifest)[: args.limit]

    rows = []
    seconds = {"amanuensis": 0.0, "faster-whisper": 0.0}
    audio_seconds = 0.0
    for entry in entries:
        samples = load_audio(entry.audio).samples
        audio_seconds += len(samples) / 16000
        start = time.perf_counter()
        segments, _ = ours.transcribe(samples, options)
        our_segments = list(segments)
        seconds["amanuensis"] += time.perf_counter() - start
        start = time.perf_counter()
        segments, _ = reference.transcribe(samples, beam_size=1, temperature=0.0, language="en")
        ref_segments = list(segments)
        seconds["faster-whisper"] += time.perf_counter() - start
        our_tokens = [t for s in our_segments for t in s.tokens]
        ref_tokens = [t for s in ref_segments for t in s.tokens]
        rows.append({
            "audio": entry.audio.name,
            "reference": entry.reference,
            "amanuensis": "".join(s.text for s in our_segments).strip(),
            "faster_whisper": "".join(s.text for s in ref_segments).strip(),
            "tokens_identical": our_tokens == ref_tokens,
            "text_tokens_identical": [t for t in our_tokens if t < eot] == [t for t in ref_tokens if t < eot],
        })  # fmt: skip

    refs = [r["reference"] for r in rows]
    summary = {
        "model": args.model,
        "window_padding": args.window_padding,
        "utterances": len(rows),
        "audio_seconds": round(audio_seconds, 2),
        "tokens_identical": sum(r["tokens_identical"] for r in rows),
        "text_tokens_identical": sum(r["text_tokens_identical"] for r in rows),
        "wer": {
            "amanuensis": round(word_error_rate(refs, [r["amanuensis"] for r in rows]), 3),
            "faster-whisper": round(word_error_rate(refs, [r["faster_whisper"] for r in rows]), 3),
        },
        "rtf": {name: round(s / audio_seconds, 4) for name, s in seconds.items()},
        "differences": [r for r in rows if not r["tokens_identical"]],
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"{args.model}, greedy FP32, {len(rows)} utterances ({audio_seconds / 60:.1f} min), {args.threads} threads, "
        f"our window padding: {args.window_padding}"
    )
    print(f"{'engine':<16}{'WER %':>8}{'RTF':>8}")
    for name in ("amanuensis", "faster-whisper"):
        print(f"{name:<16}{summary['wer'][name]:>8.2f}{summary['rtf'][name]:>8.3f}")
    print(f"identical tokens (with timestamps): {summary['tokens_identical']}/{len(rows)}")
    print(f"identical text tokens:              {summary['text_tokens_identical']}/{len(rows)}")
    for row in summary["differences"]:
        print(f"  differs: {row['audio']}\n    ours: {row['amanuensis']}\n    ref:  {row['faster_whisper']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
