"""The graph cache: where it lives, what keys it, when a file is built again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import amanuensis
from amanuensis import export
from amanuensis.export import GRAPH_SPECS, GraphKind
from amanuensis.export.cache import VERSIONS, cache_root, get_or_build, get_or_derive, is_complete
from amanuensis.quantize import int8_dir, load_table


def test_the_cache_is_the_users_never_the_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AMANUENSIS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "amanuensis"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_root() == Path.home() / ".cache" / "amanuensis"
    assert Path(amanuensis.__file__).parent.parent not in cache_root().parents
    monkeypatch.setenv("AMANUENSIS_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_a_version_bump_moves_what_it_keys(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    table = load_table(tiny.checkpoint)
    graphs, builds = export.model_cache_dir(tiny.checkpoint), int8_dir(tiny.checkpoint, table)
    monkeypatch.setitem(VERSIONS, "int8_build", VERSIONS["int8_build"] + 1)
    assert int8_dir(tiny.checkpoint, table) != builds and export.model_cache_dir(tiny.checkpoint) == graphs
    monkeypatch.setitem(VERSIONS, "export", VERSIONS["export"] + 1)
    assert export.model_cache_dir(tiny.checkpoint) != graphs


def test_files_are_built_once_and_again_when_their_source_changes(tmp_path: Path) -> None:
    built: list[str] = []

    def build() -> str:
        built.append("x")
        return f"built {len(built)}"

    path = tmp_path / "a.txt"
    assert get_or_build(path, build) == path and is_complete(path)
    get_or_build(path, build)
    assert len(built) == 1  # a complete file is not built again
    path.write_text("cut short")  # no longer the size it was published with
    get_or_build(path, build)
    assert len(built) == 2 and path.read_text() == "built 2"

    source, derived = tmp_path / "source.txt", tmp_path / "derived.txt"
    source.write_text("v1")
    get_or_derive(derived, source, build)
    get_or_derive(derived, source, build)
    assert len(built) == 3
    newer = derived.stat().st_mtime + 10
    source.write_text("v2")
    os.utime(source, (newer, newer))
    get_or_derive(derived, source, build)
    assert len(built) == 4 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_every_graph_kind_has_a_file_and_a_builder() -> None:
    names = {GRAPH_SPECS[kind].file_name(5) for kind in GraphKind}
    assert len(names) == len(GraphKind) and all(name.endswith(".onnx") for name in names)
    assert GRAPH_SPECS[GraphKind.DECODER].file_name(5) == "decoder_step_b5.onnx"
