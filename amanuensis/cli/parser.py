"""The ``amanuensis`` command line's arguments: one parser, subcommands, shared option groups."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from amanuensis.conditions import DEFAULT_GATE_NOISE, DEFAULT_MULTILINGUAL, DEFAULT_NOIZEUS, DEFAULT_VALIDATION
from amanuensis.devices import BACKENDS, DEVICES
from amanuensis.errors import UserError
from amanuensis.models import DEFAULT_MODEL, PACKAGED_MODELS
from amanuensis.precision import PRECISIONS
from amanuensis.quantize.targets import TARGET_NAMES
from amanuensis.transcribe import TranscribeOptions
from amanuensis.writers import OUTPUT_FORMATS

PROGRESS_MIN_SECONDS = 30.0  # show a progress bar for audio longer than one window


class UsageError(UserError):
    """A bad combination of options; exit status 2."""


def temperature_schedule(start: float, increment: float | None) -> tuple[float, ...]:
    if increment is None or increment <= 0:
        return (start,)
    return tuple(np.round(np.arange(start, 1.0 + 1e-6, increment), 4).tolist())


def optional_float(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def true_or_false(value: str) -> bool:
    """whisper's CLI spelling of booleans (``--condition-on-previous-text False``)."""
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
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


def add_stream_parser(commands) -> None:
    from amanuensis.cli.flags import add_flags
    from amanuensis.streaming import AgreementPolicy
    from amanuensis.streaming.sources import DEFAULT_CHUNK_S

    st = commands.add_parser(
        "stream", help="live transcription of a file played in real time, or of PCM/wav piped to stdin ('-')"
    )
    st.add_argument("audio", help="an audio file, or - to read wav or raw PCM from stdin")
    add_model_arguments(st)
    st.add_argument("--language", default=None, help="language code; detected at the first words when omitted")
    st.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    st.add_argument("--beam-size", type=int, default=1, help="beams per update (default 1: greedy)")
    st.add_argument(
        "--no-word-timestamps",
        dest="word_timestamps",
        action="store_false",
        help="estimate word times from their segment's span instead of measuring them (saves an alignment run per "
        "update)",
    )
    add_flags(st, AgreementPolicy)  # --update-interval, --agreement, … (streaming.options)
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


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    """The decoding flags of transcribe and evaluate; defaults are TranscribeOptions' own."""
    defaults = TranscribeOptions()
    parser.add_argument(
        "--language", default=None, help="language code (e.g. en, de); detected when omitted on multilingual models"
    )
    parser.add_argument("--task", choices=["transcribe", "translate"], default=defaults.task)
    parser.add_argument(
        "--beam-size",
        type=int,
        default=defaults.beam_size,
        help=f"beams at temperature 0; 1 = greedy (default {defaults.beam_size})",
    )
    parser.add_argument(
        "--best-of",
        type=int,
        default=defaults.best_of,
        help=f"samples per window when falling back to temperature > 0 (default {defaults.best_of})",
    )
    parser.add_argument("--patience", type=float, default=defaults.patience)
    parser.add_argument("--length-penalty", type=float, default=defaults.length_penalty)
    parser.add_argument("--temperature", type=float, default=defaults.temperatures[0])
    increment = defaults.temperatures[1] - defaults.temperatures[0]
    parser.add_argument("--temperature-increment-on-fallback", type=optional_float, default=round(increment, 6))
    for flag, value in (
        ("--compression-ratio-threshold", defaults.compression_ratio_threshold),
        ("--logprob-threshold", defaults.logprob_threshold),
        ("--no-speech-threshold", defaults.no_speech_threshold),
    ):
        parser.add_argument(flag, type=optional_float, default=value, help=f"None = off (default {value})")
    parser.add_argument("--condition-on-previous-text", type=true_or_false, default=defaults.condition_on_previous_text)
    parser.add_argument("--initial-prompt", default=None, help="text to prime the first window (names, spelling)")
    parser.add_argument("--suppress-tokens", default="-1", help="comma-separated token ids; -1 = non-speech symbols")
    parser.add_argument("--without-timestamps", action="store_true", help="decode without timestamp tokens")
    parser.add_argument(
        "--word-timestamps",
        action="store_true",
        help="each segment's words with their own times (alignment heads + DTW, as whisper); in json, srt and vtt",
    )
    parser.add_argument(
        "--hallucination-silence-threshold",
        type=optional_float,
        default=defaults.hallucination_silence_threshold,
        help="with --word-timestamps: drop a doubtful segment with more than this many seconds of silence around "
        "it, and skip the silence (default None = off)",
    )
    parser.add_argument(
        "--vad-filter",
        action="store_true",
        help="transcribe only the speech Silero VAD finds (faster-whisper's vad_filter): right times for speech "
        "after long noise or silence, no text invented for noise",
    )


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
    add_model_arguments(tr)
    add_decoding_arguments(tr)
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
    subtitles = tr.add_argument_group("subtitles (srt, vtt; need --word-timestamps)")
    subtitles.add_argument("--max-line-width", type=int, default=None, help="characters per line before a break")
    subtitles.add_argument(
        "--max-line-count", type=int, default=None, help="lines per subtitle (with --max-line-width)"
    )
    subtitles.add_argument(
        "--max-words-per-line", type=int, default=None, help="words per line (no effect with --max-line-width)"
    )
    subtitles.add_argument("--highlight-words", action="store_true", help="underline each word as it is spoken")

    ev = commands.add_parser("evaluate", help="WER and real-time factor over a manifest")
    ev.add_argument("manifest", type=Path, help="TSV lines 'audio-path<TAB>reference', paths relative to the manifest")
    add_model_arguments(ev)
    add_decoding_arguments(ev)
    ev.add_argument("--json", action="store_true", help="print a JSON report instead of a table")

    de = commands.add_parser("devices", help="execution providers and devices, and what --device auto picks")
    de.add_argument("--json", action="store_true", help="print JSON instead of a table")

    ins = commands.add_parser("inspect", help="where each graph's nodes run on a device, and the INT8 share it took")
    add_model_arguments(ins)
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")

    add_stream_parser(commands)

    qu = commands.add_parser("quantize", help="calibrate and build INT8 graphs, gated on WER, with a report")
    qu.add_argument("--model", default=DEFAULT_MODEL, help=f"{' | '.join(PACKAGED_MODELS)} | a CTranslate2 directory")
    qu.add_argument(
        "--method",
        choices=["minmax", "entropy", "percentile", "minmse"],
        default=None,
        help="how activation ranges are calibrated (default minmax; for --target vitisai at 8 bits, minmse: "
        "the power-of-two range with the least quantization error)",
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
        help="one weight scale per output channel (default: on for cpu, qnn and openvino, off for vitisai)",
    )
    qu.add_argument(
        "--smooth",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="SmoothQuant scaling folded into each LayerNorm before its MatMuls, α chosen per LayerNorm on the "
        "calibration audio (static scheme; default: the target's)",
    )
    qu.add_argument(
        "--split-ffn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="split each FFN's second MatMul by hidden-channel range so loud channels get their own activation "
        "scale, groups chosen on the calibration audio (static scheme; default: the target's)",
    )
    qu.add_argument(
        "--target",
        choices=TARGET_NAMES,
        default="cpu",
        help="QDQ flavour for the device that will run it (qnn: whole graph, 16-bit activations; "
        "vitisai: power-of-two scales at 8 bits, A16W8's float scales at 16)",
    )
    qu.add_argument(
        "--activation-bits", type=int, choices=[8, 16], default=None, help="activation width (default: the target's)"
    )
    qu.add_argument(
        "--symmetric-activations",
        action=argparse.BooleanOptionalAction,
        help="signed activations, zero point 0 (default: the target's; on for vitisai's 16-bit A16W8)",
    )
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
        "--multilingual-validation",
        type=Path,
        default=DEFAULT_MULTILINGUAL,
        help="folder of <language>/refs.tsv sets a multilingual model is also gated on, one condition per language",
    )
    qu.add_argument(
        "--target-delta",
        type=float,
        default=None,
        help="keep nodes float until INT8 loses at most this many WER points (default 0.5)",
    )
    qu.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="nodes moved to a finer form (or float) per mixed-precision step, least calibration SQNR first "
        "(default 2; larger needs fewer gate runs on big models)",
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
