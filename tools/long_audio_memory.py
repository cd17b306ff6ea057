"""Peak memory of transcribing one long file, Amanuensis against faster-whisper, in one run.

    python tools/long_audio_memory.py [--minutes 30 60] [--json out.json]

Builds each length from the validation clips end to end (a 16 kHz FLAC in a temporary folder),
then runs ``amanuensis transcribe`` (greedy, default precision) and faster-whisper (int8, greedy)
on it, each in a fresh process, and prints the peak RSS of each process with the audio length.
Amanuensis keeps the decoded samples of a file on disk (``samples.open_audio``) and computes the
log-mel a window at a time, so its memory should not grow with the length of the audio.
"""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
import sys
import tempfile
from itertools import cycle
from pathlib import Path

import numpy as np
import soundfile as sf
from common import VALIDATION_MANIFEST, model_parser

from amanuensis.audio import SAMPLE_RATE, load_audio
from amanuensis.evaluation import read_manifest

FASTER_WHISPER = """
import sys
from faster_whisper import WhisperModel
from amanuensis.models import WhisperCheckpoint
directory = WhisperCheckpoint.load(sys.argv[2]).files.config_path.parent
model = WhisperModel(str(directory), device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
segments, _ = model.transcribe(sys.argv[1], beam_size=1, language="en")
print(sum(len(s.text.split()) for s in segments))
"""


def long_file(minutes: float, folder: Path) -> Path:
    clips = cycle(load_audio(e.audio).samples for e in read_manifest(VALIDATION_MANIFEST))
    pieces, total = [], 0
    while total < minutes * 60 * SAMPLE_RATE:
        pieces.append(next(clips))
        total += len(pieces[-1])
    path = folder / f"long-{minutes:g}min.flac"
    sf.write(path, np.concatenate(pieces)[: int(minutes * 60 * SAMPLE_RATE)], SAMPLE_RATE)
    return path


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--minutes", type=float, nargs="+", default=[30, 60])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in sorted(args.minutes):
            path = long_file(minutes, Path(tmp))
            ours = [sys.executable, "-m", "amanuensis.cli", "transcribe", str(path), "--model", args.model]
            ours += ["--beam-size", "1", "--threads", str(args.threads), "--progress", "never"]
            theirs = [sys.executable, "-c", FASTER_WHISPER, str(path), args.model, str(args.threads)]
            for name, command in (("amanuensis", ours), ("faster-whisper-int8", theirs)):
                print(f"{minutes:g} min: {name} …", file=sys.stderr, flush=True)
                peak, seconds, _ = _isolated(command)
                rows.append({"engine": name, "minutes": minutes, "peak_rss_mib": peak, "seconds": seconds})
    print(f"{args.model}, greedy, {args.threads} threads, {platform.machine()}, {datetime.date.today()}\n")
    print("| engine | audio (min) | peak RSS (MiB) | wall time (s) |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['engine']} | {row['minutes']:g} | {row['peak_rss_mib']:.0f} | {row['seconds']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"date": str(datetime.date.today()), "rows": rows}, indent=1) + "\n")
    return 0


WRAPPER = """
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - start)
"""


def _isolated(command: list[str]) -> tuple[float, float, str]:
    """Peak RSS (MiB) and seconds of ``command``, measured by a wrapper process of its own (the
    children's peak that getrusage reports is the largest of all children a process waited for)."""
    out = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, check=True)
    peak_kib, seconds = out.stdout.split()
    return float(peak_kib) / 1024, float(seconds), ""


if __name__ == "__main__":
    sys.exit(main())
