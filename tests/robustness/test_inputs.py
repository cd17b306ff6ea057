"""Input a tester would try (issue 28): broken samples, odd array types, bad options. Each case
asserts what a user sees through the public API or the CLI, on real speech and real weights."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from amanuensis.audio import AudioError, load_audio
from amanuensis.cli import main
from amanuensis.errors import OptionsError, UserError
from amanuensis.evaluation import word_error_rate
from amanuensis.streaming import AgreementPolicy, AudioFormat, StreamOptions, TranscriptionStream, confirmed_text
from amanuensis.transcribe import TranscribeOptions

from ..conftest import SAMPLE, SAMPLE_REFERENCE

GREEDY = TranscribeOptions(beam_size=1, best_of=1)
MAX_WER = 0.10  # a few glitched samples may cost a word, never the transcript
# Streams here test input handling, not the policy: an update each second is a quarter of the work.
EACH_SECOND = StreamOptions(policy=AgreementPolicy(update_interval_s=1.0))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLE).samples


def _wer(text: str) -> float:
    return word_error_rate([SAMPLE_REFERENCE], [text])


def _with_glitches(samples: np.ndarray, nan: int, inf: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    glitched = samples.copy()
    spots = rng.choice(len(samples), nan + inf, replace=False)
    glitched[spots[:nan]] = np.nan
    glitched[spots[nan:]] = np.inf
    return glitched


def test_nan_and_inf_samples_in_a_file_are_silenced(tmp_path, speech, capsys) -> None:
    path = tmp_path / "glitched.wav"
    sf.write(path, _with_glitches(speech, 1000, 100), 16000, subtype="FLOAT")
    assert main(["transcribe", str(path), "--beam-size", "1", "--precision", "fp32"]) == 0
    out = capsys.readouterr()
    assert "1100 NaN or infinite samples set to silence" in out.err
    assert _wer(out.out) <= MAX_WER, out.out


def test_nan_samples_through_the_api_warn_and_transcribe(tiny, speech) -> None:
    with pytest.warns(RuntimeWarning, match="10 NaN or infinite samples"):
        text = tiny.transcribe_all(_with_glitches(speech, 10, 0), GREEDY).text
    assert _wer(text) <= MAX_WER, text


def test_nan_samples_inside_a_stream_cost_only_themselves(tiny_int8, speech) -> None:
    stream = TranscriptionStream(tiny_int8, EACH_SECOND, language="en")
    glitched = _with_glitches(speech, 10, 0)
    events = []
    with pytest.warns(RuntimeWarning, match="set to silence"):
        for start in range(0, len(glitched), 8000):
            events += stream.feed(glitched[start : start + 8000])
    events += stream.finish()
    assert _wer(confirmed_text(events)) <= MAX_WER, confirmed_text(events)


@pytest.mark.parametrize(
    "convert",
    [
        lambda x: np.stack([x, x], axis=1),  # stereo, (n, 2)
        lambda x: np.stack([x, x]),  # stereo, (2, n)
        lambda x: (x * 32767).astype(np.int16),
        lambda x: (x * 2147483647).astype(np.int32),
        lambda x: x.astype(np.float64).tolist(),
    ],
    ids=["stereo-columns", "stereo-rows", "int16", "int32", "list"],
)
def test_arrays_people_pass_are_read_as_speech(tiny, speech, convert) -> None:
    assert _wer(tiny.transcribe_all(convert(speech), GREEDY).text) <= MAX_WER


def test_file_bytes_are_decoded(tiny) -> None:
    assert _wer(tiny.transcribe_all(SAMPLE.read_bytes(), GREEDY).text) <= MAX_WER


@pytest.mark.parametrize(
    "audio,message",
    [
        (b"definitely not audio", "np.frombuffer"),
        (np.zeros((3, 4, 5), np.float32), "shape (3, 4, 5)"),
        (np.zeros(0, np.float32), "no samples"),
        (np.array(["a", "b"]), "float or integer PCM"),
        ({"samples": 1}, "cannot transcribe a dict"),
    ],
    ids=["garbage-bytes", "3-d", "empty", "strings", "dict"],
)
def test_unusable_input_is_a_clear_error(tiny, audio, message) -> None:
    with pytest.raises(AudioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny.transcribe(audio)


def test_int16_bytes_in_a_float_stream_are_refused(tiny_int8, speech) -> None:
    stream = TranscriptionStream(tiny_int8, language="en")
    pcm = (speech[:16000] * 32767).astype(np.int16).tobytes()
    with pytest.raises(AudioError, match="declare its format"):
        stream.feed(pcm)
    declared = TranscriptionStream(tiny_int8, EACH_SECOND, AudioFormat(encoding="int16"), language="en")
    events = declared.feed((speech * 32767).astype(np.int16).tobytes()) + declared.finish()
    assert _wer(confirmed_text(events)) <= MAX_WER


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"temperatures": ()}, "at least one value"),
        ({"temperatures": (0.0, float("nan"))}, "finite"),
        ({"beam_size": 0}, "at least 1"),
        ({"suppress_tokens": (-5,)}, "token ids"),
    ],
)
def test_impossible_options_are_refused(fields, message) -> None:
    with pytest.raises(OptionsError, match=message):
        TranscribeOptions(**fields)


def test_token_outside_the_vocabulary_is_refused(tiny, speech) -> None:
    with pytest.raises(OptionsError, match="outside the vocabulary"):
        tiny.transcribe(speech, TranscribeOptions(suppress_tokens=(99999999,)))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--suppress-tokens", "99999999"], "outside the vocabulary"),
        (["--ep", "FooExecutionProvider"], "unknown execution provider"),
        (["--ep", "CPUExecutionProvider", "--backend", "openvino"], "does not apply to --backend openvino"),
        (["--language", "xx"], "English-only"),
    ],
)
def test_unusable_options_exit_2_with_one_line(capsys, args, message) -> None:
    assert main(["transcribe", str(SAMPLE), *args]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("amanuensis: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_user_errors_are_one_family() -> None:
    """What the CLI prints on one line is exactly the UserError family; it is also a ValueError."""
    assert issubclass(AudioError, UserError) and issubclass(OptionsError, ValueError)


def test_unreadable_file_says_permission(tmp_path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = tmp_path / "locked.flac"
    path.write_bytes(SAMPLE.read_bytes())
    path.chmod(0)
    with pytest.raises(AudioError, match="permission denied"):
        load_audio(path)


def test_file_bytes_decode_to_the_files_own_samples(speech) -> None:
    """The in-memory decode gives the file's own samples."""
    from amanuensis.samples import as_samples

    buffer = io.BytesIO()
    sf.write(buffer, speech, 16000, format="FLAC")
    samples, replaced = as_samples(buffer.getvalue())
    assert replaced == 0 and len(samples) == len(speech)
    assert np.max(np.abs(samples - speech)) < 1e-3


def test_a_clip_shorter_than_a_syllable_gives_no_text(tiny, speech) -> None:
    loudest = int(np.argmax(np.abs(speech)))
    blip = speech[loudest : loudest + 800]  # 0.05 s of the sample's loudest speech
    transcript = tiny.transcribe_all(blip, GREEDY)
    assert transcript.text == "" and transcript.segments == []
