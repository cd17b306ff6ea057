"""The other subcommands: stream, evaluate, quantize, devices, inspect."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from amanuensis.audio import SAMPLE_RATE, AudioError
from amanuensis.cli.parser import UsageError
from amanuensis.cli.transcribe import load, transcribe_options
from amanuensis.devices import BACKENDS, DeviceUnavailable
from amanuensis.transcribe import TranscribeOptions


def run_stream(args: argparse.Namespace) -> int:
    from amanuensis.cli.flags import from_flags
    from amanuensis.streaming import (
        CONFIRMED,
        AgreementPolicy,
        AudioFormat,
        StreamDecoding,
        StreamOptions,
        TranscriptionStream,
    )
    from amanuensis.streaming.sources import file_chunks, paced, pipe_chunks
    from amanuensis.writers import format_timestamp

    if args.beam_size < 1:
        raise UsageError("--beam-size must be at least 1")
    if args.chunk_ms <= 0 or args.realtime_factor < 0:
        raise UsageError("--chunk-ms must be positive and --realtime-factor not negative")
    try:
        options = StreamOptions(
            decoding=StreamDecoding(
                language=args.language, task=args.task, beam_size=args.beam_size, word_timestamps=args.word_timestamps
            ),
            policy=from_flags(AgreementPolicy, args),
        )
        raw = AudioFormat(args.sample_rate, args.channels, "int16" if args.input_format == "s16le" else "float32")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    chunk_s = args.chunk_ms / 1000
    if args.audio == "-":
        audio_format, chunks = pipe_chunks(sys.stdin.buffer, raw, chunk_s)
    else:
        audio_format, chunks = AudioFormat(), paced(file_chunks(args.audio, chunk_s), args.realtime_factor)
    model = load(args, TranscribeOptions(beam_size=args.beam_size, best_of=1))
    stream = TranscriptionStream(model, options, audio_format)
    show_partials = args.partials == "always" or (args.partials == "auto" and sys.stderr.isatty())
    heard = False

    def show(events) -> None:
        nonlocal heard
        for event in events:
            if show_partials:
                sys.stderr.write("\r\033[2K")
            if event.kind == CONFIRMED:
                heard = True
                text = event.text.strip()
                if not args.no_timestamps:
                    text = f"[{format_timestamp(event.start)} --> {format_timestamp(event.end)}] {text}"
                print(text, flush=True)
            elif show_partials and event.text:
                sys.stderr.write(f"\033[2m…{event.text}\033[0m")
            if show_partials:
                sys.stderr.flush()

    for chunk in chunks:
        show(stream.feed(chunk))
    show(stream.finish())
    stats = stream.stats
    if stats.fed_samples == 0:
        raise AudioError("no audio received")
    if not heard:
        print(f"amanuensis: no speech heard in {stats.fed_samples / SAMPLE_RATE:.1f} s of audio", file=sys.stderr)
    if args.verbose:
        print(
            f"# {stats.fed_samples} samples fed: {stats.transcribed_samples} transcribed, "
            f"{stats.silent_samples} skipped as silence, {stats.buffered_samples} left; {stats.updates} updates",
            file=sys.stderr,
        )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from amanuensis.evaluation import evaluate, read_manifest

    entries = read_manifest(args.manifest)
    missing = [str(e.audio) for e in entries if not e.audio.is_file()]
    if missing:
        raise AudioError(f"{args.manifest}: {len(missing)} audio file(s) not found, first: {missing[0]}")
    options = transcribe_options(args)
    model = load(args, options)
    from tqdm import tqdm

    with tqdm(
        total=len(entries), unit="utt", file=sys.stderr, leave=False, disable=args.json and not sys.stderr.isatty()
    ) as bar:
        report = evaluate(model, entries, options, on_utterance=lambda _: bar.update())
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"model        {report.model}")
        print(f"utterances   {len(report.utterances)}")
        print(f"audio        {report.audio_seconds:.1f} s")
        print(f"{report.metric:<13}{report.wer:.2f} %")
        print(f"RTF          {report.rtf:.3f}")
        parts = report.by_language()
        if len(parts) > 1:
            for language, part in parts.items():
                print(f"  {language or 'en':<4} {part.metric} {part.wer:6.2f} %  {len(part.utterances):4d} clips")
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from amanuensis.conditions import POOLED_MAX_DELTA, gate_conditions, pooled_delta
    from amanuensis.models import WhisperCheckpoint
    from amanuensis.quantize import user_table_path
    from amanuensis.quantize.pipeline import DEFAULT_GROUP_SIZE, DEFAULT_TARGET_DELTA, QuantizeConfig, run_quantization
    from amanuensis.quantize.recipe import QuantRecipe
    from amanuensis.quantize.report import build_report, write_report

    recipe = QuantRecipe.for_target(
        args.target,
        scheme=args.scheme,
        method=args.method,
        per_channel=args.per_channel,
        activation_bits=args.activation_bits,
        activation_symmetric=args.symmetric_activations,
        smooth=args.smooth,
        split_ffn=args.split_ffn,
    )
    if not args.validation.is_file():
        raise UsageError(f"validation manifest {args.validation} not found (run from a checkout or pass --validation)")
    checkpoint = WhisperCheckpoint.load(args.model)
    languages = args.multilingual_validation if checkpoint.is_multilingual else None
    if languages is not None and not languages.is_dir():
        raise UsageError(f"multilingual validation folder {languages} not found (pass --multilingual-validation)")
    config = QuantizeConfig(
        model=args.model,
        calibration_dir=args.calibration_dir,
        conditions=tuple(gate_conditions(args.validation, args.gate_noise, args.noizeus, languages)),
        recipe=recipe,
        target_delta=DEFAULT_TARGET_DELTA if args.target_delta is None else args.target_delta,
        threads=args.threads,
        mixed_precision=not args.no_mixed_precision,
        group_size=DEFAULT_GROUP_SIZE if args.group_size is None else args.group_size,
    )
    result = run_quantization(config, log=lambda line: print(line, file=sys.stderr))
    name = checkpoint.files.name
    final = result.final
    for r in final.results:
        print(
            f"{r.name:8s} FP32 {r.fp32_wer:.2f} %, INT8 {r.int8_wer:.2f} % (Δ {r.delta:+.2f} points, "
            f"limit {r.max_delta}), QoI {r.qoi:.1%}: {'passes' if r.passed else 'FAILS'}"
        )
    languages_run = [r for r in final.results if r.language]
    if languages_run:
        pooled = pooled_delta(languages_run)
        print(f"pooled over {len(languages_run)} languages: Δ {pooled:+.2f} points (limit {POOLED_MAX_DELTA})")
    print(
        f"{final.int8_mac_share:.1%} of MACs in integer kernels ({final.a16_mac_share:.1%} with 16-bit activations), "
        f"{len(final.techniques)} nodes with a finer integer form, {len(final.float_nodes)} float"
    )
    if result.passed:  # saved before the report, so a report failure cannot lose a long calibration
        output = args.output or user_table_path(name, args.target)
        result.table.save(output)
        print(f"gate passed; range table written to {output}")
    report_dir = args.report_dir or (Path("models") / name if Path("models").is_dir() else user_table_path(name).parent)
    comparison_file = report_dir / "recipe_comparison.json"
    has_comparison = recipe.scheme == "static" and args.target == "cpu" and comparison_file.is_file()  # static recipes
    comparison = json.loads(comparison_file.read_text()) if has_comparison else []
    report = build_report(checkpoint, result, result.validation_feeds, comparison)
    for path in write_report(report, report_dir, args.target):
        print(f"wrote {path}", file=sys.stderr)
    if not result.passed:
        failed = ", ".join(r.name for r in final.results if not r.passed) or "the languages pooled"
        print(f"amanuensis: error: INT8 fails the gate on {failed}; range table not written", file=sys.stderr)
        return 1
    return 0


def run_devices(args: argparse.Namespace) -> int:
    from amanuensis.devices import list_devices, plan

    entries = list_devices()
    choices = {}
    for backend in BACKENDS:
        try:
            choices[backend] = plan(backend, "auto").describe()
        except DeviceUnavailable as exc:
            choices[backend] = f"unavailable ({exc})"
    if args.json:
        print(json.dumps({"devices": [vars(e) for e in entries], "auto": choices}, indent=1))
        return 0
    print(f"{'backend':12} {'execution provider / device':28} {'hardware':9} {'vendor':10} note")
    for e in entries:
        note = "; ".join(x for x in (e.name, e.note) if x)
        print(f"{e.backend:12} {e.ep:28} {e.hardware:9} {e.vendor:10} {note}")
    for backend, choice in choices.items():
        print(f"--device auto --backend {backend}: {choice}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from amanuensis.placement import graph_placement

    model = load(args, TranscribeOptions(beam_size=1, best_of=1), announce=False)
    runtime = model.runtime
    decoder = runtime.decoder(1)
    placements = [
        graph_placement("encoder", runtime.encoder.path, runtime.encoder.session),
        graph_placement("decoder", decoder.path, decoder.session),
    ]
    if args.json:
        print(json.dumps([p.to_dict() for p in placements], indent=1))
        return 0
    print(f"{model.name} {runtime.options.precision} on {runtime.plan.describe()}")
    for placement in placements:
        print("  " + placement.summary())
    return 0
