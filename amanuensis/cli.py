"""``amanuensis`` command line: transcribe files and evaluate WER on a manifest."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from amanuensis.audio import SAMPLE_RATE, AudioError, load_audio
from amanuensis.conditions import DEFAULT_GATE_NOISE, DEFAULT_NOIZEUS, DEFAULT_VALIDATION
from amanuensis.devices import BACKENDS, DEVICES, DeviceUnavailable
from amanuensis.errors import OptionsError, UserError
from amanuensis.models import DEFAULT_MODEL, PACKAGED_MODELS
from amanuensis.precision import PRECISIONS
from amanuensis.quantize.targets import TARGET_NAMES
from amanuensis.runtime import RuntimeOptions
from amanuensis.transcribe import TranscribeOptions
from amanuensis.writers import OUTPUT_FORMATS, OutputError, Transcript, output_paths, write_outputs

PROGRESS_MIN_SECONDS = 30.0  # show a progress bar for audio longer than one window


class UsageError(UserError):
    """A bad combination of options; exit status 2."""


def _temperatures(start: float, increment: float | None) -> tuple[float, ...]:
    if increment is None or increment <= 0:
        return (start,)
    return tuple(np.round(np.arange(start, 1.0 + 1e-6, increment), 4).tolist())


def _optional_float(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"{' | '.join(PACKAGED_MODELS)} | a CTranslate2 model directory (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (default): INT8 where the model has a calibration for the device, else FP32; or int8 / fp32",
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where to run the graphs (auto: an NPU if one is present, else the CPU); see 'amanuensis devices'",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime", help="inference library")
    parser.add_argument(
        "--ep", default=None, help="onnxruntime only: run on this execution provider, e.g. QNNExecutionProvider"
    )
    parser.add_argument(
        "--no-fallback",
        action="store_true",
        help="fail instead of running on the CPU when the device is missing or cannot take every node",
    )
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per session (0 = one per core)")


def _add_stream_parser(commands) -> None:
    from amanuensis.streaming import StreamOptions
    from amanuensis.streaming.sources import DEFAULT_CHUNK_S

    defaults = StreamOptions()
    interval, agreement, unsure = defaults.update_interval_s, defaults.agreement, defaults.unsure_probability
    hold, span = defaults.unsure_hold_s, defaults.agreement_span_s
    st = commands.add_parser(
        "stream", help="live transcription of a file played in real time, or of PCM/wav piped to stdin ('-')"
    )
    st.add_argument("audio", help="an audio file, or - to read wav or raw PCM from stdin")
    _add_model_arguments(st)
    st.add_argument("--language", default=None, help="language code; detected at the first words when omitted")
    st.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    st.add_argument("--beam-size", type=int, default=1, help="beams per update (default 1: greedy)")
    st.add_argument(
        "--update-interval",
        type=float,
        default=interval,
        help=f"seconds of new audio between updates (default {interval})",
    )
    st.add_argument(
        "--agreement",
        type=int,
        default=agreement,
        help=f"consecutive updates that must agree on a word before it is confirmed (default {agreement}; "
        "more: later, closer to an offline transcription; with the default interval and span, three agree already)",
    )
    st.add_argument(
        "--agreement-span",
        type=float,
        default=span,
        help=f"seconds of audio over which every update must also agree on a word (default {span}; "
        "0: only --agreement consecutive updates)",
    )
    st.add_argument(
        "--unsure-probability",
        type=float,
        default=unsure,
        help=f"a word the model gives less probability than this must be read the same for --unsure-hold "
        f"seconds (default {unsure}; 0: every word needs only --agreement updates)",
    )
    st.add_argument(
        "--unsure-hold",
        type=float,
        default=hold,
        help=f"seconds of audio over which every update must read an unsure word the same (default {hold})",
    )
    st.add_argument(
        "--realtime-factor",
        type=float,
        default=1.0,
        help="play a file this many times faster than real time (0: as fast as possible; default 1)",
    )
    st.add_argument(
        "--chunk-ms", type=float, default=DEFAULT_CHUNK_S * 1000, help="size of the chunks fed to the stream"
    )
    st.add_argument(
        "--input-format",
        choices=["s16le", "f32le"],
        default="s16le",
        help="raw PCM on stdin (wav is recognised by its header)",
    )
    st.add_argument("--sample-rate", type=int, default=16000, help="raw PCM on stdin: Hz (default 16000)")
    st.add_argument("--channels", type=int, default=1, help="raw PCM on stdin: interleaved channels (default 1)")
    st.add_argument(
        "--partials",
        choices=["auto", "always", "never"],
        default="auto",
        help="show the unconfirmed tail on stderr (auto: when stderr is a terminal)",
    )
    st.add_argument("--no-timestamps", action="store_true", help="print confirmed text without times")
    st.add_argument("--verbose", action="store_true", help="say where every sample went at the end")


def _add_decoding_arguments(parser: argparse.ArgumentParser, beam_default: int) -> None:
    parser.add_argument(
        "--language", default=None, help="language code (e.g. en, de); detected when omitted on multilingual models"
    )
    parser.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    parser.add_argument(
        "--beam-size",
        type=int,
        default=beam_default,
        help=f"beams at temperature 0; 1 = greedy (default {beam_default})",
    )
    parser.add_argument(
        "--best-of", type=int, default=5, help="samples per window when falling back to temperature > 0"
    )
    parser.add_argument("--patience", type=float, default=None)
    parser.add_argument("--length-penalty", type=float, default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--temperature-increment-on-fallback", type=_optional_float, default=0.2)
    parser.add_argument("--compression-ratio-threshold", type=_optional_float, default=2.4)
    parser.add_argument("--logprob-threshold", type=_optional_float, default=-1.0)
    parser.add_argument("--no-speech-threshold", type=_optional_float, default=0.6)
    parser.add_argument("--condition-on-previous-text", type=_bool, default=True)
    parser.add_argument("--initial-prompt", default=None, help="text to prime the first window (names, spelling)")
    parser.add_argument("--suppress-tokens", default="-1", help="comma-separated token ids; -1 = non-speech symbols")
    parser.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amanuensis", description="Offline Whisper transcription on static ONNX graphs."
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of every error, not just of internal ones"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    tr = commands.add_parser("transcribe", help="transcribe audio files")
    tr.add_argument("audio", nargs="+", help="audio files (wav, flac, ogg, mp3)")
    _add_model_arguments(tr)
    _add_decoding_arguments(tr, beam_default=5)
    tr.add_argument(
        "--output-format",
        "-f",
        choices=OUTPUT_FORMATS,
        default=None,
        help="write files in this format (default: none, or all with --output-dir)",
    )
    tr.add_argument(
        "--output-dir", "-o", type=Path, default=None, help="folder for output files (default: current folder)"
    )
    tr.add_argument(
        "--progress",
        choices=["auto", "always", "never"],
        default="auto",
        help=f"progress bar (auto: audio over {PROGRESS_MIN_SECONDS:.0f} s)",
    )
    tr.add_argument("--verbose", action="store_true", help="print timestamped segments as they are decoded")

    ev = commands.add_parser("evaluate", help="WER and real-time factor over a manifest")
    ev.add_argument("manifest", type=Path, help="TSV lines 'audio-path<TAB>reference', paths relative to the manifest")
    _add_model_arguments(ev)
    _add_decoding_arguments(ev, beam_default=5)
    ev.add_argument("--json", action="store_true", help="print a JSON report instead of a table")

    de = commands.add_parser("devices", help="execution providers and devices, and what --device auto picks")
    de.add_argument("--json", action="store_true", help="print JSON instead of a table")

    ins = commands.add_parser("inspect", help="where each graph's nodes run on a device, and the INT8 share it took")
    _add_model_arguments(ins)
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")

    _add_stream_parser(commands)

    qu = commands.add_parser("quantize", help="calibrate and build INT8 graphs, gated on WER, with a report")
    qu.add_argument("--model", default=DEFAULT_MODEL, help=f"{' | '.join(PACKAGED_MODELS)} | a CTranslate2 directory")
    qu.add_argument(
        "--method",
        choices=["minmax", "entropy", "percentile", "minmse"],
        default=None,
        help="how activation ranges are calibrated (default minmax; for --target vitisai, minmse: the range "
        "with the least quantization error)",
    )
    qu.add_argument(
        "--scheme",
        choices=["static", "dynamic"],
        default=None,
        help="static: calibrated QDQ (what NPUs compile); dynamic: integer kernels with activation scales measured "
        "at run time (CPU only). Default: dynamic for --target cpu, static otherwise",
    )
    qu.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one weight scale per output channel (default: on for the dynamic scheme, off for static)",
    )
    qu.add_argument(
        "--target",
        choices=TARGET_NAMES,
        default="cpu",
        help="QDQ flavour for the device that will run it (qnn: whole graph, 16-bit activations; "
        "vitisai: power-of-two scales)",
    )
    qu.add_argument(
        "--activation-bits", type=int, choices=[8, 16], default=None, help="activation width (default: the target's)"
    )
    qu.add_argument("--symmetric-activations", action="store_true", help="signed activations, zero point 0")
    qu.add_argument(
        "--calibration-dir",
        type=Path,
        default=Path("calibration_audio"),
        help="real speech to calibrate on (default: calibration_audio/)",
    )
    qu.add_argument(
        "--validation",
        type=Path,
        default=DEFAULT_VALIDATION,
        help="manifest of the gate's validation set (must not share audio with calibration); the gate also judges "
        "it mixed with tests/data/noise and, where present, ../shared/data/noisy_noizeus",
    )
    qu.add_argument(
        "--gate-noise", type=Path, default=DEFAULT_GATE_NOISE, help="noise recordings for the gate's noisy condition"
    )
    qu.add_argument("--noizeus", type=Path, default=DEFAULT_NOIZEUS, help="NOIZEUS folder (skipped when absent)")
    qu.add_argument(
        "--target-delta",
        type=float,
        default=None,
        help="keep nodes float until INT8 loses at most this many WER points (default 0.5)",
    )
    qu.add_argument("--no-mixed-precision", action="store_true", help="report the all-INT8 result as it is")
    qu.add_argument(
        "--output",
        type=Path,
        default=None,
        help="range table to write (default: the user cache, which transcribe prefers)",
    )
    qu.add_argument("--report-dir", type=Path, default=None, help="default: models/<model>/ in a checkout")
    qu.add_argument("--threads", type=int, default=0, help="CPU threads per session (0 = one per core)")
    return parser


def _transcribe_options(args: argparse.Namespace) -> TranscribeOptions:
    try:
        suppress = tuple(int(t) for t in args.suppress_tokens.split(",") if t.strip())
    except ValueError:
        raise UsageError(f"--suppress-tokens must be comma-separated integers, got '{args.suppress_tokens}'") from None
    if args.beam_size < 1 or args.best_of < 1:
        raise UsageError("--beam-size and --best-of must be at least 1")
    return TranscribeOptions(
        language=args.language,
        task=args.task,
        beam_size=args.beam_size,
        best_of=args.best_of,
        patience=args.patience,
        length_penalty=args.length_penalty,
        temperatures=_temperatures(args.temperature, args.temperature_increment_on_fallback),
        compression_ratio_threshold=args.compression_ratio_threshold,
        logprob_threshold=args.logprob_threshold,
        no_speech_threshold=args.no_speech_threshold,
        condition_on_previous_text=args.condition_on_previous_text,
        initial_prompt=args.initial_prompt,
        suppress_tokens=suppress,
        without_timestamps=args.without_timestamps,
    )


def _precision(args: argparse.Namespace, checkpoint):
    """The library's precision policy (amanuensis.precision) for these options, notes printed."""
    from amanuensis.precision import choose_precision
    from amanuensis.quantize import QuantizationUnavailable

    try:
        choice = choose_precision(checkpoint, args.precision, _runtime_options(args, args.precision).plan())
    except QuantizationUnavailable as exc:
        raise UsageError(str(exc)) from exc
    if choice.note:
        print(f"amanuensis: note: {choice.note}", file=sys.stderr)
    return choice


