"""Benchmark Amanuensis INT8/FP32 against faster-whisper int8/float32 on the same clips and weights.

    python tools/bench.py [--model tiny.en] [--threads 2] [--limit N] [--json OUT]

Every configuration runs in its own fresh process (so peak RSS is its own), one run each, in
alternation (ours INT8, theirs int8, ours FP32, theirs float32), greedy decoding with Whisper's
usual temperature fallback on both sides, the same decoded 16 kHz samples, the same thread count.
Prints RTF, peak RSS, model bytes on disk, load time and WER per row, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from common import VALIDATION_MANIFEST, model_parser

CONFIGS = ("amanuensis-int8", "faster-whisper-int8", "amanuensis-fp32", "faster-whisper-float32")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _ours(config: str, model: str, threads: int):
    """Load, and return (transcribe one array → text, the graph files the run loaded, asked after it)."""
    from amanuensis import TranscribeOptions
    from amanuensis.engine import WhisperModel
    from amanuensis.models import WhisperCheckpoint
    from amanuensis.runtime import RuntimeOptions

    precision = config.rsplit("-", 1)[1]
    engine = WhisperModel(WhisperCheckpoint.load(model), RuntimeOptions(precision=precision, threads=threads))
    # Greedy; best_of 5 on temperature fallback, as faster-whisper (the samples run on the batch-1 graph).
    options = TranscribeOptions(beam_size=1)
    return (lambda samples: engine.transcribe_all(samples, options).text), engine.runtime.loaded_graphs


def _theirs(config: str, model: str, threads: int):
    from faster_whisper import WhisperModel as ReferenceModel

    from amanuensis.models import WhisperCheckpoint

    directory = WhisperCheckpoint.load(model).files.config_path.parent
    compute_type = config.rsplit("-", 1)[1]
    engine = ReferenceModel(str(directory), device="cpu", compute_type=compute_type, cpu_threads=threads)

    def run(samples):
        segments, _ = engine.transcribe(samples, beam_size=1, language="en")
        return "".join(s.text for s in segments)

    return run, lambda: [directory / "model.bin"]


def worker(config: str, model: str, threads: int, manifest: Path, limit: int | None) -> dict:
    from amanuensis.audio import load_audio
    from amanuensis.evaluation import read_manifest, utterance_errors, word_error_rate

    entries = read_manifest(manifest)[:limit]
    clips = [load_audio(e.audio).samples for e in entries]  # decoding audio is not part of either engine
    start = time.perf_counter()
    transcribe, files = (_ours if config.startswith("amanuensis") else _theirs)(config, model, threads)
    load_seconds = time.perf_counter() - start
    hypotheses, elapsed = [], 0.0
    for samples in clips:
        start = time.perf_counter()
        hypotheses.append(transcribe(samples))
        elapsed += time.perf_counter() - start
    audio_seconds = sum(len(c) for c in clips) / 16000
    return {
        "config": config,
        "clips": len(clips),
        "audio_seconds": audio_seconds,
        "rtf": elapsed / audio_seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "model_bytes": sum(Path(f).stat().st_size for f in files()),
        "load_seconds": load_seconds,
        "wer": word_error_rate([e.reference for e in entries], hypotheses),
        "utterance_errors": utterance_errors([e.reference for e in entries], hypotheses),  # (edits, words)
    }


def render(rows: list[dict]) -> str:
    from amanuensis.evaluation import paired_wer_difference

    by_name = {r["config"]: r for r in rows}
    lines = [
        "| configuration | RTF | peak RSS (MiB) | model on disk (MB) | load (s) | WER (%) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['rtf']:.3f} | {r['peak_rss_mib']:.0f} | {r['model_bytes'] / 1e6:.1f} "
            f"| {r['load_seconds']:.2f} | {r['wer']:.2f} |"
        )
    lines.append("")
    for ours, theirs in (("amanuensis-int8", "faster-whisper-int8"), ("amanuensis-fp32", "faster-whisper-float32")):
        if ours in by_name and theirs in by_name:
            a, b = by_name[ours], by_name[theirs]
            difference, low, high = paired_wer_difference(a["utterance_errors"], b["utterance_errors"])
            lines.append(
                f"{ours} vs {theirs}: {b['rtf'] / a['rtf']:.2f}× the speed, "
                f"{a['peak_rss_mib'] / b['peak_rss_mib']:.2f}× the peak RSS, WER {difference:+.2f} points "
                f"(95 % paired bootstrap over clips: {low:+.2f} … {high:+.2f})"
            )
    return "\n".join(lines)


def main() -> int:
    parser = model_parser(__doc__)
    parser.add_argument("--manifest", type=Path, default=VALIDATION_MANIFEST)
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.threads, args.manifest, args.limit)))
        return 0
    rows = []
    for config in args.configs:
        command = [sys.executable, __file__, "--worker", config, "--model", args.model, "--threads", str(args.threads)]
        command += ["--manifest", str(args.manifest)] + (["--limit", str(args.limit)] if args.limit else [])
        print(f"running {config} …", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, {time.strftime('%Y-%m-%d')}"
    print(f"{args.model}, {rows[0]['clips']} clips ({rows[0]['audio_seconds']:.0f} s of audio), {machine}\n")
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "machine": machine, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
