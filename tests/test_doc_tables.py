"""The figure tables in README.md and docs/ are the committed JSON's, as tools/doc_tables.py writes them."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "tools" / "doc_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_marked_table_is_what_its_json_gives() -> None:
    tool = _tool()
    marked = 0
    for document in tool.DOCUMENTS:
        text = document.read_text()
        marked += len(tool.MARKED.findall(text))
        assert tool.refresh(text) == text, f"{document.name}: run python tools/doc_tables.py"
    assert marked >= 3  # README's gate and benchmark tables, the newest benchmark in docs/


def test_a_changed_figure_changes_the_table() -> None:
    tool = _tool()
    figures = json.loads((ROOT / "models/tiny.en/benchmark.json").read_text())
    before = tool.benchmark(figures)
    figures["rows"][0]["rtf"] += 0.01
    assert tool.benchmark(figures) != before
