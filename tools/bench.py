"""Benchmark Amanuensis INT8/FP32 against faster-whisper int8/float32 on the same clips and weights.

    python tools/bench.py [--model tiny.en|base] [--threads 2] [--limit N] [--detect] [--json OUT]

Every configuration runs in its own fresh process (so peak RSS is its own), one run each, in
alternation (ours INT8, theirs int8, ours FP32, theirs float32), greedy decoding with Whisper's
usual temperature fallback on both sides, the same decoded 16 kHz samples, the same thread count,
over the gate's conditions (clean validation clips, the same in unseen noise, and NOIZEUS where
the shared data is present; for a multilingual model also every language of the multilingual
validation set, decoded in its language, and with ``--detect`` once more with the language left
to the model, named ``xx?``). Prints RTF, peak RSS, model bytes on disk, load time and the error
rate per set (CER for Chinese and Japanese) for each row, and language-detection accuracy; then
each engine's INT8 against its float (Δ and QoI per set) and Amanuensis against faster-whisper
(speed, memory, error rate with a paired bootstrap interval). ``--configs amanuensis-int8
amanuensis-int8-words`` measures what word timestamps add to INT8 transcription.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import VALIDATION_MANIFEST, gate_conditions, model_parser

CONFIGS = ("amanuensis-int8", "faster-whisper-int8", "amanuensis-fp32", "faster-whisper-float32")
WORDS_CONFIG = "amanuensis-int8-words"  # INT8 with word timestamps: what they cost (only when asked for)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _ours(config: str, model: str, threads: int):
    """Load, and return (transcribe (array, language) → (text, language), the graph files the run
    loaded, asked after it)."""
    from amanuensis import TranscribeOptions, load_model
    from amanuensis.runtime import RuntimeOptions

    precision = config.split("-")[1]
    words = config == WORDS_CONFIG
    engine = load_model(model, RuntimeOptions(precision=precision, threads=threads))

    def run(samples, language):
        # Greedy; best_of 5 on temperature fallback, as faster-whisper (samples run on the batch-1 graph).
        options = TranscribeOptions(beam_size=1, language=language, word_timestamps=words)
        transcript = engine.transcribe_all(samples, options)
        return transcript.text, transcript.language

    return run, engine.runtime.loaded_graphs


def _ctranslate2_directory(model: str, scratch: Path) -> Path:
    """The model as CTranslate2 reads it: its own folder, or for weights shipped in parts
    (``base``) a scratch folder with the parts joined into one model.bin."""
    from amanuensis.models import WhisperCheckpoint

    files = WhisperCheckpoint.load(model).files
    if len(files.weight_parts) == 1 and files.weight_parts[0].name == "model.bin":
        return files.weight_parts[0].parent
    for source in (files.config_path, files.tokenizer_path, files.config_path.with_name("vocabulary.txt")):
        if source.is_file():
            (scratch / source.name).symlink_to(source)
    with (scratch / "model.bin").open("wb") as joined:
        for part in files.weight_parts:  # streamed: the worker's peak RSS must stay the engine's
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, joined)
    return scratch


def _theirs(config: str, directory: Path, threads: int):
    from faster_whisper import WhisperModel as ReferenceModel

    compute_type = config.rsplit("-", 1)[1]
    engine = ReferenceModel(str(directory), device="cpu", compute_type=compute_type, cpu_threads=threads)

    def run(samples, language):
        segments, info = engine.transcribe(samples, beam_size=1, language=language)
        return "".join(s.text for s in segments), info.language

    return run, lambda: [directory / "model.bin"]


def _sets(model: str, manifest: Path, detect: bool) -> list[tuple]:
    """(condition, set name, language given to the engines or None to detect) per set."""
    sets = []
    for c in gate_conditions(model, manifest):
        language = c.language or "en"
        sets.append((c, c.name, language))
        if detect and c.language:
            sets.append((c, f"{c.name}?", None))
    return sets


def worker(config: str, model: str, threads: int, manifest: Path, limit: int | None, detect: bool) -> dict:
    from amanuensis.evaluation import utterance_errors, word_error_rate

    # Decoding and mixing the audio is not part of either engine: done before the clock starts.
    sets = [
        (name, given, c.language, [(e.reference, e.load().samples) for e in c.entries[:limit]])
        for c, name, given in _sets(model, manifest, detect)
    ]
    scratch = tempfile.TemporaryDirectory(prefix="bench-ct2-")
    ours = config.startswith("amanuensis")
    source = model if ours else _ctranslate2_directory(model, Path(scratch.name))
    start = time.perf_counter()
    transcribe, files = (_ours if ours else _theirs)(config, source, threads)
    load_seconds = time.perf_counter() - start
    results, elapsed, samples_total = {}, 0.0, 0
    for name, given, language, clips in sets:
        hypotheses, detected = [], []
        for _, samples in clips:
            start = time.perf_counter()
            text, found = transcribe(samples, given)
            elapsed += time.perf_counter() - start
            hypotheses.append(text)
            detected.append(found)
            samples_total += len(samples)
        references = [r for r, _ in clips]
        results[name] = {
            "clips": len(clips),
            "wer": word_error_rate(references, hypotheses, language),  # CER where words are not spaced
            "utterance_errors": utterance_errors(references, hypotheses, language),  # (edits, units) per clip
        } | ({"detection": sum(d == language for d in detected) / len(clips)} if given is None else {})
    audio_seconds = samples_total / 16000
    row = {
        "config": config,
        "clips": sum(r["clips"] for r in results.values()),
        "audio_seconds": audio_seconds,
        "rtf": elapsed / audio_seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "model_bytes": sum(Path(f).stat().st_size for f in files()),
        "load_seconds": load_seconds,
        "conditions": results,
    }
    scratch.cleanup()
    return row


def _qoi(reference: list[list[int]], quantized: list[list[int]]) -> float:
    """Share of scored clips whose word errors the quantized engine did not increase."""
    scored = [(b[0], a[0]) for b, a in zip(reference, quantized, strict=True) if b[1]]
    return sum(a <= b for b, a in scored) / len(scored)


def _cell(result: dict) -> str:
    detection = f" ({result['detection']:.0%} detected)" if "detection" in result else ""
    return f"{result['wer']:.2f}{detection}"


def render(rows: list[dict]) -> str:
    from amanuensis.evaluation import paired_wer_difference

    by_name = {r["config"]: r for r in rows}
    names = list(rows[0]["conditions"])
    lines = [
        "| configuration | RTF | peak RSS (MiB) | model on disk (MB) | load (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['rtf']:.3f} | {r['peak_rss_mib']:.0f} | {r['model_bytes'] / 1e6:.1f} "
            f"| {r['load_seconds']:.2f} |"
        )
    lines += ["", "| set (error rate, %) | " + " | ".join(r["config"] for r in rows) + " |"]
    lines.append("|---|" + "---:|" * len(rows))
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_cell(r["conditions"][n]) for r in rows) + " |")
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
    if WORDS_CONFIG in by_name and "amanuensis-int8" in by_name:
        ratio = by_name[WORDS_CONFIG]["rtf"] / by_name["amanuensis-int8"]["rtf"]
        lines.append(f"word timestamps: {WORDS_CONFIG} takes {ratio:.3f}× the time of amanuensis-int8")
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
    parser.add_argument("--configs", nargs="+", choices=(*CONFIGS, WORDS_CONFIG), default=list(CONFIGS))
    parser.add_argument("--detect", action="store_true", help="multilingual sets once more, language detected")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--worker", choices=(*CONFIGS, WORDS_CONFIG), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.threads, args.manifest, args.limit, args.detect)))
        return 0
    rows = []
    for config in args.configs:
        command = [sys.executable, __file__, "--worker", config, "--model", args.model, "--threads", str(args.threads)]
        command += ["--manifest", str(args.manifest)] + (["--limit", str(args.limit)] if args.limit else [])
        command += ["--detect"] if args.detect else []
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
