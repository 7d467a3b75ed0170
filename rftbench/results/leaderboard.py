"""The leaderboard of schedules, built from MLflow alone.

Finished runs of one or more experiments are read into a pandas frame (``MlflowClient``
paging), one row per evaluated run; evaluation runs of a trained model (re-evaluations, merged
shard evaluations, which may carry no params at all) are linked to its training run by the
weights hash (``rftbench.weights_sha256``) and take that run's identity and params (their own
``eval.*`` params are kept), so ``--where train.epochs=10`` finds them; runs of the same setting,
seed and evaluation protocol keep only their latest evaluation (older ones count in ``n_evals``).

**A row is one setting.** Seeds are averaged only over runs whose resolved configs are equal
except for the seed: the ``setting`` of a run is a hash of its params without the seed, without
the keys that do not change what is computed (:data:`_NOT_IDENTITY`: names, paths, logging,
device, threads, tracking) and without the schedule's name and parameters (the ``schedule``
column) and ``eval.*`` (the evaluation's identity, below). An evaluation that cannot be linked
to a training run has the setting ``weights:<hash>`` (different weights are never averaged).
The evaluation's identity is the split, the ER definition (grid, distribution, attack), the test
subset hash and the AutoAttack sample count ``n_aa``: AutoAttack numbers over different sample
counts or subsets are never averaged. Subsets (and split, ER definition) separate groups, since
no number is comparable across them; ``n_aa`` separates rows within a group (clean, PGD and ER
on the same subset stay comparable, only the AutoAttack column is over another prefix), as a
differing training key does. Rows of one group whose settings differ carry ``differs``: for
each key that varies within the group, the row's own value, then `` vs `` the other values
of the same schedule's rows, e.g. ``train.epochs 20 vs 2; n_aa 100 vs 10``.

Runs are grouped by setting (``group_by``, default model, dataset, norm, target eps, objective,
fine-tuning regime)
and always by what makes numbers comparable (split, ER definition, test subset hash), then
aggregated to one row per schedule (name + parameters) and setting: mean, std and n over seeds, a 95%
bootstrap CI over test samples (:mod:`rftbench.results.stats`), a 95% t-interval over seeds where
n >= 2, compute, and with ``baseline`` a paired difference per schedule. Within a group a
flagged row never ranks above an unflagged one.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import LeaderboardError
from ..evaluation.sample_summary import TAG as SAMPLE_TAG, SampleSummary, decode
from ..tracking.conventions import THREATS_TAG
from ..tracking.store import client_for
from .threat_columns import add_threat_columns, select_threat, split_metric

METRICS = {"clean": "acc_clean", "pgd": "acc_sweep", "aa": "acc_autoattack", "er": "expected_robustness"}
DEFAULT_GROUP_BY = ("model", "dataset", "norm", "eps", "objective", "regime")
COMPARABLE = ("split", "er_name", "subset")
# config keys that do not change what a run computes (as rftbench.training.state.RESUME_MAY_DIFFER,
# plus MLflow model logging and the thread count); eval.* is the evaluation's identity instead
_NOT_IDENTITY = {"name", "experiment", "output_dir", "plugins", "search", "train.progress", "train.log_every",
                 "train.log_mlflow_model", "train.checkpoint_every", "train.checkpoint_every_steps", "train.device",
                 "train.threads", "train.val_every", "train.val_samples", "data.num_workers", "data.eval_batch_size",
                 "data.root", "data.download"}
_NOT_IDENTITY_PREFIXES = ("tracking.", "eval.", "schedule.params.")
_NOT_SETTING = {"seed", "schedule.name"}
EVAL_IDENTITY = ("split", "er_name", "subset", "n_aa")
TRAINING_KINDS = {"experiment", "trial", "sweep"}


@dataclass
class Leaderboard:
    """``table``: one row per (group, schedule); ``runs``: the evaluated runs behind it."""

    table: pd.DataFrame
    runs: pd.DataFrame
    group_keys: list[str]
    samples: dict[str, SampleSummary] = field(default_factory=dict)
    experiments: list[str] = field(default_factory=list)
    uri: str = ""
    settings: dict[str, dict[str, str]] = field(default_factory=dict)  # setting hash -> its params


def _experiment_ids(client, experiments: Sequence[str]) -> list[str]:
    ids = []
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            known = [e.name for e in client.search_experiments()]
            raise LeaderboardError(f"no MLflow experiment named {name!r} at {client.tracking_uri}. "
                                   f"Known experiments: {', '.join(known) or '(none)'}.")
        ids.append(exp.experiment_id)
    return ids


def search_all(client, exp_ids: list[str]) -> list[Any]:
    """Every finished run of ``exp_ids`` (MLflow's paging)."""
    runs, token = [], None
    while True:
        page = client.search_runs(exp_ids, filter_string="attributes.status = 'FINISHED'", max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _label(name: str, params: dict[str, str]) -> str:
    inner = ", ".join(f"{k}={params[k]}" for k in sorted(params))
    return f"{name}({inner})" if inner else name


def _regime_label(p: dict[str, str]) -> str:
    """A run's fine-tuning regime from its params (runs from before regimes: ``model.finetune``)."""
    name = p.get("model.regime.name") or p.get("model.finetune") or "full"
    return _label(name, _prefixed(p, "model.regime.params."))


def _prefixed(p: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix):]: v for k, v in p.items() if k.startswith(prefix)}


