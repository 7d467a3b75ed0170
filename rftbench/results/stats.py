"""The leaderboard's statistics: pandas aggregation over seeds, scipy.stats for intervals.

- over seeds: mean, std (ddof 1) and n per schedule; a 95% Student t-interval of the mean where
  n >= 2 (``scipy.stats.t.interval``);
- over test samples: the per-sample results of the row's runs (same subset, so sample i is the
  same image in every run) are averaged over seeds, and a 95% percentile bootstrap CI of their
  mean comes from ``scipy.stats.bootstrap`` (clean, PGD at target, ER; AutoAttack on its prefix);
- against a baseline schedule: the paired difference of the seed-averaged per-sample results,
  a paired bootstrap CI (``scipy.stats.bootstrap(paired=True)``) and a two-sided sign-flip
  permutation p-value (``scipy.stats.permutation_test``, ``permutation_type="samples"``).

Bootstrapping is the expensive part (resampled index gathers: rows x metrics x resamples x n);
CIs are cached by content (:class:`CICache`), so rebuilding a leaderboard re-bootstraps only
rows whose per-sample results changed.
"""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import LeaderboardError
from ..evaluation.sample_summary import SampleSummary

STATS = ("clean", "pgd", "aa", "er")
ROUND = 4


def per_sample(summaries: Sequence[SampleSummary], metric: str) -> np.ndarray | None:
    """The seed-averaged per-sample values of ``metric`` over ``summaries`` (None if any lacks it)."""
    if metric == "aa":
        arrays = [s.aa for s in summaries]
        if not arrays or any(a is None or len(a) == 0 for a in arrays):
            return None
        n = min(len(a) for a in arrays)
        return np.mean([a[:n].astype(float) for a in arrays], axis=0)
    return np.mean([getattr(s, metric) for s in summaries], axis=0) if summaries else None


def paired(xs: np.ndarray, xb: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float, float, float]:
    """(difference, CI low, CI high, p-value) of mean(xs) - mean(xb), paired by sample."""
    def diff(a, b, axis=-1):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    d = float(np.mean(xs) - np.mean(xb))
    if np.all(xs == xb):
        return d, 0.0, 0.0, 1.0
    ci = stats.bootstrap((xs, xb), diff, paired=True, vectorized=True, method="percentile",
                         n_resamples=n_resamples, rng=np.random.default_rng(seed)).confidence_interval
    p = stats.permutation_test((xs, xb), diff, permutation_type="samples", vectorized=True,
                               n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed + 1))
    return d, float(ci.low), float(ci.high), float(p.pvalue)


ROW_KEYS = ("schedule", "setting", "n_aa")  # within a group: one row per schedule, setting and AutoAttack count


def _seed_table(ev: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    g = ev.groupby(keys + list(ROW_KEYS), dropna=False, sort=False)
    agg = g.agg(**{f"{m}_mean": (m, "mean") for m in STATS}, **{f"{m}_std": (m, "std") for m in STATS},
                n_seeds=("run_id", "size"), seeds=("seed", lambda s: ",".join(sorted(map(str, s)))),
                certified=("certified", "all"), flagged=("flagged", "any"),
                n_samples=("n_samples", "min"), train_wall_s=("train_wall_s", "mean"),
                attack_fraction=("attack_fraction", "mean"), attack_passes=("attack_passes", "mean"),
                n_evals=("n_evals", "sum"), run_ids=("run_id", lambda s: ",".join(s)),
                **({"trainable_params": ("trainable_params", "mean")} if "trainable_params" in ev else {}),
                warnings=("warnings", lambda s: " | ".join(sorted({w for w in s if w}))))
    agg = agg.reset_index()
    for m in STATS:
        sem = (agg[f"{m}_std"] / np.sqrt(agg["n_seeds"])).to_numpy(float)
        ok = (agg["n_seeds"] >= 2).to_numpy() & (sem > 0)
        lo, hi = np.full(len(agg), np.nan), np.full(len(agg), np.nan)
        if ok.any():
            lo[ok], hi[ok] = stats.t.interval(0.95, agg["n_seeds"].to_numpy()[ok] - 1,
                                              loc=agg[f"{m}_mean"].to_numpy(float)[ok], scale=sem[ok])
        agg[f"{m}_seed_ci_lo"] = np.where(ok, lo, np.where(agg["n_seeds"] >= 2, agg[f"{m}_mean"], np.nan))
        agg[f"{m}_seed_ci_hi"] = np.where(ok, hi, np.where(agg["n_seeds"] >= 2, agg[f"{m}_mean"], np.nan))
    return agg


def compact(x: np.ndarray | None, k: int) -> tuple[np.ndarray | None, int]:
    """``x`` (a mean over ``k`` seeds) as small exact numbers for a fast bootstrap (uint8 gathers are
    ~4x cheaper than float64): uint8 values and a divisor ``k * d`` where x * k * d is integral and
    at most 255 (0/1 flags averaged over seeds; per-sample ER on a uniform grid, whose trapezoid
    weights are multiples of 1 / (2 (G - 1))), else float64 with divisor 1."""
    if x is None:
        return None, 1
    for d in range(1, 65):
        c = np.rint(x * k * d)
        if c.max(initial=0) > 255:
            break
        if np.allclose(c, x * k * d, rtol=0, atol=1e-9):
            return c.astype(np.uint8), k * d
    return x.astype(np.float64), 1


def _ci_key(x: np.ndarray, scale: int, n_resamples: int, seed: int) -> str:
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    h.update(f"{x.dtype.str}-{scale}-percentile-0.95-{n_resamples}-{seed}-v1".encode())
    return h.hexdigest()


class CICache:
    """Bootstrap CIs by content (sha256 of the per-sample values and the bootstrap settings) in a
    SQLite file under the rftbench cache: a leaderboard rebuilt after a new run bootstraps only the
    rows whose per-sample results changed. Content-addressed, so an entry can never be stale."""

    def __init__(self, path: Path | None):
        self.db = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(path), timeout=30)
            self.db.execute("CREATE TABLE IF NOT EXISTS ci (key TEXT PRIMARY KEY, lo REAL, hi REAL)")

    def get(self, keys: list[str]) -> dict[str, tuple[float, float]]:
        if self.db is None or not keys:
            return {}
        out = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key, lo, hi FROM ci WHERE key IN ({','.join('?' * len(chunk))})"
            out.update({k: (lo, hi) for k, lo, hi in self.db.execute(q, chunk)})
        return out

    def put(self, items: dict[str, tuple[float, float]]) -> None:
        if self.db is not None and items:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO ci VALUES (?, ?, ?)",
                                    [(k, lo, hi) for k, (lo, hi) in items.items()])