def _runtime_options(args: argparse.Namespace, precision: str, table: Path | None = None) -> RuntimeOptions:
    return RuntimeOptions(
        precision=precision,
        range_table=table,
        device=args.device,
        backend=args.backend,
        ep=args.ep,
        allow_fallback=not args.no_fallback,
        threads=args.threads,
    )


def _load(args: argparse.Namespace, options: TranscribeOptions, announce: bool = True):
    from amanuensis.engine import WhisperModel
    from amanuensis.models import WhisperCheckpoint
    from amanuensis.quantize import load_table

    checkpoint = WhisperCheckpoint.load(args.model)
    choice = _precision(args, checkpoint)
    if choice.precision == "int8":
        table = load_table(checkpoint, choice.table)
        _build_int8_once(checkpoint, table, tuple(sorted({1, options.beam_size or 1})))
    model = WhisperModel(checkpoint, _runtime_options(args, choice.precision, choice.table))
    precision = model.runtime.options.precision
    if announce:
        print(f"amanuensis: {model.name} {precision}: {model.runtime.where()}", file=sys.stderr)
    return model


def _build_int8_once(checkpoint, table, batches: tuple[int, ...]) -> None:
    """First INT8 use builds the graphs from the committed ranges (seconds), with a progress bar."""
    from tqdm import tqdm

    from amanuensis.quantize import missing_int8_graphs, prepare_int8

    if not missing_int8_graphs(checkpoint, table, batches):
        return
    with tqdm(
        total=1 + len(batches), desc=f"building INT8 {checkpoint.files.name} (once)", file=sys.stderr, leave=False
    ) as bar:
        prepare_int8(checkpoint, table, batches, on_graph=bar.update)


