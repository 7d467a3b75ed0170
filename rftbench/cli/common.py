"""What every command module shares: ``--json`` output, the console tables go to, argparse types."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console

from ..config import parse_fraction

# the width of a console that is not a terminal: wider than any table, so rich never cuts a cell
# (``fashion_mn…``) nor wraps a line at its 80-column default when output is piped or captured
PIPE_WIDTH = 100_000

_json_out = None  # where --json documents go; everything else printed meanwhile goes to stderr


def set_json_stream(stream: Any) -> None:
    global _json_out
    _json_out = stream


def print_json(obj: Any) -> None:
    """One JSON document on the real stdout (libraries' prints go to stderr meanwhile)."""
    print(json.dumps(obj, indent=2, default=str), file=_json_out or sys.stdout)


def console(stderr: bool = False) -> Console:
    """The console commands print tables and summaries on: a terminal keeps its own width; a
    pipe or a file gets :data:`PIPE_WIDTH` columns without colour or soft wrapping (as the
    leaderboard's :func:`rftbench.results.export.render` does), so every cell is printed in full."""
    c = Console(stderr=stderr)
    return c if c.is_terminal else Console(stderr=stderr, width=PIPE_WIDTH, no_color=True, soft_wrap=True)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def add_set_flag(parser: argparse.ArgumentParser, help: str = "override a config key (repeatable)") -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def eps_value(text: str) -> float:
    """argparse type: a number or a fraction such as ``4/255``."""
    try:
        return parse_fraction(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a fraction like 4/255") from None
