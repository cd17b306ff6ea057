"""Stream a long recording (validation clips end to end, repeated) and print RSS as it goes.

    python tools/stream_memory.py [--minutes 60] [--json out.json]

The stream's memory must not grow with its length: the buffer is cut at confirmed segment
ends and only a short prompt is kept. Prints resident memory after every 5 minutes of audio.
"""

from __future__ import annotations

import datetime
import json
import resource
import time
from itertools import cycle

import numpy as np
from common import VALIDATION_MANIFEST, model_parser

from amanuensis.audio import SAMPLE_RATE, load_audio
from amanuensis.engine import WhisperModel
from amanuensis.evaluation import read_manifest
from amanuensis.models import WhisperCheckpoint
from amanuensis.runtime import RuntimeOptions
from amanuensis.streaming import CONFIRMED, StreamOptions, TranscriptionStream

REPORT_EVERY_S = 300  # seconds of audio between RSS lines
CHUNK_S = 0.1  # seconds of audio per feed call, as a microphone would deliver


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = WhisperModel(WhisperCheckpoint.load(args.model), RuntimeOptions(precision="int8", threads=args.threads))
    clips = [load_audio(e.audio).samples for e in read_manifest(VALIDATION_MANIFEST)]
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)  # half a second between utterances
    options = StreamOptions()
    stream = TranscriptionStream(model, options)
    total = round(args.minutes * 60 * SAMPLE_RATE)
    chunk = round(CHUNK_S * SAMPLE_RATE)
    fed = words = 0
    next_report = REPORT_EVERY_S * SAMPLE_RATE
    rows = []
    started = time.perf_counter()
    print(f"{'audio (min)':>11} {'RSS (MiB)':>10} {'buffer (s)':>10} {'words':>7} {'wall (min)':>10}")
    for clip in cycle(clips):
        for piece in (clip, gap):
            for start in range(0, len(piece), chunk):
                words += sum(len(e.words) for e in stream.feed(piece[start : start + chunk]) if e.kind == CONFIRMED)
            fed += len(piece)
            if fed >= next_report:
                stats = stream.stats
                row = {
                    "audio_min": round(fed / SAMPLE_RATE / 60, 1),
                    "rss_mib": round(rss_mib(), 1),
                    "buffer_s": round(stats.buffered_samples / SAMPLE_RATE, 2),
                    "confirmed_words": words,
                    "wall_min": round((time.perf_counter() - started) / 60, 1),
                }
                rows.append(row)
                print(" ".join(f"{v:>{w}}" for v, w in zip(row.values(), (11, 10, 10, 7, 10), strict=True)), flush=True)
                next_report += REPORT_EVERY_S * SAMPLE_RATE
        if fed >= total:
            break
    stream.finish()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB over {fed / SAMPLE_RATE / 60:.1f} min of audio")
    if args.json:
        with open(args.json, "w") as handle:
            summary = {
                "rows": rows,
                "peak_rss_mib": round(peak, 1),
                "measured": datetime.date.today().isoformat(),
                "update_interval_s": options.policy.update_interval_s,
                "agreement_span_s": options.policy.agreement_span_s,
                "threads": args.threads,
            }
            json.dump(summary, handle, indent=1)
            handle.write("\n")


if __name__ == "__main__":
    main()