def _progress_bar(duration: float, mode: str):
    show = mode == "always" or (mode == "auto" and duration > PROGRESS_MIN_SECONDS)
    if not show:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=round(duration, 2), unit="s", unit_scale=False, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        bar.n = round(duration * done / max(total, 1), 2)
        bar.refresh()

    return bar, update


def _plan_outputs(inputs: list[Path], output_dir: Path, output_format: str | None) -> dict[Path, dict[str, Path]]:
    """Output files per input, checked before any work: the folder is usable, no two inputs would
    write the same file, and no output is an input (by name or as a hard link to it)."""
    if not output_format:
        return {path: {} for path in inputs}
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output-dir {output_dir} is a file, not a folder")
    if output_dir.is_dir() and not os.access(output_dir, os.W_OK | os.X_OK):
        raise UsageError(f"--output-dir {output_dir} is not writable")
    planned = {path: output_paths(path.stem, output_dir, output_format) for path in inputs}
    writers: dict[Path, Path] = {}
    for path, outputs in planned.items():
        for out in outputs.values():
            other = writers.setdefault(out.resolve(), path)
            if other != path:
                raise UsageError(f"{other} and {path} would both write {out}; give them separate --output-dir runs")
    resolved, identities = {p.resolve() for p in inputs}, {_identity(p) for p in inputs} - {None}
    for path, outputs in planned.items():
        for out in outputs.values():
            if out.resolve() in resolved or _identity(out) in identities:
                raise UsageError(f"{path}: output {out} would overwrite an input file; choose --output-dir")
    return planned


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: the same for every hard link to it."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _run_transcribe(args: argparse.Namespace) -> int:
    options = _transcribe_options(args)
    output_format = args.output_format or ("all" if args.output_dir else None)
    inputs = [Path(a) for a in args.audio]
    planned = _plan_outputs(inputs, args.output_dir or Path("."), output_format)
    model = _load(args, options)
    failures = 0
    for path in inputs:
        try:
            audio = load_audio(path)
        except AudioError as exc:
            print(f"amanuensis: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        if audio.replaced_samples:
            print(
                f"amanuensis: {path}: {audio.replaced_samples} NaN or infinite samples set to silence", file=sys.stderr
            )
        paths = planned[path]
        bar, update = _progress_bar(audio.duration, args.progress)
        started = time.perf_counter()
        segments, info = model.transcribe(audio.samples, options, update)
        collected: list = []
        try:
            for segment in segments:
                collected.append(segment)
                if args.verbose:
                    from amanuensis.writers import format_timestamp

                    stamps = f"[{format_timestamp(segment.start)} --> {format_timestamp(segment.end)}]"
                    (bar.write if bar else print)(f"{stamps} {segment.text.strip()}")
                    sys.stdout.flush()  # each segment as it is decoded, also into a pipe
        except KeyboardInterrupt:
            if bar:
                bar.close()
            _keep_interrupted(
                path, Transcript("".join(s.text for s in collected), info.language, info.duration, collected), paths
            )
            raise
        if bar:
            bar.close()
        transcript = Transcript("".join(s.text for s in collected), info.language, info.duration, collected)
        if len(inputs) > 1:
            print(f"==> {path} <==")
        if not args.verbose:
            print(transcript.text.strip())
        try:
            write_outputs(transcript, paths)
        except OutputError as exc:  # the next file may still be written (another disk, freed space)
            print(f"amanuensis: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        if args.verbose:
            elapsed = time.perf_counter() - started
            print(
                f"# {path}: {info.duration:.1f} s of audio in {elapsed:.1f} s (language {info.language})",
                file=sys.stderr,
            )
    return 1 if failures else 0


def _keep_interrupted(path: Path, transcript: Transcript, paths: dict[str, Path]) -> None:
    """What was transcribed before an interrupt, kept and labelled incomplete (never under the
    names a finished run writes), or a plain statement that nothing was."""
    if not transcript.segments:
        print(f"amanuensis: interrupted: nothing of {path} was transcribed; no file written", file=sys.stderr)
        return
    reached = transcript.segments[-1].end
    if not paths:
        print(transcript.text.strip())
        print(f"amanuensis: interrupted: the text above is {path} up to {reached:.1f} s only", file=sys.stderr)
        return
    partial = {fmt: out.with_name(f"{out.stem}.partial{out.suffix}") for fmt, out in paths.items()}
    write_outputs(transcript, partial)
    where = next(iter(partial.values())).with_suffix(".*")
    print(f"amanuensis: interrupted: {path} up to {reached:.1f} s written to {where} (incomplete)", file=sys.stderr)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (what was done is kept) but with its own exit status."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated()


def _run_stream(args: argparse.Namespace) -> int:
    from amanuensis.streaming import CONFIRMED, AudioFormat, StreamOptions, TranscriptionStream
    from amanuensis.streaming.sources import file_chunks, paced, pipe_chunks
    from amanuensis.writers import format_timestamp

    if args.beam_size < 1:
        raise UsageError("--beam-size must be at least 1")
    if args.chunk_ms <= 0 or args.realtime_factor < 0:
        raise UsageError("--chunk-ms must be positive and --realtime-factor not negative")
    try:
        options = StreamOptions(
            language=args.language,
            task=args.task,
            beam_size=args.beam_size,
            update_interval_s=args.update_interval,
            agreement=args.agreement,
            unsure_probability=args.unsure_probability,
            unsure_hold_s=args.unsure_hold,
            agreement_span_s=args.agreement_span,
        )
        raw = AudioFormat(args.sample_rate, args.channels, "int16" if args.input_format == "s16le" else "float32")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    chunk_s = args.chunk_ms / 1000
    if args.audio == "-":
        audio_format, chunks = pipe_chunks(sys.stdin.buffer, raw, chunk_s)
    else:
        audio_format, chunks = AudioFormat(), paced(file_chunks(args.audio, chunk_s), args.realtime_factor)
    model = _load(args, TranscribeOptions(beam_size=args.beam_size, best_of=1))
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


def _run_evaluate(args: argparse.Namespace) -> int:
    from amanuensis.evaluation import evaluate, read_manifest

    entries = read_manifest(args.manifest)
    missing = [str(e.audio) for e in entries if not e.audio.is_file()]
    if missing:
        raise AudioError(f"{args.manifest}: {len(missing)} audio file(s) not found, first: {missing[0]}")
    options = _transcribe_options(args)
    model = _load(args, options)
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
        print(f"WER          {report.wer:.2f} %")
        print(f"RTF          {report.rtf:.3f}")
    return 0


def _run_quantize(args: argparse.Namespace) -> int:
    from amanuensis.conditions import gate_conditions
    from amanuensis.models import WhisperCheckpoint
    from amanuensis.quantize import user_table_path
    from amanuensis.quantize.pipeline import DEFAULT_TARGET_DELTA, QuantizeConfig, run_quantization
    from amanuensis.quantize.recipe import QuantRecipe
    from amanuensis.quantize.report import build_report, write_report
    from amanuensis.quantize.targets import default_per_channel, get_target

    scheme = args.scheme or ("dynamic" if args.target == "cpu" else "static")
    recipe = QuantRecipe(
        method=args.method or get_target(args.target).default_method,
        per_channel=default_per_channel(args.target, scheme) if args.per_channel is None else args.per_channel,
        scheme=scheme,
        activation_bits=args.activation_bits or get_target(args.target).default_activation_bits,
        activation_symmetric=args.symmetric_activations,
        target=args.target,
    )
    if not args.validation.is_file():
        raise UsageError(f"validation manifest {args.validation} not found (run from a checkout or pass --validation)")
    config = QuantizeConfig(
        model=args.model,
        calibration_dir=args.calibration_dir,
        conditions=tuple(gate_conditions(args.validation, args.gate_noise, args.noizeus)),
        recipe=recipe,
        target_delta=DEFAULT_TARGET_DELTA if args.target_delta is None else args.target_delta,
        threads=args.threads,
        mixed_precision=not args.no_mixed_precision,
    )
    result = run_quantization(config, log=lambda line: print(line, file=sys.stderr))
    checkpoint = WhisperCheckpoint.load(args.model)
    name = checkpoint.files.name
    final = result.final
    for r in final.results:
        print(
            f"{r.name:8s} FP32 WER {r.fp32_wer:.2f} %, INT8 WER {r.int8_wer:.2f} % (Δ {r.delta:+.2f} points, "
            f"limit {r.max_delta}), QoI {r.qoi:.1%}: {'passes' if r.passed else 'FAILS'}"
        )
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
    has_comparison = scheme == "static" and args.target == "cpu" and comparison_file.is_file()  # static recipes
    comparison = json.loads(comparison_file.read_text()) if has_comparison else []
    report = build_report(checkpoint, result, result.validation_feeds, comparison)
    for path in write_report(report, report_dir, args.target):
        print(f"wrote {path}", file=sys.stderr)
    if not result.passed:
        failed = ", ".join(r.name for r in final.results if not r.passed)
        print(f"amanuensis: error: INT8 fails the gate on {failed}; range table not written", file=sys.stderr)
        return 1
    return 0


def _run_devices(args: argparse.Namespace) -> int:
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


def _run_inspect(args: argparse.Namespace) -> int:
    from amanuensis.placement import graph_placement

    model = _load(args, TranscribeOptions(beam_size=1, best_of=1), announce=False)
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if on_main_thread else None
    try:
        return _run(args)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    """The command, with errors turned into one line and an exit status."""
    try:
        if args.command == "transcribe":
            return _run_transcribe(args)
        if args.command == "quantize":
            return _run_quantize(args)
        if args.command == "stream":
            return _run_stream(args)
        if args.command == "devices":
            return _run_devices(args)
        if args.command == "inspect":
            return _run_inspect(args)
        return _run_evaluate(args)
    except (UsageError, OptionsError) as exc:  # options the command cannot use: as argparse does
        if args.debug:
            raise
        print(f"amanuensis: error: {exc}", file=sys.stderr)
        return 2
    except UserError as exc:  # input, files, models, devices: one line; anything else is a bug
        if args.debug:
            raise
        print(f"amanuensis: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print("amanuensis: interrupted", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
