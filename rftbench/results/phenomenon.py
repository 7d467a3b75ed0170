"""The paper's phenomenon as numbers: finished grid runs read back from MLflow, summarised per
schedule x target eps (mean and standard deviation over seeds), as a table and a figure.

``benchmarks/phenomenon_figure.py`` is the command line; :func:`rftbench.plots.plot_phenomenon`
draws the figure from :func:`runs_frame`'s DataFrame.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from ..errors import TrackingError

# column of runs_frame -> (MLflow search_runs column, header in the table)
METRICS = {
    "acc_clean": ("metrics.eval/acc_clean", "clean"),
    "acc_sweep": ("metrics.eval/acc_sweep", "PGD at target"),
    "acc_autoattack": ("metrics.eval/acc_autoattack", "AutoAttack"),
    "expected_robustness": ("metrics.eval/expected_robustness", "ER"),
}


def _schedule_label(df: pd.DataFrame) -> pd.Series:
    by_param = df.get("params.schedule.name", pd.Series(["?"] * len(df), index=df.index))
    if "tags.rftbench.grid.schedule" in df:
        return df["tags.rftbench.grid.schedule"].fillna(by_param)
    return by_param


def runs_frame(experiment: str, tracking_uri: Optional[str] = None) -> pd.DataFrame:
    """One row per finished, evaluated run of ``experiment``: ``schedule`` (the grid's label, else
    ``schedule.name``), ``eps`` (``threat.eps``), ``seed`` and the :data:`METRICS` columns."""
    import mlflow

    from ..tracking.store import default_tracking_uri

    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    raw = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'")
    if raw.empty or METRICS["expected_robustness"][0] not in raw:
        raise TrackingError(f"MLflow experiment {experiment!r} has no finished, evaluated runs at "
                          f"{mlflow.get_tracking_uri()}; run the grid first (rftbench sweep <spec>) or set "
                          f"MLFLOW_TRACKING_URI to the store that holds it.")
    raw = raw[raw[METRICS["expected_robustness"][0]].notna()]
    out = pd.DataFrame({"run_id": raw["run_id"], "schedule": _schedule_label(raw),
                        "eps": raw["params.threat.eps"].astype(float), "seed": raw["params.seed"].astype(int)})
    for col, (src, _) in METRICS.items():
        out[col] = raw[src].astype(float) if src in raw else float("nan")
    return out.reset_index(drop=True)


def summarise(df: pd.DataFrame, order: Optional[list[str]] = None) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1) and count over seeds per (schedule, eps), for each of
    :data:`METRICS`; rows in ``order`` of schedules (else first appearance), then eps."""
    cols = [c for c in METRICS if c in df]
    g = df.groupby(["schedule", "eps"], sort=False)[cols].agg(["mean", "std", "count"])
    rank = {s: i for i, s in enumerate(order or dict.fromkeys(df["schedule"]))}
    return g.loc[sorted(g.index, key=lambda k: (rank.get(k[0], len(rank)), str(k[0]), k[1]))]


def markdown_table(df: pd.DataFrame, order: Optional[list[str]] = None) -> str:
    """The summary as a markdown table: ``mean ± std`` (n seeds) per schedule x target eps."""
    s = summarise(df, order)
    cols = [c for c in METRICS if c in df]
    head = ["schedule", "target eps", "seeds"] + [METRICS[c][1] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (schedule, eps), row in s.iterrows():
        n = int(row[(cols[0], "count")])
        cells = []
        for c in cols:
            m, sd = row[(c, "mean")], row[(c, "std")]
            cells.append("n/a" if pd.isna(m) else f"{m:.3f}" if pd.isna(sd) else f"{m:.3f} ± {sd:.3f}")
        lines.append("| " + " | ".join([str(schedule), f"{eps:g}", str(n)] + cells) + " |")
    return "\n".join(lines)
