"""Where transcripts go (issue 28): nothing the user gave is overwritten, a write that fails
leaves no partial file and does not stop the other inputs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from amanuensis.cli import main
from amanuensis.cli.interrupts import INTERRUPTS, Terminated
from amanuensis.writers import OutputError, Transcript, write_outputs

from ..conftest import SAMPLE

FAST = ["--beam-size", "1", "--precision", "fp32"]


def test_two_inputs_with_one_name_are_refused_before_any_work(tmp_path, capsys) -> None:
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        shutil.copy(SAMPLE, tmp_path / folder / "talk.flac")
    args = ["transcribe", str(tmp_path / "d1/talk.flac"), str(tmp_path / "d2/talk.flac"), "-o", str(tmp_path / "out")]
    assert main([*args, *FAST]) == 2
    assert "would both write" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_output_hard_linked_to_the_input_is_refused(tmp_path, capsys) -> None:
    audio = tmp_path / "talk.flac"
    shutil.copy(SAMPLE, audio)
    out = tmp_path / "out"
    out.mkdir()
    os.link(audio, out / "talk.txt")
    before = audio.read_bytes()
    assert main(["transcribe", str(audio), "-f", "txt", "-o", str(out), *FAST]) == 2
    assert "would overwrite an input" in capsys.readouterr().err
    assert audio.read_bytes() == before


def test_an_output_folder_that_is_a_file_is_refused(tmp_path, capsys) -> None:
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("mine")
    assert main(["transcribe", str(SAMPLE), "-o", str(not_a_folder), *FAST]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert not_a_folder.read_text() == "mine"


def test_a_failed_write_leaves_nothing_and_the_next_file_is_written(tmp_path, capsys, monkeypatch) -> None:
    """The first transcript's JSON cannot be written (as on a full disk): no partial or temporary
    file is left, the error names the file, and the second input is still transcribed."""
    first, second = tmp_path / "a.flac", tmp_path / "b.flac"
    shutil.copy(SAMPLE, first)
    shutil.copy(SAMPLE, second)
    out = tmp_path / "out"
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "a.json":
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", full_disk)
    assert main(["transcribe", str(first), str(second), "-f", "json", "-o", str(out), *FAST]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["b.json"]


def test_outputs_are_replaced_whole(tmp_path) -> None:
    target = tmp_path / "t.txt"
    target.write_text("old")
    link = tmp_path / "other.txt"
    os.link(target, link)
    write_outputs(Transcript("new text", "en", 1.0, []), {"txt": target})
    assert target.read_text().strip() == "" and link.read_text() == "old"  # a new file; the link keeps its data
    with pytest.raises(OutputError, match="cannot write"):
        write_outputs(Transcript("x", "en", 1.0, []), {"txt": target / "inside-a-file.txt"})


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_file_keeps_what_was_done(tmp_path, sig, status) -> None:
    """Stopped after its first segment, a long file's text so far is written under .partial
    names (never the names a finished run writes), and the exit status says how it stopped."""
    long_audio = tmp_path / "long.wav"
    samples, rate = sf.read(SAMPLE, dtype="float32")
    sf.write(long_audio, np.concatenate([samples] * 8), rate)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "amanuensis.cli", "transcribe", str(long_audio), "-f", "txt", "-o", str(out)]
    run = subprocess.Popen(
        [*command, "--verbose", *FAST],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell's background job (how a CI runner may start pytest) ignores
        # SIGINT, and Python then never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    first = run.stdout.readline()  # the first decoded segment
    run.send_signal(sig)
    _, err = run.communicate(timeout=300)
    assert first.startswith("[00:00.000 -->"), (first, err)
    assert run.returncode == status, err
    assert "(incomplete)" in err and not (out / "long.txt").exists()
    assert (out / "long.partial.txt").read_text().strip().startswith("If the reader will excuse me")


def test_a_signal_during_a_console_write_stops_after_it() -> None:
    """A signal that arrives inside a console write (tqdm's lock held) is raised when the write is
    done, so the write is whole and the stop is the usual interrupt, not a lock error."""
    written = []
    with INTERRUPTS.installed(), pytest.raises(Terminated), INTERRUPTS.held():
        os.kill(os.getpid(), signal.SIGTERM)
        written.append("the whole line")
    assert written == ["the whole line"]
