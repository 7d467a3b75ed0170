"""``rftbench`` command line: a thin layer over the library API (every command is a function
that tests call directly). Commands that report numbers take ``--json``.

One module per command group (``run``, ``catalog``, ``results``, ``tune``, ``sweep``, ``runs``),
each with a ``register(subparsers)`` and its ``cmd_*`` functions."""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Sequence


from ..errors import RftbenchError
from .common import set_json_stream


COMMAND_MODULES = ("run", "catalog", "results", "tune", "sweep", "runs")


def build_parser() -> argparse.ArgumentParser:
    """The parser: each module in :data:`COMMAND_MODULES` registers its own subcommands."""
    import importlib

    p = argparse.ArgumentParser(prog="rftbench", description="Robust fine-tuning benchmark harness.")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="load a Python file that registers schedules/models/datasets (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return p


def _take_plugin_options(argv: list[str]) -> tuple[list[str], list[str]]:
    """``--plugin FILE`` / ``--plugin=FILE`` may stand anywhere on the command line (before or
    after the subcommand): take them out before argparse sees the subcommands."""
    plugins, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--plugin" and i + 1 < len(argv):
            plugins.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--plugin="):
            plugins.append(a.split("=", 1)[1])
        else:
            rest.append(a)
        i += 1
    return plugins, rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    plugins, rest = _take_plugin_options(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    args.plugin = plugins
    try:
        from ..registry import load_plugin_file

        for path in args.plugin:
            load_plugin_file(path)
        if not getattr(args, "json", False):
            return int(args.func(args) or 0)
        # libraries (MLflow run links, progress) print to stdout: keep stdout one JSON document
        set_json_stream(sys.stdout)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                return int(args.func(args) or 0)
        finally:
            set_json_stream(None)
    except RftbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # e.g. training stopped by SIGTERM after saving its state
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
