"""Output writers, one per format, in the shapes whisper's CLI produces."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import TextIO

from amanuensis.errors import OptionsError, UserError
from amanuensis.timing import Word
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


@dataclass(frozen=True)
class SubtitleOptions:
    """How srt and vtt lay out words (all need word timestamps; whisper's CLI has the same)."""

    max_line_width: int | None = None  # characters per line before a break; None: one line per segment
    max_line_count: int | None = None  # lines per subtitle (with max_line_width); None: a subtitle per segment
    max_words_per_line: int | None = None  # words per line (without max_line_width)
    highlight_words: bool = False  # a cue per word, the word underlined as it is spoken

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count", "max_words_per_line"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise OptionsError(f"{name} must be at least 1")

    @property
    def uses_words(self) -> bool:
        return self.highlight_words or any(
            v is not None for v in (self.max_line_width, self.max_line_count, self.max_words_per_line)
        )


LONG_PAUSE_SECONDS = 3.0  # a pause this long starts a new subtitle (when segments are not kept)


def _subtitle_lines(segments: list[Segment], options: SubtitleOptions) -> Iterator[list[Word]]:
    """Words grouped into subtitles, a line break written into the word that starts a line:
    lines up to ``max_line_width`` characters (or ``max_words_per_line`` words), up to
    ``max_line_count`` lines, a new subtitle per segment unless both limits are given."""
    keep_segments = options.max_line_count is None or options.max_line_width is None
    width = options.max_line_width or 1000
    per_line = options.max_words_per_line or 1000
    line_length, line_count, subtitle = 0, 1, []
    last_start = segments[0].words[0].start if segments and segments[0].words else 0.0
    for segment in segments:
        words = segment.words or []
        for chunk_start in range(0, len(words), per_line):
            for i, word in enumerate(words[chunk_start : chunk_start + per_line]):
                text = word.word
                long_pause = not keep_segments and word.start - last_start > LONG_PAUSE_SECONDS
                has_room = line_length + len(text) <= width
                segment_break = i == 0 and bool(subtitle) and keep_segments
                if line_length > 0 and has_room and not long_pause and not segment_break:
                    line_length += len(text)
                else:
                    text = text.strip()
                    full = options.max_line_count is not None and (long_pause or line_count >= options.max_line_count)
                    if (subtitle and full) or segment_break:
                        yield subtitle
                        subtitle, line_count = [], 1
                    elif line_length > 0:
                        line_count += 1
                        text = "\n" + text
                    line_length = len(text.strip())
                subtitle.append(Word(text, word.start, word.end, word.probability))
                last_start = word.start
    if subtitle:
        yield subtitle


class ResultWriter:
    extension: str = ""

    def __init__(self, subtitles: SubtitleOptions | None = None) -> None:
        self.subtitles = subtitles or SubtitleOptions()

    def write(self, transcript: Transcript, out: TextIO) -> None:
        raise NotImplementedError


class SubtitlesWriter(ResultWriter):
    """srt and vtt: one cue per segment, or laid out from its words (SubtitleOptions)."""

    decimal_marker = "."
    always_include_hours = False

    def cues(self, transcript: Transcript) -> Iterator[tuple[str, str, str]]:
        segments = transcript.segments
        if not (self.subtitles.uses_words and segments and all(s.words is not None for s in segments)):
            for segment in segments:
                yield self._time(segment.start), self._time(segment.end), segment.text.strip().replace("-->", "->")
            return
        for subtitle in _subtitle_lines(segments, self.subtitles):
            start, end = self._time(subtitle[0].start), self._time(subtitle[-1].end)
            text = "".join(w.word for w in subtitle)
            if not self.subtitles.highlight_words:
                yield start, end, text
                continue
            shown_until = start
            for i, word in enumerate(subtitle):
                word_start, word_end = self._time(word.start), self._time(word.end)
                if shown_until != word_start:
                    yield shown_until, word_start, text
                underlined = (_underline(w.word) if j == i else w.word for j, w in enumerate(subtitle))
                yield word_start, word_end, "".join(underlined)
                shown_until = word_end

    def _time(self, seconds: float) -> str:
        return format_timestamp(seconds, self.always_include_hours, self.decimal_marker)


def _underline(word: str) -> str:
    return re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", word, flags=re.DOTALL)


class WriteTXT(ResultWriter):
    extension = "txt"

    def write(self, transcript: Transcript, out: TextIO) -> None:
        for segment in transcript.segments:
            print(segment.text.strip(), file=out)


class WriteVTT(SubtitlesWriter):
    extension = "vtt"

    def write(self, transcript: Transcript, out: TextIO) -> None:
        print("WEBVTT\n", file=out)
        for start, end, text in self.cues(transcript):
            print(f"{start} --> {end}\n{text}\n", file=out)


class WriteSRT(SubtitlesWriter):
    extension = "srt"
    decimal_marker = ","
    always_include_hours = True

    def write(self, transcript: Transcript, out: TextIO) -> None:
        for index, (start, end, text) in enumerate(self.cues(transcript), start=1):
            print(f"{index}\n{start} --> {end}\n{text}\n", file=out)


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
            "segments": [_segment_dict(segment) for segment in transcript.segments],
        }
        json.dump(payload, out, ensure_ascii=False, indent=2)
        out.write("\n")


def _segment_dict(segment: Segment) -> dict:
    """The segment's fields; ``words`` only when word timestamps were asked for."""
    fields = asdict(segment)
    if segment.words is None:
        del fields["words"]
    return fields


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


def write_outputs(transcript: Transcript, paths: dict[str, Path], subtitles: SubtitleOptions | None = None) -> None:
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
                WRITERS[fmt](subtitles).write(transcript, out)
            os.chmod(staged, 0o666 & ~_umask())  # what open() would have given it, not mkstemp's 0600
            os.replace(staged, path)
        except OSError as exc:
            if staged is not None:
                staged.unlink(missing_ok=True)
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