def _split_of(p: dict, m: dict, t: dict) -> str | None:
    if "rftbench.split" in t:
        return t["rftbench.split"]
    return p.get("eval.split", "test") if "eval/expected_robustness" in m else None


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _run_row(r: Any) -> dict[str, Any]:
    """One run as the leaderboard's flat record (identity, evaluation, compute)."""
    p, m, t = r.data.params, r.data.metrics, r.data.tags
    split = _split_of(p, m, t)
    pre = "eval" if split in (None, "test") else ("val" if split == "val" else f"eval_{split}")
    n_warn = m.get(f"{pre}/n_warnings", 0.0)
    flagged = t["rftbench.flagged"] in ("True", "true", "1") if "rftbench.flagged" in t else n_warn > 0
    ident = setting_params(p)
    steps, batch = _float(p.get("attack.steps")), _float(p.get("data.batch_size"))
    return {
        "run_id": r.info.run_id, "run_name": r.info.run_name or "", "experiment_id": r.info.experiment_id,
        "end_time": r.info.end_time or 0, "kind": t.get("rftbench.kind", ""),
        "model": t.get("rftbench.model", p.get("model.name", "?")), "dataset": t.get("rftbench.dataset", "?"),
        "norm": t.get("rftbench.norm", p.get("threat.norm", "?")),
        "eps": _float(t.get("rftbench.eps", p.get("threat.eps"))),
        "objective": _label(p.get("train.objective.name", "?"), _prefixed(p, "train.objective.params.")),
        "schedule": _label(t.get("rftbench.schedule", p.get("schedule.name", "?")), _prefixed(p, "schedule.params.")),
        "regime": t.get("rftbench.regime") or _regime_label(p),
        "trainable_params": _float(t.get("rftbench.trainable_params")),
        "seed": p.get("seed", "?"), "split": split, "er_name": t.get("rftbench.er_name", "?"),
        "subset": t.get("rftbench.subset_sha256", "?"), "weights_sha256": t.get("rftbench.weights_sha256", ""),
        "setting": _digest(ident), "config_sha256": _digest({**ident, "seed": p.get("seed"),
                                                             **{k: v for k, v in p.items() if k.startswith("schedule.")}}),
        **{k: m.get(f"{pre}/{v}", np.nan) for k, v in METRICS.items()},
        "evaluated": split is not None and f"{pre}/expected_robustness" in m,
        "certified": t.get("rftbench.certified") == "True", "flagged": bool(flagged), "n_warnings": n_warn,
        "warnings": t.get("rftbench.warnings", ""), "n_samples": m.get(f"{pre}/n_samples", np.nan),
        "n_aa": _float(t.get("rftbench.n_aa")), "per_sample": t.get(SAMPLE_TAG),
        "threats_tag": t.get(THREATS_TAG, ""),
        "threat_metrics": {k[len(pre) + 9:]: v for k, v in m.items() if k.startswith(f"{pre}/threats/")},
        "train_wall_s": m.get("train/wall_time_s", np.nan), "attack_fraction": m.get("train/attack_fraction", np.nan),
        "attack_passes": m.get("train/attack_steps", np.nan) * steps * batch,
        "params": p,
    }


