"""Issue 28 row 8: a short decoding loop that the compression ratio misses is retried hotter."""

from __future__ import annotations

from amanuensis.decoding import DecodingResult, compression_ratio
from amanuensis.transcribe import TranscribeOptions, fails_checks

from ..conftest import SAMPLE_REFERENCE

# a window of ordinary speech that ends in a loop like the one met on a 60 min file
LOOP = SAMPLE_REFERENCE + " And then he came back " + "with the picture, " * 6


def _result(text: str) -> DecodingResult:
    return DecodingResult([], text, "en", -0.2, [], 0.01, 0.0, compression_ratio(text))


def test_a_loop_under_the_compression_limit_fails_the_checks() -> None:
    loop = _result(LOOP)
    assert loop.compression_ratio < TranscribeOptions().compression_ratio_threshold  # missed by Whisper's rule
    assert fails_checks(loop, TranscribeOptions())
    assert not fails_checks(loop, TranscribeOptions(repetition_threshold=None))


def test_ordinary_speech_and_short_repeats_pass() -> None:
    for text in (
        SAMPLE_REFERENCE,
        "No, no, no, I said no. Very, very good.",
    ):
        assert not fails_checks(_result(text), TranscribeOptions())
