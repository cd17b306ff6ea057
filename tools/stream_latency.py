"""Streaming over the validation set (or other manifests): confirmation delay per word, real-time factor, WER.

    python tools/stream_latency.py [--limit N] [--update-interval 1.0] [--agreement 3] [--trim-after 20]
                                   [--unsure-probability 0.4] [--unsure-hold 3.0]
                                   [--continuous] [--noise DIR] [--json out.json] [--manifest refs.tsv ...]

Each clip is streamed with the default StreamOptions and compared with the offline
transcription of the same clip decoded as the stream's final decode is (greedy, with Whisper's
temperature fallback), and with a greedy decode without fallback (the reference before
2026-11-24). The delay of a word is when a real-time loop on this machine would show it
confirmed, minus when it ends in the audio (word ends from the offline transcription's word
timestamps; see amanuensis/streaming/evaluation.py).
With --continuous the clips are joined, 0.5 s apart, into one stream, as a talk would arrive:
the buffer is then cut and prompted, which single clips rarely need. With --noise each clip is
first mixed with one recording of that folder at 0–20 dB SNR, seeded by the clip's name, as the
quantization gate's noisy condition is (choose settings with calibration_audio/noise on the
calibration clips; confirm with tests/data/noise on the validation clips).
"""

from __future__ import annotations

import datetime
import json
import platform
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from common import ROOT, VALIDATION_MANIFEST, model_parser
from tqdm import tqdm

from amanuensis import conditions
from amanuensis.audio import SAMPLE_RATE
from amanuensis.cli.flags import add_flags, from_flags
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import ManifestEntry, read_manifest, word_error_rate
from amanuensis.models import WhisperCheckpoint
from amanuensis.runtime import RuntimeOptions
from amanuensis.streaming import AgreementPolicy, StreamOptions
from amanuensis.streaming.evaluation import offline_words, run_stream, word_delays


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    add_flags(parser, AgreementPolicy)  # the stream command's policy flags (streaming.options)
    parser.add_argument("--limit", type=int, default=None, help="first N clips only")
    parser.add_argument("--continuous", action="store_true", help="one stream of all clips, 0.5 s apart")
    parser.add_argument("--noise", type=Path, default=None, help="mix each clip with a recording of this folder")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument(
        "--manifest",
        nargs="+",
        default=[str(VALIDATION_MANIFEST)],
        help="manifests to stream (default: the validation set; the calibration clips' refs.tsv files to try settings)",
    )
    args = parser.parse_args()
    model = WhisperModel(
        WhisperCheckpoint.load(args.model), RuntimeOptions(precision=args.precision, threads=args.threads)
    )
    options = StreamOptions(policy=from_flags(AgreementPolicy, args))

    def clips(manifest: str) -> Sequence[ManifestEntry]:
        return read_manifest(manifest) if args.noise is None else conditions.noisy(Path(manifest), args.noise).entries

    entries = [entry for manifest in args.manifest for entry in clips(manifest)][: args.limit]
    delays: list[float] = []
    streamed, offline, offline_no_fallback, references = [], [], [], []
    no_fallback = replace(options, decoding=replace(options.decoding, finish_temperatures=(0.0,)))
    compute = duration = 0.0
    missed = 0
    recordings = [(e.load().samples, e.reference) for e in entries]
    if args.continuous:
        gap = np.zeros(SAMPLE_RATE // 2, np.float32)
        joined = np.concatenate([piece for samples, _ in recordings for piece in (samples, gap)])
        recordings = [(joined, " ".join(reference for _, reference in recordings))]
    for samples, reference in tqdm(recordings, desc="streaming", unit="recording"):
        reference_words = offline_words(model, samples, options)
        run = run_stream(model, samples, options)
        clip_delays = word_delays(run, reference_words)
        delays += clip_delays
        missed += len(reference_words) - len(clip_delays)
        streamed.append(run.text)
        offline.append("".join(w.text for w in reference_words))
        offline_no_fallback.append("".join(w.text for w in offline_words(model, samples, no_fallback)))
        references.append(reference)
        compute += sum(run.compute)
        duration += run.duration
    figures = {
        "model": args.model,
        "precision": args.precision,
        **asdict(options.policy),
        "manifests": [
            str(Path(m).resolve().relative_to(ROOT)) if Path(m).resolve().is_relative_to(ROOT) else m
            for m in args.manifest
        ],
        "clips": len(entries),
        "continuous": args.continuous,
        "noise": None if args.noise is None else str(args.noise),
        "audio_s": round(duration, 1),
        "words_timed": len(delays),
        "offline_words_not_confirmed": missed,
        "delay_median_s": round(float(np.median(delays)), 2),
        "delay_p90_s": round(float(np.percentile(delays, 90)), 2),
        "delay_p95_s": round(float(np.percentile(delays, 95)), 2),
        "stream_rtf": round(compute / duration, 3),
        "wer_stream_vs_offline": round(word_error_rate(offline, streamed), 2),
        "wer_stream_vs_offline_without_fallback": round(word_error_rate(offline_no_fallback, streamed), 2),
        "wer_stream_vs_reference": round(word_error_rate(references, streamed), 2),
        "wer_offline_vs_reference": round(word_error_rate(references, offline), 2),
        "threads": args.threads,
        "measured": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        path = ROOT / args.json if not args.json.startswith("/") else args.json
        with open(path, "w") as handle:
            json.dump(figures, handle, indent=1)
            handle.write("\n")


if __name__ == "__main__":
    main()
