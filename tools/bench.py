"""Benchmark Amanuensis INT8/FP32 against faster-whisper int8/float32 on the same clips and weights.

    python tools/bench.py [--model tiny.en] [--threads 2] [--limit N] [--json OUT]

Every configuration runs in its own fresh process (so peak RSS is its own), one run each, in
alternation (ours INT8, theirs int8, ours FP32, theirs float32), greedy decoding with Whisper's
usual temperature fallback on both sides, the same decoded 16 kHz samples, the same thread count,
over the gate's conditions (clean validation clips, the same in unseen noise, and NOIZEUS where
the shared data is present). Prints RTF, peak RSS, model bytes on disk, load time and WER per
condition for each row; then each engine's INT8 against its float (Δ WER and QoI per condition)
and Amanuensis against faster-whisper (speed, memory, WER with a paired bootstrap interval).
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

from common import ROOT, VALIDATION_MANIFEST, model_parser

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


def _conditions(manifest: Path):
    from amanuensis import conditions

    return conditions.gate_conditions(manifest, ROOT / conditions.DEFAULT_GATE_NOISE, ROOT / conditions.DEFAULT_NOIZEUS)


def worker(config: str, model: str, threads: int, manifest: Path, limit: int | None) -> dict:
    from amanuensis.evaluation import utterance_errors, word_error_rate

    # Decoding and mixing the audio is not part of either engine: done before the clock starts.
    sets = {c.name: [(e.reference, e.load().samples) for e in c.entries[:limit]] for c in _conditions(manifest)}
    start = time.perf_counter()
    transcribe, files = (_ours if config.startswith("amanuensis") else _theirs)(config, model, threads)
    load_seconds = time.perf_counter() - start
    results, elapsed, samples_total = {}, 0.0, 0
    for name, clips in sets.items():
        hypotheses = []
        for _, samples in clips:
            start = time.perf_counter()
            hypotheses.append(transcribe(samples))
            elapsed += time.perf_counter() - start
            samples_total += len(samples)
        references = [r for r, _ in clips]
        results[name] = {
            "clips": len(clips),
            "wer": word_error_rate(references, hypotheses),
            "utterance_errors": utterance_errors(references, hypotheses),  # (edits, words) per clip
        }
    audio_seconds = samples_total / 16000
    return {
        "config": config,
        "clips": sum(r["clips"] for r in results.values()),
        "audio_seconds": audio_seconds,
        "rtf": elapsed / audio_seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "model_bytes": sum(Path(f).stat().st_size for f in files()),
        "load_seconds": load_seconds,
        "conditions": results,
    }


def _qoi(reference: list[list[int]], quantized: list[list[int]]) -> float:
    """Share of scored clips whose word errors the quantized engine did not increase."""
    scored = [(b[0], a[0]) for b, a in zip(reference, quantized, strict=True) if b[1]]
    return sum(a <= b for b, a in scored) / len(scored)


def render(rows: list[dict]) -> str:
    from amanuensis.evaluation import paired_wer_difference

    by_name = {r["config"]: r for r in rows}
    names = list(rows[0]["conditions"])
    lines = [
        "| configuration | RTF | peak RSS (MiB) | model on disk (MB) | load (s) | "
        + " | ".join(f"WER {n} (%)" for n in names)
        + " |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(names),
    ]
    for r in rows:
        wers = " | ".join(f"{r['conditions'][n]['wer']:.2f}" for n in names)
        lines.append(
            f"| {r['config']} | {r['rtf']:.3f} | {r['peak_rss_mib']:.0f} | {r['model_bytes'] / 1e6:.1f} "
            f"| {r['load_seconds']:.2f} | {wers} |"
        )
    lines.append("")
    for quantized, reference in (
        ("amanuensis-int8", "amanuensis-fp32"),
        ("faster-whisper-int8", "faster-whisper-float32"),
    ):
        if quantized in by_name and reference in by_name:
            q, f = by_name[quantized]["conditions"], by_name[reference]["conditions"]
            cells = "; ".join(
                f"{n} Δ {q[n]['wer'] - f[n]['wer']:+.2f}, "
                f"QoI {_qoi(f[n]['utterance_errors'], q[n]['utterance_errors']):.0%}"
                for n in names
            )
            lines.append(f"{quantized} vs {reference}: {cells}")
    for ours, theirs in (("amanuensis-int8", "faster-whisper-int8"), ("amanuensis-fp32", "faster-whisper-float32")):
        if ours in by_name and theirs in by_name:
            a, b = by_name[ours], by_name[theirs]
            wer = []
            for n in names:
                difference, low, high = paired_wer_difference(
                    a["conditions"][n]["utterance_errors"], b["conditions"][n]["utterance_errors"]
                )
                wer.append(f"{n} {difference:+.2f} ({low:+.2f} … {high:+.2f})")
            lines.append(
                f"{ours} vs {theirs}: {b['rtf'] / a['rtf']:.2f}× the speed, "
                f"{a['peak_rss_mib'] / b['peak_rss_mib']:.2f}× the peak RSS; WER points with a 95 % paired "
                f"bootstrap interval over clips: {'; '.join(wer)}"
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
