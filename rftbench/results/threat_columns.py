"""The leaderboard's per-threat view (records with ``eval.threats``): ``--threat L2:1`` (or
``--metric aa@L2:1``) puts that threat's numbers in the ``pgd`` / ``aa`` / ``er`` columns
(``clean`` stays the model's clean accuracy), and ``union`` the union worst case.

Numbers are compared only within one threat definition: a run's ``rftbench.threats`` tag holds a
digest of each threat's settings (radius, grid, sweep attack, AutoAttack), which joins the
comparability key (``er_name`` becomes ``<threat>#<digest>``), so runs that evaluated one key
under other settings land in other groups. Runs that did not evaluate the threat are left out.
Bootstrap CIs over test samples are not computed for threats (the per-sample summary tag holds the
training threat's flags only).
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import pandas as pd

from ..errors import LeaderboardError
from ..evaluation.threat_records import metric_key


def split_metric(metric: str) -> tuple[str, Optional[str]]:
    """``aa@L2:1`` -> (``aa``, ``L2:1``); ``er`` -> (``er``, None)."""
    name, at, threat = metric.partition("@")
    return name, (threat or None) if at else None


def _resolve(threat: str, keys: set[str]) -> str:
    """A threat named fully (``L2:1``) or by its norm alone (``L2``) where one key has that norm."""
    if threat in keys:
        return threat
    by_norm = sorted(k for k in keys if k.split(":")[0] == threat)
    if len(by_norm) == 1:
        return by_norm[0]
    known = ", ".join(sorted(keys)) or "(none: no run was evaluated with eval.threats)"
    why = f"{threat!r} names several threats ({', '.join(by_norm)})" if by_norm else f"no run evaluated {threat!r}"
    raise LeaderboardError(f"--threat: {why}; the runs evaluated: {known}.")


def _threat_values(row: pd.Series, threat: str) -> dict[str, float]:
    m, pre = row["threat_metrics"], "union" if threat == "union" else metric_key(threat)
    get = (lambda k: m.get(f"{pre}/{k}", np.nan))
    return {"pgd": get("acc_sweep"), "aa": get("acc_autoattack"),
            "er": np.nan if threat == "union" else get("expected_robustness")}


def select_threat(ev: pd.DataFrame, threat: str) -> pd.DataFrame:
    """``ev`` with ``threat``'s numbers in the pgd / aa / er columns, the rows that evaluated it."""
    defs = ev["threats_tag"].map(lambda t: json.loads(t) if isinstance(t, str) and t else {})
    key = _resolve(threat, set().union(*defs) - {"corruptions"} if len(defs) else set())
    keep = defs.map(lambda d: key in d)
    out = ev[keep].copy()
    for i, row in out.iterrows():
        for col, v in _threat_values(row, key).items():
            out.at[i, col] = v
    out["er_name"] = [f"{key}#{d[key]}" for d in defs[keep]]
    out["threat"] = key
    if key != "union":
        out["norm"], out["eps"] = key.split(":")[0], float(key.split(":")[1])
    return out.reset_index(drop=True)


THREAT_METRICS = {"pgd": "acc_sweep", "aa": "acc_autoattack", "er": "expected_robustness"}


def _run_threats(ev: pd.DataFrame) -> dict[str, tuple[dict[str, str], dict[str, float]]]:
    """run id -> (threat definition digests, threat metrics)."""
    return {rid: (json.loads(tag) if isinstance(tag, str) and tag else {}, m)
            for rid, tag, m in zip(ev["run_id"], ev["threats_tag"], ev["threat_metrics"])}


def add_threat_columns(table: pd.DataFrame, ev: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One column group per threat of ``eval.threats`` (``aa@L2:1``, ``pgd@L2:1``, ``er@L2:1``,
    ``aa@union``, ``corruptions``): the mean over the row's runs, where every run of the row's group
    evaluated that threat under one definition (else empty: numbers of different threat
    definitions are never put side by side)."""
    runs = _run_threats(ev)
    if not any(d for d, _ in runs.values()):
        return table
    table = table.copy()
    all_keys = sorted({k for d, _ in runs.values() for k in d})
    for _, sub in table.groupby(keys, dropna=False, sort=False):
        ids = {i: [r for r in sub.at[i, "run_ids"].split(",")] for i in sub.index}
        for key in all_keys:
            digests = {runs.get(r, ({}, {}))[0].get(key) for rs in ids.values() for r in rs}
            if len(digests) != 1 or None in digests:
                continue
            for i, rs in ids.items():
                for col, v in _row_values(key, [runs[r][1] for r in rs]).items():
                    table.loc[i, col] = v
    return table


def _row_values(key: str, metrics: list[dict[str, float]]) -> dict[str, float]:
    if key == "corruptions":
        return {"corruptions": float(np.nanmean([m.get("corruptions/mean_accuracy", np.nan) for m in metrics]))}
    pre = "union" if key == "union" else metric_key(key)
    out = {}
    for short, name in THREAT_METRICS.items():
        vals = [m.get(f"{pre}/{name}", np.nan) for m in metrics]
        if not all(np.isnan(vals)):
            out[f"{short}@{key}"] = float(np.mean(vals))
    return out
