"""``rftbench report``: one self-contained static HTML page of an experiment's leaderboard.

Per group: the leaderboard table (the same frame as the JSON export), robustness curves
(accuracy against eps, one line per schedule, 95% bootstrap band over test samples), the eps
each run trained with (MLflow metric history ``train_step/eps``), clean/adversarial training
accuracy per epoch, compute cost, every sanity-check warning and provenance (configs, library
versions, weight and subset hashes, MLflow run ids and links). Figures are matplotlib PNGs
inlined as base64; the page loads nothing from the network.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .lb_export import FLOAT
from .plots import plt
from .tracking import client_for

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;
font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}h2{border-top:2px solid #333;
padding-top:.5em}img{max-width:48%;margin:4px}pre{background:#f4f4f4;padding:6px;font-size:11px;overflow:auto}
.warn{color:#a40}"""
_SELF_CHECK = """<script>window.addEventListener('load',function(){var ok=Array.prototype.every.call(
document.images,function(i){return i.complete&&i.naturalWidth>0});document.body.setAttribute(
'data-images-decoded',ok?'yes':'no');});</script>"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _record(client, run_id: str, cache: Path) -> dict[str, Any]:
    local = client.download_artifacts(run_id, "evaluation/evaluation.json", str(cache / run_id))
    return json.loads(Path(local).read_text())


def _curves_figure(sub: pd.DataFrame, samples: dict, records: dict) -> str:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for _, row in sub.iterrows():
        ids = row["run_ids"].split(",")
        grid = np.asarray(records[ids[0]]["sweep"]["eps_grid"]) * 255
        flags = np.mean([samples[r].sweep.astype(float) for r in ids if r in samples], axis=0)  # (n, G)
        acc = flags.mean(0)
        ci = stats.bootstrap((flags.T,), np.mean, axis=-1, vectorized=True, method="percentile",
                             n_resamples=1000, rng=np.random.default_rng(0)).confidence_interval
        ax.plot(grid, acc, marker="o", label=row["schedule"])
        ax.fill_between(grid, ci.low, ci.high, alpha=0.2)
    ax.set(xlabel="eps (x 1/255)", ylabel="accuracy", ylim=(0, 1), title="Robustness curves (95% CI band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _history_figures(client, runs: pd.DataFrame) -> str:
    f1, a1 = plt.subplots(figsize=(6, 4), dpi=100)
    f2, a2 = plt.subplots(figsize=(6, 4), dpi=100)
    for _, r in runs.iterrows():
        label = f"{r['schedule']} s{r['seed']}"
        eps = sorted(client.get_metric_history(r["train_run_id"], "train_step/eps"), key=lambda m: m.step)
        a1.plot([m.step for m in eps], [m.value for m in eps], label=label)
        for key, style in (("train/acc_clean", "-"), ("train/acc_adv", "--")):
            h = sorted(client.get_metric_history(r["train_run_id"], key), key=lambda m: m.step)
            a2.plot([m.step + 1 for m in h], [m.value for m in h], style, marker=".", label=f"{label} {key[6:]}")
    a1.set(xlabel="optimizer step", ylabel="eps", title="eps each run trained with (train_step/eps)")
    a2.set(xlabel="epoch", ylabel="training accuracy", title="clean (-) and adversarial (--) training accuracy")
    for a, f in ((a1, f1), (a2, f2)):
        a.grid(alpha=0.3)
        a.legend(fontsize=6)
        f.tight_layout()
    return _png(f1) + _png(f2)


def _compute_figure(sub: pd.DataFrame) -> str:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.5), dpi=100)
    names = sub["schedule"].tolist()
    a1.barh(names, sub["train_wall_s"].fillna(0))
    a1.set(xlabel="training wall time (s, mean over seeds)")
    a2.barh(names, sub["attack_passes"].fillna(0))
    a2.set(xlabel="attack forward+backward sample passes")
    for a in (a1, a2):
        a.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def _provenance(runs: pd.DataFrame, records: dict, uri: str) -> str:
    parts = []
    for _, r in runs.iterrows():
        rec = records[r["run_id"]]
        link = (f' (<a href="{html.escape(uri.rstrip("/"))}/#/experiments/{r["experiment_id"]}/runs/{r["run_id"]}">'
                f'MLflow</a>)' if uri.startswith("http") else "")
        info = {"mlflow_run": r["run_id"], "training_run": r["train_run_id"], "tracking_uri": uri,
                "weights_sha256": r["weights_sha256"], "subset_sha256": r["subset"], "n_evals": int(r["n_evals"]),
                "versions": rec.get("versions"), "config": r["params"]}
        parts.append(f"<details><summary>{html.escape(r['schedule'])} seed {html.escape(str(r['seed']))}: run "
                     f"<code>{r['run_id']}</code>{link}</summary><pre>{html.escape(json.dumps(info, indent=1))}"
                     f"</pre></details>")
    return "".join(parts)


def _warnings(runs: pd.DataFrame) -> str:
    items = [f"<li class=warn>{html.escape(r['schedule'])} seed {html.escape(str(r['seed']))}"
             f"{' (FLAGGED)' if r['flagged'] else ''}: {html.escape(w)}</li>"
             for _, r in runs.iterrows() for w in r["warnings"].split(" | ") if w]
    return f"<ul>{''.join(items)}</ul>" if items else "<p>No sanity-check warning.</p>"


def _group_section(lb: Any, key: tuple, sub: pd.DataFrame, client, records: dict) -> str:
    runs = lb.runs[lb.runs["run_id"].isin(",".join(sub["run_ids"]).split(","))]
    title = ", ".join(f"{k}={v if k != 'subset' else str(v)[:12]}" for k, v in zip(lb.group_keys, key))
    table = sub.to_html(index=False, float_format=lambda v: FLOAT % v, na_rep="", classes="leaderboard", border=0)
    return (f"<h2>{html.escape(title)}</h2><h3>Leaderboard</h3>{table}<h3>Robustness curves</h3>"
            f"{_curves_figure(sub, lb.samples, records)}<h3>Training: eps schedule and accuracy</h3>"
            f"{_history_figures(client, runs)}<h3>Compute cost</h3>{_compute_figure(sub)}"
            f"<h3>Sanity-check warnings</h3>{_warnings(runs)}<h3>Provenance</h3>{_provenance(runs, records, lb.uri)}")


def write_report(lb: Any, out: str | Path) -> Path:
    """Write the report of leaderboard ``lb`` (:func:`rftbench.leaderboard.build_leaderboard`) to ``out``."""
    import tempfile

    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    client = client_for(lb.uri)
    old = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.get_raw()
    os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = "false"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            records = {rid: _record(client, rid, Path(tmp)) for rid in lb.runs["run_id"]}
    finally:
        if old is None:
            os.environ.pop(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, None)
        else:
            os.environ[MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name] = old
    sections = [_group_section(lb, k if isinstance(k, tuple) else (k,), sub, client, records)
                for k, sub in lb.table.groupby(lb.group_keys, dropna=False, sort=False)]
    title = f"rftbench report: {', '.join(lb.experiments)}"
    page = (f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>Mean ± std over seeds, 95% "
            f"bootstrap CIs over test samples (<code>*_ci_*</code>) and t-intervals over seeds "
            f"(<code>*_seed_ci_*</code>); flagged rows never rank above unflagged ones. Tracking store: "
            f"<code>{html.escape(lb.uri)}</code>.</p>{''.join(sections)}{_SELF_CHECK}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
