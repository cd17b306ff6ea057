"""Output writers, one per format, in the shapes whisper's CLI produces."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TextIO

from amanuensis.errors import UserError
from amanuensis.transcribe import Segment


@dataclass(frozen=True)
class Transcript:
    """A finished transcription of one file."""

    text: str  # all segment texts joined
    language: str
    duration: float  # seconds of audio
    segments: list[Segment]


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    milliseconds = round(seconds * 1000.0)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


class ResultWriter:
    extension: str = ""

    def write(self, transcript: Transcript, out: TextIO) -> None:
        raise NotImplementedError


class WriteTXT(ResultWriter):
    extension = "txt"

    def write(self, transcript: Transcript, out: TextIO) -> None:
        for segment in transcript.segments:
            print(segment.text.strip(), file=out)


class WriteVTT(ResultWriter):
    extension = "vtt"

    def write(self, transcript: Transcript, out: TextIO) -> None:
        print("WEBVTT\n", file=out)
        for segment in transcript.segments:
            start, end = format_timestamp(segment.start), format_timestamp(segment.end)
            print(f"{start} --> {end}\n{segment.text.strip()}\n", file=out)


class WriteSRT(ResultWriter):
    extension = "srt"

    def write(self, transcript: Transcript, out: TextIO) -> None:
        for index, segment in enumerate(transcript.segments, start=1):
            start = format_timestamp(segment.start, True, ",")
            end = format_timestamp(segment.end, True, ",")
            print(f"{index}\n{start} --> {end}\n{segment.text.strip()}\n", file=out)


class WriteTSV(ResultWriter):
    """Start and end in integer milliseconds, tab separated, as whisper writes them."""

    extension = "tsv"

    def write(self, transcript: Transcript, out: TextIO) -> None:
        print("start\tend\ttext", file=out)
        for segment in transcript.segments:
            text = segment.text.strip().replace("\t", " ")
            print(f"{round(1000 * segment.start)}\t{round(1000 * segment.end)}\t{text}", file=out)


class WriteJSON(ResultWriter):
    extension = "json"

    def write(self, transcript: Transcript, out: TextIO) -> None:
        payload = {
            "text": transcript.text,
            "language": transcript.language,
            "duration": transcript.duration,
            "segments": [asdict(segment) for segment in transcript.segments],
        }
        json.dump(payload, out, ensure_ascii=False, indent=2)
        out.write("\n")


WRITERS: dict[str, type[ResultWriter]] = {w.extension: w for w in (WriteTXT, WriteVTT, WriteSRT, WriteTSV, WriteJSON)}
OUTPUT_FORMATS = (*WRITERS, "all")


def output_paths(stem: str, output_dir: Path, output_format: str) -> dict[str, Path]:
    formats = list(WRITERS) if output_format == "all" else [output_format]
    return {fmt: output_dir / f"{stem}.{fmt}" for fmt in formats}


@cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OutputError(UserError):
    """A transcript could not be written; the message names the file and the reason."""


def write_outputs(transcript: Transcript, paths: dict[str, Path]) -> None:
    """Each format to its path, atomically: written beside it under a temporary name, then renamed
    over it. A full disk or a failed write leaves no truncated file, and a path that is a hard
    link to another file (an input, say) gets a new file instead of overwriting the shared one."""
    for fmt, path in paths.items():
        staged = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
            ) as out:
                staged = Path(out.name)
                WRITERS[fmt]().write(transcript, out)
            os.chmod(staged, 0o666 & ~_umask())  # what open() would have given it, not mkstemp's 0600
            os.replace(staged, path)
        except OSError as exc:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
