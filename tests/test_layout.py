"""The package layout promises of the wave-2 redesign, checked from the source itself."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["rftbench.config", "rftbench.models", "rftbench.data", "rftbench.attacks", "rftbench.training",
               "rftbench.task", "rftbench.embedded", "rftbench.evaluation.evaluate", "rftbench.objectives",
               "rftbench.scheduling", "rftbench.tracking.store", "rftbench.experiments.experiment", "rftbench.tuning",
               "rftbench.results.leaderboard", "rftbench.cli"]


def test_every_function_is_under_sixty_lines():
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from longest_functions import function_lengths
    finally:
        sys.path.pop(0)
    too_long = [(n, where) for n, where in function_lengths() if n >= 60]
    assert not too_long, f"functions of 60 lines or more: {too_long}"


@pytest.mark.parametrize("module", SUBPACKAGES)
def test_each_subpackage_imports_alone(module):
    """A fresh interpreter imports the module by itself (no import circle, no hidden order)."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_stages_keep_their_layers():
    """``lint-imports`` (the contracts in pyproject.toml: each stage imports only those below it,
    results and training independent) passes on this checkout; lazy imports count."""
    proc = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                           "lint_imports_command()", "--no-cache"], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout, proc.stdout[-4000:]


def test_no_import_circle():
    """No module reaches itself again through imports (lazy ones included; annotation-only
    ``TYPE_CHECKING`` imports excluded, as in the contracts)."""
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))  # this checkout's rftbench, not an installed one
    try:
        graph = grimp.build_graph("rftbench", cache_dir=None, exclude_type_checking_imports=True)
    finally:
        sys.path.pop(0)
    circles = sorted({tuple(sorted((m, i))) for m in graph.modules for i in graph.find_modules_directly_imported_by(m)
                      if graph.chain_exists(importer=i, imported=m)})
    assert not circles, f"import circles through these imports: {circles}"


def test_user_errors_are_defined_in_one_module():
    """Every RftbenchError subclass lives in rftbench/errors.py."""
    outside = []
    for path in (ROOT / "rftbench").rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", getattr(b, "attr", "")).endswith("Error")
                                                      for b in node.bases):
                outside.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not outside, outside
