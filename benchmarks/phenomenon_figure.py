"""The phenomenon grid's figure and table, from the finished runs of one MLflow experiment.

    python benchmarks/phenomenon_figure.py --experiment rftbench-digits-phenomenon --out docs/phenomenon.png

Reads the runs with ``mlflow.search_runs`` (``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``),
draws clean accuracy and expected robustness against the target eps (one line per schedule,
mean ± std over seeds) and prints a markdown table: clean, PGD at the target, AutoAttack and
ER per schedule x target eps. Not a ratio benchmark, so it prints no JSON line.
"""
from __future__ import annotations

import argparse
import sys

from rftbench.errors import RftbenchError
from rftbench.results.phenomenon import markdown_table, runs_frame
from rftbench.plots import plot_phenomenon

ORDER = ["none", "constant", "linear", "epsilon_scheduling"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="rftbench-digits-phenomenon", help="MLflow experiment name")
    ap.add_argument("--out", default="docs/phenomenon.png", help="where the PNG goes")
    ap.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    ap.add_argument("--title", default="Robust fine-tuning on the embedded digits (mean ± std over seeds)")
    args = ap.parse_args(argv)
    try:
        df = runs_frame(args.experiment, args.tracking_uri)
    except RftbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    order = [s for s in ORDER if s in set(df["schedule"])] + sorted(set(df["schedule"]) - set(ORDER))
    out = plot_phenomenon(df, args.out, order=order, title=args.title)
    print(markdown_table(df, order))
    print(f"\n{len(df)} runs of MLflow experiment {args.experiment!r}; figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
