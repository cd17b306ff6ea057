"""The ``amanuensis`` command as a user runs it: in-process through ``main(argv)`` (a process per
call cost seconds of imports), and once as the installed console script."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from amanuensis.cli import main
from amanuensis.evaluation import word_error_rate
from amanuensis.transcribe import TranscribeOptions

from .conftest import SAMPLE, SAMPLE_REFERENCE, VALIDATION_MANIFEST

EXE = shutil.which("amanuensis")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str


def run(*args: str | Path, cwd: Path | None = None) -> Run:
    """The command through ``main(argv)``, its printed output captured and its exit status kept."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(cwd or Path.cwd()):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse's own errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return Run(code, out.getvalue(), err.getvalue())


def test_console_script_transcribes_the_bundled_sample() -> None:
    assert EXE, "the amanuensis console script is not installed (pip install -e .)"
    result = subprocess.run([EXE, "transcribe", str(SAMPLE)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert word_error_rate([SAMPLE_REFERENCE], [result.stdout]) == 0.0
    assert result.stdout.startswith("If the reader will excuse me")


def test_writes_every_output_format(tmp_path: Path) -> None:
    result = run("transcribe", SAMPLE, "--output-format", "all", "--output-dir", tmp_path, "--beam-size", "1")
    assert result.returncode == 0, result.stderr
    stem = SAMPLE.stem
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{stem}.{e}" for e in ("txt", "srt", "vtt", "json", "tsv")
    )
    payload = json.loads((tmp_path / f"{stem}.json").read_text())
    assert payload["language"] == "en" and payload["text"].strip().startswith("If the reader")
    first = payload["segments"][0]
    assert {"start", "end", "text", "tokens"} <= set(first) and first["start"] == 0.0 and first["end"] > 1.0
    assert word_error_rate([SAMPLE_REFERENCE], [payload["text"]]) == 0.0
    srt = (tmp_path / f"{stem}.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:")
    assert (tmp_path / f"{stem}.vtt").read_text().startswith("WEBVTT\n\n00:00.000 --> ")
    tsv_rows = (tmp_path / f"{stem}.tsv").read_text().splitlines()
    assert tsv_rows[0] == "start\tend\ttext" and tsv_rows[1].startswith("0\t")
    txt = (tmp_path / f"{stem}.txt").read_text().splitlines()
    assert len(txt) == len(payload["segments"])


@pytest.fixture()
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty": tmp_path / "empty.wav",
        "truncated": tmp_path / "truncated.flac",
        "text": tmp_path / "readme.wav",
        "directory": tmp_path / "folder",
        "zero": tmp_path / "zero.wav",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(SAMPLE.read_bytes()[:100])
    files["text"].write_text("definitely not audio\n" * 50)
    files["directory"].mkdir()
    sf.write(files["zero"], np.zeros(0, np.float32), 16000)
    return files


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "directory", "zero"])
def test_bad_input_is_one_clear_line(bad_files: dict[str, Path], kind: str) -> None:
    result = run("transcribe", bad_files[kind])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("amanuensis: error: ")]
    assert len(errors) == 1 and str(bad_files[kind]) in errors[0]
    # besides the error, only the one start-up line that says where the graphs run
    assert len(result.stderr.strip().splitlines()) == 2 and "encoder →" in result.stderr
    assert result.stdout == ""


def test_other_files_are_still_processed(bad_files: dict[str, Path]) -> None:
    result = run("transcribe", bad_files["text"], SAMPLE, "--beam-size", "1")
    assert result.returncode == 1
    assert "If the reader will excuse me" in result.stdout
    assert result.stderr.count("amanuensis: error:") == 1


