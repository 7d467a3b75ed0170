#!/usr/bin/env python3
"""Print the longest functions in rftbench/ (lines from `def` to the last line of the body).

    python tools/longest_functions.py [--top 10] [--limit 60]

Exits 1 when a function is longer than ``--limit`` lines (the house rule: under 60).
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def function_lengths(package: Path = ROOT / "rftbench") -> list[tuple[int, str]]:
    """(length in lines, "path:line name") for every function and method under ``package``."""
    out = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                out.append((node.end_lineno - start + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--limit", type=int, default=60)
    args = ap.parse_args(argv)
    lengths = function_lengths()
    for n, where in lengths[:args.top]:
        print(f"{n:4d}  {where}")
    return 1 if lengths and lengths[0][0] >= args.limit else 0


if __name__ == "__main__":
    sys.exit(main())
