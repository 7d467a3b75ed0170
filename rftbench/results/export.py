"""The leaderboard in every format: a rich table per group (never truncated when piped),
markdown, CSV, JSON, LaTeX and HTML, all written by pandas from one frame of numbers rounded to
4 decimals, so every format carries the same numbers."""
from __future__ import annotations

import io
import sys
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import LeaderboardError

FORMATS = ("table", "markdown", "csv", "json", "latex", "html")
FLOAT = "%.10g"


def export_frame(lb: Any, columns: list[str] | None = None) -> pd.DataFrame:
    """The leaderboard's columns (all, or ``columns`` in that order)."""
    if columns:
        bad = [c for c in columns if c not in lb.table.columns]
        if bad:
            raise LeaderboardError(f"unknown --columns {bad}; choose among {', '.join(lb.table.columns)}.")
        return lb.table[list(columns)].copy()
    return lb.table.copy()


def to_format(lb: Any, fmt: str, columns: list[str] | None = None) -> str:
    """The leaderboard as text in ``fmt`` (not ``table``: see :func:`render`)."""
    df = export_frame(lb, columns)
    if fmt == "csv":
        return df.to_csv(index=False, float_format=FLOAT)
    if fmt == "json":
        return df.to_json(orient="records", indent=1, double_precision=10)
    if fmt == "markdown":
        return df.astype(object).where(df.notna(), None).to_markdown(index=False, floatfmt=".10g", missingval="")
    if fmt == "latex":
        return df.to_latex(index=False, float_format=FLOAT, na_rep="--", escape=True)  # run ids, schedule names: _ and % are LaTeX syntax
    if fmt == "html":
        return df.to_html(index=False, float_format=FLOAT, na_rep="", classes="leaderboard", border=0)
    raise LeaderboardError(f"unknown --format {fmt!r}; choose among {', '.join(FORMATS)}.")


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{int(v)}" if float(v).is_integer() and abs(v) >= 2 else f"{v:.4f}"


def _cell(row: pd.Series, m: str) -> str:
    mean = row[f"{m}_mean"]
    if isinstance(mean, float) and np.isnan(mean):
        return "-"
    out = f"{_num(mean)} ± {_num(row[f'{m}_std'])} [{_num(row[f'{m}_ci_lo'])}, {_num(row[f'{m}_ci_hi'])}]"
    if m == "aa":
        out += (" ✓" if row["certified"] else "") + f" n={int(row['n_aa']) if row['n_aa'] == row['n_aa'] else 0}"
    return out


def _group_table(sub: pd.DataFrame, title: str, baseline: bool) -> Table:
    table = Table(title=title, title_style="bold", title_justify="left")
    differs = int("differs" in sub.columns and bool(sub["differs"].fillna("").astype(bool).any()))
    cols = ["#", "schedule"] + ["differs"] * differs + ["seeds", "clean", "PGD@target", "AutoAttack@target", "ER", "train s",
            "attacked", "attack fwd+bwd", "evals"]
    cols += ["Δclean [CI] p", "ΔAA [CI] p", "ΔER [CI] p", "paired"] if baseline else []
    cols += ["notes"]
    for c in cols:
        table.add_column(c, overflow="fold")
    for _, r in sub.iterrows():
        cells = [str(r["rank"]), escape(r["schedule"])] + [escape(r["differs"] or "")] * differs
        cells += [f"{r['n_seeds']} ({r['seeds']})"]
        cells += [_cell(r, m) for m in ("clean", "pgd", "aa", "er")]
        cells += [_num(r["train_wall_s"]), _num(r["attack_fraction"]), _num(r["attack_passes"]), str(r["n_evals"])]
        if baseline:
            cells += [f"{_num(r[f'd_{m}'])} [{_num(r[f'd_{m}_ci_lo'])}, {_num(r[f'd_{m}_ci_hi'])}] "
                      f"p={_num(r[f'd_{m}_p'])}" for m in ("clean", "aa", "er")] + [escape(r["paired_note"])]
        notes = ("FLAGGED " if r["flagged"] else "") + (f"⚠ {r['warnings']}" if r["warnings"] else "")
        table.add_row(*cells, escape(notes))
    return table


def render(lb: Any, console: Console | None = None, title: str = "rftbench leaderboard") -> None:
    """One rich table per group; a console that is not a terminal is wide and never wraps or cuts."""
    if console is None:
        console = Console() if sys.stdout.isatty() else Console(width=100_000, no_color=True, soft_wrap=True)
    t = lb.table
    baseline = "paired_note" in t.columns
    for key, sub in t.groupby(lb.group_keys, dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        desc = ", ".join(f"{k}={v if k != 'subset' else str(v)[:12]}" for k, v in zip(lb.group_keys, key))
        console.print(_group_table(sub, escape(f"{title} — {desc}"), baseline))
    console.print("[dim]mean ± std over seeds [95% bootstrap CI over test samples]; ✓ = certified AutoAttack; "
                  "attack fwd+bwd = attacked steps × attack steps × batch size (sample passes); "
                  "flagged rows never rank above unflagged ones; a row is one setting (seeds averaged only over runs "
                  "equal but for the seed), differs = what varies between a group's rows (the row's value vs "
                  "the same schedule's other rows).[/dim]")


def render_to_text(lb: Any) -> str:
    buf = io.StringIO()
    render(lb, Console(file=buf, width=100_000, no_color=True, soft_wrap=True))
    return buf.getvalue()