def default_ci_cache() -> CICache:
    from ..paths import cache_dir

    return CICache(cache_dir() / "leaderboard" / "bootstrap_ci.sqlite")


def batched_cis(xs: list[tuple[np.ndarray | None, int]], n_resamples: int, seed: int,
                cache: CICache | None = None) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile bootstrap CIs of the means of several samples ``(values, divisor)`` (see
    :func:`compact`), one ``scipy.stats.bootstrap`` call per sample size and dtype (samples are
    stacked along a batch axis); results found in ``cache`` are not recomputed."""
    lo, hi = np.full(len(xs), np.nan), np.full(len(xs), np.nan)
    keys = [None if x is None or len(x) < 2 else _ci_key(x, sc, n_resamples, seed) for x, sc in xs]
    known = (cache or CICache(None)).get([k for k in keys if k])
    by_n: dict[tuple[int, str], list[int]] = {}
    for i, ((x, _), k) in enumerate(zip(xs, keys)):
        if k in known:
            lo[i], hi[i] = known[k]
        elif k is not None:
            by_n.setdefault((len(x), x.dtype.str), []).append(i)
    for (n, _), idx in by_n.items():
        data = np.stack([xs[i][0] for i in idx])
        res = stats.bootstrap((data,), np.mean, axis=-1, vectorized=True, method="percentile",
                              n_resamples=n_resamples, confidence_level=0.95, rng=np.random.default_rng(seed),
                              batch=max(1, int(2e7 // (len(idx) * n))))
        scale = np.array([xs[i][1] for i in idx], dtype=float)
        lo[idx], hi[idx] = res.confidence_interval.low / scale, res.confidence_interval.high / scale
    if cache is not None:
        cache.put({keys[i]: (float(lo[i]), float(hi[i])) for idx in by_n.values() for i in idx})
    return lo, hi


def _sample_cis(agg: pd.DataFrame, samples: dict[str, SampleSummary], n_resamples: int, seed: int) -> None:
    """Bootstrap CIs over test samples of every row and metric (all rows at once, per sample size)."""
    xs, where = [], []
    for i, ids in enumerate(agg["run_ids"]):
        summaries = [samples[r] for r in ids.split(",") if r in samples]
        if len(summaries) != len(ids.split(",")):
            continue
        for m in STATS:
            xs.append(compact(per_sample(summaries, m), len(summaries)))
            where.append((i, m))
    lo, hi = batched_cis(xs, n_resamples, seed, default_ci_cache())
    for m in STATS:
        agg[f"{m}_ci_lo"], agg[f"{m}_ci_hi"] = np.nan, np.nan
    for (i, m), a, b in zip(where, lo, hi):
        agg.iat[i, agg.columns.get_loc(f"{m}_ci_lo")] = a
        agg.iat[i, agg.columns.get_loc(f"{m}_ci_hi")] = b


def _match_baseline(agg: pd.DataFrame, baseline: str) -> pd.Series:
    exact = agg["schedule"] == baseline
    if exact.any():
        return exact
    by_name = agg["schedule"].str.split("(").str[0] == baseline
    if by_name.any() and agg.loc[by_name, "schedule"].nunique() == 1:
        return by_name
    raise LeaderboardError(f"--baseline {baseline!r} is none of the schedules: {sorted(agg['schedule'].unique())}"
                           f" (give the name with its parameters when several share a name).")


def _paired_columns(agg: pd.DataFrame, keys: list[str], samples: dict, baseline: str, n_resamples: int,
                    seed: int) -> None:
    is_base = _match_baseline(agg, baseline)
    for m in ("clean", "aa", "er"):
        for suffix in ("", "_ci_lo", "_ci_hi", "_p"):
            agg[f"d_{m}{suffix}"] = np.nan
    agg["paired_note"] = ""
    setting = [k for k in keys if k != "subset"]
    for i, row in agg.iterrows():
        same = (agg[keys] == row[keys]).all(axis=1) | (agg[keys].isna() & row[keys].isna()).all(axis=1)
        base = _closest_baseline(agg[is_base & same], row)
        if is_base[i]:
            agg.loc[i, "paired_note"] = "baseline"
        elif base.empty:
            other = agg[is_base & (agg[setting] == row[setting]).all(axis=1)]
            agg.loc[i, "paired_note"] = (f"baseline evaluated on another test subset ({other['subset'].iloc[0][:12]} "
                                         f"vs {row['subset'][:12]}): no paired figure" if len(other)
                                         else "no baseline run in this group")
        else:
            _fill_paired(agg, i, row, base.iloc[0], samples, n_resamples, seed)


def _closest_baseline(base: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The baseline rows of ``row``'s group, those of the same setting (and AutoAttack count) first."""
    rank = (base["setting"] != row["setting"]).astype(int) * 2 + (base["n_aa"].fillna(-1) != (
        -1 if pd.isna(row["n_aa"]) else row["n_aa"])).astype(int)
    return base.iloc[np.argsort(rank.to_numpy(), kind="stable")]


