"""Command-line flags made from option dataclasses, so a flag's name, default and help are
written once, beside the field (``metadata={"flag": …, "help": …}``), for the CLI and the tools."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, TypeVar

Options = TypeVar("Options")


def _flagged(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "flag" in f.metadata]


def _dest(field: dataclasses.Field) -> str:
    return field.metadata["flag"].lstrip("-").replace("-", "_")


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One flag per flagged field of ``cls``, typed and defaulted as the field is."""
    defaults = cls()
    for field in _flagged(cls):
        default = getattr(defaults, field.name)
        parser.add_argument(
            field.metadata["flag"],
            dest=_dest(field),
            type=type(default),
            default=default,
            help=f"{field.metadata['help']} (default {default})",
        )


def from_flags(cls: type[Options], args: argparse.Namespace, **fields: Any) -> Options:
    """``cls`` with its flagged fields from ``args`` (and ``fields`` for the rest)."""
    return cls(**{f.name: getattr(args, _dest(f)) for f in _flagged(cls)}, **fields)
