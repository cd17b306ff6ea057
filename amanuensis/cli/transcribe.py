"""``amanuensis transcribe``: options from arguments, outputs planned before any work, interruption kept."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from amanuensis.audio import AudioError
from amanuensis.cli.interrupts import INTERRUPTS
from amanuensis.cli.parser import PROGRESS_MIN_SECONDS, UsageError, temperature_schedule
from amanuensis.errors import OptionsError
from amanuensis.runtime import RuntimeOptions
from amanuensis.samples import open_audio
from amanuensis.transcribe import TranscribeOptions
from amanuensis.vad import VadFilter
from amanuensis.writers import OutputError, SubtitleOptions, Transcript, output_paths, write_outputs


def transcribe_options(args: argparse.Namespace) -> TranscribeOptions:
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
        temperatures=temperature_schedule(args.temperature, args.temperature_increment_on_fallback),
        compression_ratio_threshold=args.compression_ratio_threshold,
        logprob_threshold=args.logprob_threshold,
        no_speech_threshold=args.no_speech_threshold,
        condition_on_previous_text=args.condition_on_previous_text,
        initial_prompt=args.initial_prompt,
        suppress_tokens=suppress,
        without_timestamps=args.without_timestamps,
        vad_filter=VadFilter() if args.vad_filter else None,
        word_timestamps=args.word_timestamps,
        hallucination_silence_threshold=args.hallucination_silence_threshold,
    )


def subtitle_options(args: argparse.Namespace, options: TranscribeOptions) -> SubtitleOptions:
    try:
        subtitles = SubtitleOptions(
            args.max_line_width, args.max_line_count, args.max_words_per_line, args.highlight_words
        )
    except OptionsError as exc:
        raise UsageError(str(exc).replace("max_", "--max-").replace("_", "-")) from None
    if subtitles.uses_words and not options.word_timestamps:
        raise UsageError(
            "--max-line-width, --max-line-count, --max-words-per-line and --highlight-words need --word-timestamps"
        )
    return subtitles


def precision_for(args: argparse.Namespace, checkpoint):
    """The library's precision policy (amanuensis.precision) for these options, notes printed."""
    from amanuensis.precision import choose_precision
    from amanuensis.quantize import QuantizationUnavailable

    try:
        choice = choose_precision(checkpoint, args.precision, runtime_options(args, args.precision).plan())
    except QuantizationUnavailable as exc:
        raise UsageError(str(exc)) from exc
    if choice.note:
        print(f"amanuensis: note: {choice.note}", file=sys.stderr)
    return choice


def runtime_options(args: argparse.Namespace, precision: str, table: Path | None = None) -> RuntimeOptions:
    return RuntimeOptions(
        precision=precision,
        range_table=table,
        device=args.device,
        backend=args.backend,
        ep=args.ep,
        allow_fallback=not args.no_fallback,
        threads=args.threads,
    )


def load(args: argparse.Namespace, options: TranscribeOptions, announce: bool = True):
    from amanuensis.engine import WhisperModel
    from amanuensis.models import WhisperCheckpoint
    from amanuensis.quantize import load_table

    checkpoint = WhisperCheckpoint.load(args.model)
    choice = precision_for(args, checkpoint)
    if choice.precision == "int8":
        table = load_table(checkpoint, choice.table)
        build_int8_once(checkpoint, table, tuple(sorted({1, options.beam_size or 1})))
    model = WhisperModel(checkpoint, runtime_options(args, choice.precision, choice.table))
    precision = model.runtime.options.precision
    if announce:
        print(f"amanuensis: {model.name} {precision}: {model.runtime.where()}", file=sys.stderr)
    return model


def build_int8_once(checkpoint, table, batches: tuple[int, ...]) -> None:
    """First INT8 use builds the graphs from the committed ranges (seconds), with a progress bar."""
    from tqdm import tqdm

    from amanuensis.quantize import missing_int8_graphs, prepare_int8

    if not missing_int8_graphs(checkpoint, table, batches):
        return
    with tqdm(
        total=1 + len(batches), desc=f"building INT8 {checkpoint.files.name} (once)", file=sys.stderr, leave=False
    ) as bar:
        prepare_int8(checkpoint, table, batches, on_graph=bar.update)


def progress_bar(duration: float, mode: str):
    show = mode == "always" or (mode == "auto" and duration > PROGRESS_MIN_SECONDS)
    if not show:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=round(duration, 2), unit="s", unit_scale=False, file=sys.stderr, leave=False, dynamic_ncols=True)

    def update(done: int, total: int) -> None:
        with INTERRUPTS.held():
            bar.n = round(duration * done / max(total, 1), 2)
            bar.refresh()

    return bar, update


def plan_outputs(inputs: list[Path], output_dir: Path, output_format: str | None) -> dict[Path, dict[str, Path]]:
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
    resolved, identities = {p.resolve() for p in inputs}, {identity(p) for p in inputs} - {None}
    for path, outputs in planned.items():
        for out in outputs.values():
            if out.resolve() in resolved or identity(out) in identities:
                raise UsageError(f"{path}: output {out} would overwrite an input file; choose --output-dir")
    return planned


def identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file: the same for every hard link to it."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def run_transcribe(args: argparse.Namespace) -> int:
    options = transcribe_options(args)
    subtitles = subtitle_options(args, options)
    output_format = args.output_format or ("all" if args.output_dir else None)
    inputs = [Path(a) for a in args.audio]
    planned = plan_outputs(inputs, args.output_dir or Path("."), output_format)
    model = load(args, options)
    failures = 0
    for path in inputs:
        try:
            audio = open_audio(path)  # samples decoded to disk: memory does not grow with the file
        except AudioError as exc:
            print(f"amanuensis: error: {exc}", file=sys.stderr)
            failures += 1
            continue
        if audio.replaced_samples:
            print(
                f"amanuensis: {path}: {audio.replaced_samples} NaN or infinite samples set to silence", file=sys.stderr
            )
        paths = planned[path]
        bar, update = progress_bar(audio.duration, args.progress)
        started = time.perf_counter()
        segments, info = model.transcribe(audio.samples, options, update)
        collected: list = []
        try:
            for segment in segments:
                collected.append(segment)
                if args.verbose:
                    from amanuensis.writers import format_timestamp

                    stamps = f"[{format_timestamp(segment.start)} --> {format_timestamp(segment.end)}]"
                    with INTERRUPTS.held():
                        (bar.write if bar else print)(f"{stamps} {segment.text.strip()}")
                        sys.stdout.flush()  # each segment as it is decoded, also into a pipe
        except KeyboardInterrupt:
            if bar:
                bar.close()
            partial = Transcript("".join(s.text for s in collected), info.language, info.duration, collected)
            keep_interrupted(path, partial, paths, subtitles)
            raise
        if bar:
            bar.close()
        transcript = Transcript("".join(s.text for s in collected), info.language, info.duration, collected)
        if len(inputs) > 1:
            print(f"==> {path} <==")
        if not args.verbose:
            print(transcript.text.strip())
        try:
            write_outputs(transcript, paths, subtitles)
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


def keep_interrupted(
    path: Path, transcript: Transcript, paths: dict[str, Path], subtitles: SubtitleOptions | None = None
) -> None:
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
    write_outputs(transcript, partial, subtitles)
    where = next(iter(partial.values())).with_suffix(".*")
    print(f"amanuensis: interrupted: {path} up to {reached:.1f} s written to {where} (incomplete)", file=sys.stderr)