def _fill_paired(agg, i, row, base, samples, n_resamples, seed) -> None:
    ids_s, ids_b = row["run_ids"].split(","), base["run_ids"].split(",")
    if not all(r in samples for r in ids_s + ids_b):
        agg.loc[i, "paired_note"] = "per-sample results missing: no paired figure"
        return
    for m in ("clean", "aa", "er"):
        xs, xb = per_sample([samples[r] for r in ids_s], m), per_sample([samples[r] for r in ids_b], m)
        if xs is None or xb is None:
            continue
        n = min(len(xs), len(xb))
        d, lo, hi, p = paired(xs[:n], xb[:n], n_resamples, seed)
        agg.loc[i, [f"d_{m}", f"d_{m}_ci_lo", f"d_{m}_ci_hi", f"d_{m}_p"]] = [d, lo, hi, p]
    other = "" if base["setting"] == row["setting"] else f" (another setting: {base['setting']})"
    agg.loc[i, "paired_note"] = f"paired with {base['schedule']}{other} on {len(ids_s)}+{len(ids_b)} runs"


def aggregate(ev: pd.DataFrame, keys: list[str], samples: dict[str, SampleSummary], *, metric: str = "er",
              baseline: str | None = None, n_resamples: int = 2000, seed: int = 0,
              sort: str | None = None) -> pd.DataFrame:
    """One row per (group, schedule), ranked within each group (flagged rows after unflagged ones) by
    ``sort`` (a column, ``COL`` descending or ``COL:asc``; default ``<metric>_mean`` descending)."""
    agg = _seed_table(ev, keys)
    col, _, order = (sort or f"{metric}_mean").partition(":")
    if col not in agg.columns and col not in ("d_clean", "d_aa", "d_er"):
        raise LeaderboardError(f"--sort {col!r} is not a leaderboard column; choose among "
                               f"{', '.join(c for c in agg.columns if c not in keys)}.")
    _sample_cis(agg, samples, n_resamples, seed)
    if baseline:
        _paired_columns(agg, keys, samples, baseline, n_resamples, seed)
    agg = agg.sort_values(keys + ["flagged", col], ascending=[True] * len(keys) + [True, order == "asc"],
                          na_position="last", kind="stable")
    agg.insert(len(keys), "rank", agg.groupby(keys, dropna=False, sort=False).cumcount() + 1)
    num = agg.select_dtypes("number").columns.difference(["rank", "n_seeds", "n_evals"])
    agg[num] = agg[num].round(ROUND)
    return agg.reset_index(drop=True)
