"""The package layout promises of the wave-2 redesign, checked from the source itself."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ["rftbench.config", "rftbench.models", "rftbench.data", "rftbench.attacks", "rftbench.training",
               "rftbench.task", "rftbench.evaluation.evaluate", "rftbench.objectives", "rftbench.scheduling",
               "rftbench.tracking.store", "rftbench.tuning", "rftbench.tuning", "rftbench.results.leaderboard", "rftbench.cli"]


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


def test_models_never_import_the_embedded_default():
    offenders = []
    for path in (ROOT / "rftbench" / "models").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports are fine
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("embedded"):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


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