def setting_params(p: dict[str, str]) -> dict[str, str]:
    """The params of a run that make its setting: all but the seed, the schedule's name and
    parameters, ``eval.*`` and the keys that do not change what is computed (module docstring)."""
    return {k: v for k, v in p.items() if k not in _NOT_IDENTITY and k not in _NOT_SETTING
            and not k.startswith(_NOT_IDENTITY_PREFIXES)}


def _digest(d: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


_LINKED = ("model", "objective", "schedule", "regime", "trainable_params", "seed", "setting", "config_sha256",
           "train_wall_s", "attack_fraction", "attack_passes")


def _inherit_params(ev_params: dict[str, str], train_params: dict[str, str]) -> dict[str, str]:
    """An evaluation's params for matching: its training run's, with the evaluation's own ``eval.*``."""
    own = {k: v for k, v in ev_params.items() if k.startswith("eval.")}
    return {**{k: v for k, v in train_params.items() if not k.startswith("eval.")}, **own}


def link_and_dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """Evaluations take their training run's identity and params (by weights hash); the latest
    evaluation of each (identity with seed, evaluation identity, threat) wins, the others are counted."""
    trained = frame[frame["kind"].isin(TRAINING_KINDS) & (frame["weights_sha256"] != "")]
    trained = trained.sort_values("end_time").drop_duplicates("weights_sha256", keep="last").set_index("weights_sha256")
    ev = frame[frame["evaluated"]].copy()
    is_eval = ~ev["kind"].isin(TRAINING_KINDS)
    link = is_eval & ev["weights_sha256"].isin(trained.index)
    ev["train_run_id"] = ev["run_id"]
    if link.any():
        for col in _LINKED + ("run_id",):
            ev.loc[link, "train_run_id" if col == "run_id" else col] = \
                ev.loc[link, "weights_sha256"].map(trained[col]).values
        sha = ev.loc[link, "weights_sha256"]
        ev.loc[link, "params"] = pd.Series([_inherit_params(p, trained.at[w, "params"]) for p, w in
                                            zip(ev.loc[link, "params"], sha)], index=sha.index, dtype=object)
    unlinked = is_eval & ~link
    if unlinked.any():
        for col in ("config_sha256", "setting"):
            ev.loc[unlinked, col] = "weights:" + ev.loc[unlinked, "weights_sha256"].str[:16]
    key = ["config_sha256", *EVAL_IDENTITY, "norm", "eps"]
    ev = ev.sort_values("end_time")
    ev["n_evals"] = ev.groupby(key, dropna=False)["run_id"].transform("size")
    return ev.drop_duplicates(key, keep="last").reset_index(drop=True)


def _apply_where(ev: pd.DataFrame, where: Sequence[str]) -> pd.DataFrame:
    for clause in where:
        if "=" not in clause:
            raise LeaderboardError(f"--where {clause!r}: write KEY=GLOB, e.g. --where schedule='linear*'.")
        key, glob = clause.split("=", 1)
        if key in ev.columns and key != "params":
            values = ev[key].astype(str)
        elif any(key in p for p in ev["params"]):
            values = ev["params"].map(lambda p: str(p.get(key, "")))
        else:
            raise LeaderboardError(f"--where {key!r}: not a leaderboard column or run parameter. Columns: "
                                   f"{', '.join(c for c in ev.columns if c != 'params')}; or a config key "
                                   f"such as train.epochs.")
        ev = ev[values.map(lambda v: fnmatch.fnmatchcase(v, glob))]
    return ev


def _check_group_by(group_by: Sequence[str], ev: pd.DataFrame) -> list[str]:
    allowed = [c for c in ev.columns if c not in ("params", "per_sample")] if len(ev) else list(DEFAULT_GROUP_BY)
    bad = [g for g in group_by if g not in allowed]
    if bad:
        raise LeaderboardError(f"unknown --group-by key(s) {bad}; choose among {', '.join(allowed)}.")
    return [g for g in group_by if g not in COMPARABLE]


def load_evaluated(experiments: Sequence[str], *, uri: str | None = None, include_val: bool = False,
                   where: Sequence[str] = ()) -> tuple[pd.DataFrame, str]:
    """The deduplicated evaluated runs of ``experiments`` as a frame, and the tracking URI."""
    client = client_for(uri)
    runs = search_all(client, _experiment_ids(client, experiments))
    frame = pd.DataFrame([_run_row(r) for r in runs])
    if frame.empty or not frame["evaluated"].any():
        raise LeaderboardError(f"experiment(s) {', '.join(experiments)} hold no finished run with an evaluation "
                               f"record ({len(runs)} finished runs). Train with evaluation (rftbench train "
                               f"CONFIG) or evaluate a model (rftbench evaluate CONFIG).")
    ev = link_and_dedupe(frame)
    if not include_val:
        ev = ev[ev["split"] == "test"]
        if ev.empty:
            raise LeaderboardError("every evaluated run was scored on the validation split (search trials); "
                                   "add --include-val to rank them.")
    ev = _apply_where(ev, where)
    if ev.empty:
        raise LeaderboardError(f"no evaluated run matches --where {' '.join(where)}.")
    return ev.reset_index(drop=True), client.tracking_uri


def build_leaderboard(experiments: Sequence[str] | str, *, uri: str | None = None,
                      group_by: Sequence[str] = DEFAULT_GROUP_BY, where: Sequence[str] = (),
                      include_val: bool = False, metric: str = "er", baseline: str | None = None,
                      seed_ci: bool = False, n_resamples: int = 2000, seed: int = 0,
                      sort: str | None = None, threat: str | None = None) -> Leaderboard:
    """The leaderboard of ``experiments`` (see the module docstring). ``metric``: clean, pgd, aa or
    er, the ranking key (``aa@L2:1``: of that threat); ``threat``: a threat of ``eval.threats``
    whose numbers fill the pgd / aa / er columns (:mod:`rftbench.results.threat_columns`);
    ``seed_ci``: require n >= 2 seeds in every row (else an error)."""
    from .stats import aggregate

    experiments = [experiments] if isinstance(experiments, str) else list(experiments)
    metric, at = split_metric(metric)
    threat = threat or at
    if metric not in METRICS:
        raise LeaderboardError(f"unknown --metric {metric!r}; choose among {', '.join(METRICS)} (or METRIC@THREAT).")
    ev, tracking_uri = load_evaluated(experiments, uri=uri, include_val=include_val, where=where)
    keys = _check_group_by(group_by, ev) + list(COMPARABLE)
    samples: dict[str, SampleSummary] = {}
    if threat:
        ev = select_threat(ev, threat)
    else:
        samples = {rid: decode(s) for rid, s in zip(ev["run_id"], ev["per_sample"]) if isinstance(s, str)}
        _fill_missing_samples(ev, samples, tracking_uri)
    table = aggregate(ev, keys, samples, metric=metric, baseline=baseline, n_resamples=n_resamples, seed=seed,
                      sort=sort)
    settings = settings_of(ev)
    table.insert(table.columns.get_loc("n_aa") + 1, "differs", differs_column(table, keys, settings))
    if not threat:
        table = add_threat_columns(table, ev, keys)
    if seed_ci and (table["n_seeds"] < 2).any():
        few = table.loc[table["n_seeds"] < 2, "schedule"].tolist()
        raise LeaderboardError(f"a seed CI needs at least 2 seeds per row; {few} have 1. Train more seeds "
                               f"(seed: in the config) or drop --seed-ci.")
    return Leaderboard(table, ev, keys, samples, experiments, tracking_uri, settings)


def settings_of(ev: pd.DataFrame) -> dict[str, dict[str, str]]:
    """Each setting's params (:func:`setting_params`; an unlinked evaluation's also name its weights)."""
    out: dict[str, dict[str, str]] = {}
    for st, p, w in zip(ev["setting"], ev["params"], ev["weights_sha256"]):
        if st not in out:
            out[st] = {**setting_params(p), **({"weights": w[:12]} if st.startswith("weights:") else {})}
    return out


def _text(v: Any) -> str:
    if isinstance(v, float):
        return "(none)" if np.isnan(v) else (f"{int(v)}" if v.is_integer() else f"{v:g}")
    s = str(v)
    return s if len(s) <= 40 else s[:39] + "…"


def _order(v: str) -> tuple:
    f = _float(v)
    return (1, 0.0, v) if np.isnan(f) else (0, f, v)


def differs_column(table: pd.DataFrame, keys: list[str], settings: dict[str, dict[str, str]]) -> pd.Series:
    """Per row, the keys that vary between the rows of its group: its own value, then `` vs `` the
    values of the same schedule's other rows (``train.epochs 20 vs 2; n_aa 100 vs 10``); empty
    where every row of the group has one setting and AutoAttack count."""
    out = pd.Series("", index=table.index, dtype=object)
    for _, sub in table.groupby(keys, dropna=False, sort=False):
        if sub["setting"].nunique() < 2 and sub["n_aa"].nunique(dropna=False) < 2:
            continue
        frame = pd.DataFrame([settings.get(st, {}) for st in sub["setting"]], index=sub.index).fillna("(unset)")
        frame = frame.map(_text).assign(n_aa=sub["n_aa"].map(_text))
        varying = [c for c in sorted(frame.columns, key=lambda c: (c == "n_aa", c)) if frame[c].nunique() > 1]
        for i in sub.index:
            same = frame.loc[sub["schedule"] == sub.at[i, "schedule"]]
            parts = []
            for c in varying:
                others = sorted(set(same[c]) - {frame.at[i, c]}, key=_order)
                parts.append(f"{c} {frame.at[i, c]}" + (f" vs {', '.join(others)}" if others else ""))
            out[i] = "; ".join(parts)
    return out


def _fill_missing_samples(ev: pd.DataFrame, samples: dict[str, SampleSummary], uri: str) -> None:
    """Runs without the summary tag (older runs, huge subsets): read the record artifact, cached on
    disk under the rftbench cache by run id."""
    missing = [rid for rid in ev["run_id"] if rid not in samples]
    if not missing:
        return
    from ..paths import cache_dir
    from ..evaluation.records import EvaluationRecord
    from ..evaluation.sample_summary import encode, summary_of_record

    client = client_for(uri)
    cache = cache_dir() / "leaderboard"
    cache.mkdir(parents=True, exist_ok=True)
    for rid in missing:
        f = cache / f"{rid}.json"
        if not f.is_file():
            try:
                local = client.download_artifacts(rid, "evaluation/evaluation.json", str(cache / "tmp"))
            except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
                raise LeaderboardError(f"run {rid} has evaluation metrics but no readable record "
                                       f"evaluation/evaluation.json ({exc}); re-evaluate it.") from None
            f.write_text(encode(summary_of_record(EvaluationRecord.load(local))))
        samples[rid] = decode(f.read_text())
