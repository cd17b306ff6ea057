"""The graph cache under stress (issue 28): damaged files are rebuilt, concurrent first runs
both succeed. Each test builds into its own empty ``AMANUENSIS_CACHE``."""

from __future__ import annotations

import os
import subprocess
import sys

from amanuensis.evaluation import word_error_rate

from ..conftest import SAMPLE, SAMPLE_REFERENCE

TRANSCRIBE = [sys.executable, "-m", "amanuensis.cli", "transcribe", str(SAMPLE), "--beam-size", "1"]


def _transcribe(cache, *extra: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"AMANUENSIS_CACHE": str(cache)}
    return subprocess.run([*TRANSCRIBE, *extra], capture_output=True, text=True, env=env, timeout=900)


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    assert word_error_rate([SAMPLE_REFERENCE], [result.stdout]) == 0.0, result.stdout


def test_a_truncated_cached_graph_is_built_again(tmp_path) -> None:
    _ok(_transcribe(tmp_path))
    graphs = sorted(tmp_path.rglob("*.onnx"), key=lambda p: p.stat().st_size, reverse=True)
    damaged = [graphs[0], next(p for p in graphs if "int8-" in str(p))]  # an FP32 export and an INT8 build
    for path in damaged:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    _ok(_transcribe(tmp_path))
    assert all(p.stat().st_size > 1000 and (p.parent / (p.name + ".size")).exists() for p in damaged)


def test_two_first_runs_at_once_on_an_empty_cache(tmp_path) -> None:
    env = os.environ | {"AMANUENSIS_CACHE": str(tmp_path)}
    runs = [
        subprocess.Popen(TRANSCRIBE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    for run in runs:
        out, err = run.communicate(timeout=900)
        _ok(subprocess.CompletedProcess(run.args, run.returncode, out, err))
    assert not list(tmp_path.rglob("*.partial")), "a temporary file was left behind"


def test_a_cache_that_cannot_be_written_is_one_line(tmp_path) -> None:
    """Root ignores permissions, so an unwritable cache is made by putting it under a file."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    result = _transcribe(blocker / "cache")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "set AMANUENSIS_CACHE to a writable folder" in result.stderr.strip().splitlines()[-1]