def test_silent_clip_gives_empty_text(tmp_path: Path) -> None:
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(10 * 16000, np.float32), 16000)
    result = run("transcribe", path, "-f", "json", "-o", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
    assert json.loads((tmp_path / "silence.json").read_text())["segments"] == []


def test_never_overwrites_an_input(tmp_path: Path) -> None:
    audio_named_json = tmp_path / "talk.json"
    shutil.copy(SAMPLE, audio_named_json)  # flac content, .json name: the JSON output would clobber it
    before = audio_named_json.read_bytes()
    result = run("transcribe", audio_named_json, "-f", "json", "-o", tmp_path)
    assert result.returncode == 2 and "would overwrite an input" in result.stderr
    assert audio_named_json.read_bytes() == before


@pytest.mark.parametrize("args,message", [
    (["--device", "npu", "--no-fallback"], "no NPU execution provider found; not falling back"),
    (["--ep", "VitisAIExecutionProvider", "--no-fallback"], "VitisAIExecutionProvider is not available"),
    (["--model", "large-v9"], "unknown model 'large-v9'"),
    (["--language", "de"], "English-only"),
])  # fmt: skip
def test_option_errors(args: list[str], message: str) -> None:
    result = run("transcribe", SAMPLE, *args)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr


def test_local_model_directory(tmp_path: Path, tiny) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    for source in (
        *tiny.checkpoint.files.weight_parts,
        tiny.checkpoint.files.config_path,
        tiny.checkpoint.files.tokenizer_path,
    ):
        (model_dir / source.name).symlink_to(source)
    result = run("transcribe", SAMPLE, "--model", model_dir, "--beam-size", "1")
    assert result.returncode == 0, result.stderr
    assert word_error_rate([SAMPLE_REFERENCE], [result.stdout]) == 0.0
    assert "no INT8 calibration for model 'my-model'" in result.stderr and "using fp32" in result.stderr
    explicit = run("transcribe", SAMPLE, "--model", model_dir, "--precision", "int8")
    assert explicit.returncode == 2 and "amanuensis quantize" in explicit.stderr
    assert "Traceback" not in explicit.stderr


def test_fp32_opt_out_gives_the_same_text() -> None:
    result = run("transcribe", SAMPLE, "--precision", "fp32")
    assert result.returncode == 0, result.stderr
    assert word_error_rate([SAMPLE_REFERENCE], [result.stdout]) == 0.0


def test_quantize_refuses_calibration_that_overlaps_validation(tmp_path: Path) -> None:
    overlap = tmp_path / "calib"
    overlap.mkdir()
    first = VALIDATION_MANIFEST.read_text().splitlines()[0].split("\t")[0]
    (overlap / "clip.flac").write_bytes((VALIDATION_MANIFEST.parent / first).read_bytes())
    result = run("quantize", "--calibration-dir", overlap, "--validation", VALIDATION_MANIFEST)
    assert result.returncode == 1 and "is also in the validation set" in result.stderr
    assert "Traceback" not in result.stderr


def test_quantize_refuses_an_empty_search_step() -> None:
    result = run("quantize", "--group-size", "0")
    assert result.returncode == 2 and "group_size and patience must be at least 1" in result.stderr


def test_quantize_refuses_a_folder_without_audio(tmp_path: Path) -> None:
    result = run("quantize", "--calibration-dir", tmp_path, "--validation", VALIDATION_MANIFEST)
    assert result.returncode == 1 and "holds no audio files" in result.stderr


def test_evaluate_prints_wer_and_rtf(tmp_path: Path) -> None:
    lines = VALIDATION_MANIFEST.read_text().splitlines()[:3]
    manifest = tmp_path / "small.tsv"
    manifest.write_text("\n".join(f"{VALIDATION_MANIFEST.parent / line}" for line in lines) + "\n")
    result = run("evaluate", manifest, "--beam-size", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["utterances"] == 3 and 0.0 <= report["wer"] < 30.0 and 0.0 < report["rtf"] < 1.0
    table = run("evaluate", manifest, "--beam-size", "1")
    assert "WER" in table.stdout and "RTF" in table.stdout


def test_evaluate_rejects_a_bad_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.tsv"
    manifest.write_text("no tab on this line\n")
    result = run("evaluate", manifest)
    assert result.returncode == 1 and "bad.tsv:1: expected 'audio-path<TAB>reference" in result.stderr
    manifest.write_text(f"{SAMPLE}\tsome words\tGerman\n")
    result = run("evaluate", manifest)
    assert result.returncode == 1 and "'German' is not a Whisper language code" in result.stderr


def test_evaluate_scores_a_manifest_of_mixed_languages_per_language(tmp_path: Path) -> None:
    """English and Chinese in one manifest: each clip decoded and scored in its own language
    (CER for Chinese), one line per language."""
    chinese = SAMPLE.parents[1] / "tests/data/validation/multilingual/zh"
    clip, sentence = (chinese / "refs.tsv").read_text(encoding="utf-8").splitlines()[1].split("\t")
    manifest = tmp_path / "mixed.tsv"
    manifest.write_text(f"{SAMPLE}\t{SAMPLE_REFERENCE}\ten\n{chinese / clip}\t{sentence}\tzh\n", encoding="utf-8")
    result = run("evaluate", manifest, "--model", "base", "--beam-size", "1", "--json")
    assert result.returncode == 0, result.stderr
    languages = json.loads(result.stdout)["languages"]
    assert languages["en"]["metric"] == "WER" and languages["en"]["error_rate"] < 10.0
    assert languages["zh"]["metric"] == "CER" and languages["zh"]["error_rate"] < 50.0


def test_progress_bar_on_long_audio(tmp_path: Path) -> None:
    clips = sorted((SAMPLE.parents[1] / "calibration_audio/ljspeech").glob("*.wav"))[:5]
    audio = np.concatenate([sf.read(c, dtype="float32")[0] for c in clips])
    path = tmp_path / "long.wav"
    sf.write(path, audio, 22050)
    assert len(audio) / 22050 > 30
    result = run("transcribe", path, "--beam-size", "1")
    assert result.returncode == 0, result.stderr
    assert "100%|" in result.stderr and "/s" in result.stderr
    short = run("transcribe", SAMPLE, "--beam-size", "1")
    assert "%|" not in short.stderr  # short files get no bar


def test_cli_and_python_api_agree_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Same file, same options, defaults otherwise: the CLI (in-process) and ``load_model`` give the
    same text at the same precision. This clip reads differently in FP32 ("a grain or two") and INT8,
    so a default precision that differed between the two would fail here."""
    from amanuensis import TranscribeOptions, load_model

    clip = VALIDATION_MANIFEST.parent / "1688-142285-0000.flac"
    assert main(["transcribe", str(clip), "--beam-size", "1"]) == 0
    printed = capsys.readouterr()
    model = load_model("tiny.en")
    assert model.runtime.options.precision == "int8" and "tiny.en int8" in printed.err
    assert printed.out.strip() == model.transcribe_all(clip, TranscribeOptions(beam_size=1)).text.strip()


def test_cli_decoding_defaults_are_the_apis() -> None:
    """Every decoding flag defaults to TranscribeOptions' own value (written once, in the library);
    whisper's boolean spelling is understood."""
    from amanuensis.cli.parser import build_parser
    from amanuensis.cli.transcribe import transcribe_options

    parser = build_parser()
    for command in ("transcribe", "evaluate"):
        assert transcribe_options(parser.parse_args([command, "x"])) == TranscribeOptions()
    args = parser.parse_args(["transcribe", "x", "--condition-on-previous-text", "False"])
    assert transcribe_options(args).condition_on_previous_text is False
