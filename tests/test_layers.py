"""Imports flow one way through the pipeline: audio → model/weights → graphs → runtime →
decoding → transcribe → streaming/batch/tools → cli. A module may import its own layer or lower
ones, at the top of the file or inside a function alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "amanuensis"

# Layer of each module (dotted name under amanuensis; a package prefix covers its modules).
LAYERS = {
    0: ["errors", "audio", "samples", "noise", "normalizer", "vad"],
    1: ["ct2", "models", "tokenizer"],
    2: ["export", "quantize", "quantize.recipe", "quantize.targets", "quantize.per_row", "quantize.dynamic",
        "quantize.qdq", "quantize.mse", "quantize.smooth", "quantize.split"],
    3: ["devices", "sessions", "precision", "runtime", "aligner"],
    4: ["choosers", "decoding", "timing"],
    5: ["transcribe", "writers", "engine", "__init__"],
    6: ["streaming", "evaluation", "conditions", "placement", "quantize.calibration", "quantize.analysis",
        "quantize.pipeline", "quantize.report"],
    7: ["cli"],
}  # fmt: skip


def layer_of(module: str) -> int:
    """The layer of ``amanuensis.<module>``: the most specific entry that names it or a package above it."""
    best, depth = None, -1
    for layer, names in LAYERS.items():
        for name in names:
            if (module == name or module.startswith(name + ".")) and name.count(".") > depth:
                best, depth = layer, name.count(".")
    assert best is not None, f"amanuensis.{module} has no layer in tests/test_layers.py"
    return best


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name / "__init__.py").exists()


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("amanuensis"):
            base = node.module.removeprefix("amanuensis").lstrip(".")
            if base:
                names.add(base)
            else:  # from amanuensis import export (a module) or load_model (from the package's __init__)
                names |= {a.name if _is_module(a.name) else "__init__" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix("amanuensis.") for a in node.names if a.name.startswith("amanuensis.")}
    return {n for n in names if n}


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_imports_go_down_the_pipeline(module: str, path: Path) -> None:
    own = layer_of(module)
    upward = sorted(f"{name} (layer {layer_of(name)})" for name in _imports(path) if layer_of(name) > own)
    assert not upward, f"amanuensis.{module} (layer {own}) imports {', '.join(upward)}"
