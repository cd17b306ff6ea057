"""``amanuensis`` command line: transcribe files, stream, evaluate WER, quantize, inspect devices."""

from __future__ import annotations

import argparse
import sys

from amanuensis.cli.commands import run_devices, run_evaluate, run_inspect, run_quantize, run_stream
from amanuensis.cli.interrupts import INTERRUPTS, Terminated
from amanuensis.cli.parser import UsageError, build_parser
from amanuensis.cli.transcribe import run_transcribe
from amanuensis.errors import OptionsError, UserError

__all__ = ["UsageError", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with INTERRUPTS.installed():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command, with errors turned into one line and an exit status."""
    try:
        if args.command == "transcribe":
            return run_transcribe(args)
        if args.command == "quantize":
            return run_quantize(args)
        if args.command == "stream":
            return run_stream(args)
        if args.command == "devices":
            return run_devices(args)
        if args.command == "inspect":
            return run_inspect(args)
        return run_evaluate(args)
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
        return 143 if isinstance(exc, Terminated) else 130
