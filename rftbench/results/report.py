"""``rftbench report``: one self-contained static HTML page of an experiment's leaderboard.

Per group (the leaderboard's group keys: model, dataset, threat, objective, split, ER
definition, test subset), headline first: the group's shared settings stated once, then a
compact table (schedule, seeds, clean, PGD at the target eps, AutoAttack with its certificate,
ER; each mean ± std over seeds and a 95% bootstrap CI over test samples; the leaderboard's
``differs`` note where it has one), narrow enough for a 1,400 px window. The full leaderboard
frame (the same as the JSON export, hashes shortened) sits behind a ``<details>`` fold. Then
robustness curves (accuracy against eps, 95% bootstrap band over test samples), the eps each run
trained with (MLflow metric history ``train_step/eps``), clean/adversarial training accuracy per
epoch (one colour per row, clean solid, adversarial dashed), compute cost, every sanity-check
warning and provenance (configs, library versions, full weight and subset hashes, MLflow run ids
and links). Figures are matplotlib PNGs inlined as base64; the page loads nothing from the
network.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from .export import FLOAT
from ..plots import compute_figure, plt, schedule_colours, training_accuracy_figure
from ..tracking.store import client_for

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;box-sizing:border-box}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
h2{border-top:2px solid #333;padding-top:.5em}img{max-width:100%;margin:4px;vertical-align:top}
img.half{max-width:49%}pre{background:#f4f4f4;padding:6px;font-size:11px;overflow:auto}.warn{color:#a40}
table.headline{font-size:14px;max-width:100%}table.headline td,table.headline th{padding:4px 10px}
table.headline td.name,table.headline td.note{text-align:left;overflow-wrap:anywhere;max-width:22em}
table.headline small{color:#555}p.settings{background:#f4f4f4;padding:6px 10px;max-width:100%}
details.raw{overflow-x:auto}"""
_SELF_CHECK = """<script>window.addEventListener('load',function(){var ok=Array.prototype.every.call(
document.images,function(i){return i.complete&&i.naturalWidth>0});document.body.setAttribute(
'data-images-decoded',ok?'yes':'no');});</script>"""
# a sha256 (or any long hex digest) anywhere in a cell: the headline never shows one, the fold a prefix
_HASH = re.compile(r"\b[0-9a-f]{40,64}\b")
# training settings worth stating once per group when every run of the group shares them
_SHARED_PARAMS = {"train.epochs": "epochs", "train.lr": "lr", "data.batch_size": "batch",
                  "attack.name": "training attack", "attack.steps": "attack steps",
                  "eval.autoattack.version": "AutoAttack version"}


def _png(fig, cls: str = "") -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # tight: no label is cut at the figure's edge
    plt.close(fig)
    c = f' class="{cls}"' if cls else ""
    return f'<img alt="figure"{c} src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def short_hashes(text: str, keep: int = 12) -> str:
    """``text`` with every long hex digest cut to its first ``keep`` characters and an ellipsis."""
    return _HASH.sub(lambda m: m.group(0)[:keep] + "…", text)


def _record(client, run_id: str, cache: Path) -> dict[str, Any]:
    local = client.download_artifacts(run_id, "evaluation/evaluation.json", str(cache / run_id))
    return json.loads(Path(local).read_text())


def row_labels(sub: pd.DataFrame) -> list[str]:
    """What the report calls each leaderboard row: its schedule, with the leaderboard's
    ``differs`` note in brackets where the table has one (rows of one schedule in other settings)."""
    differs = sub["differs"] if "differs" in sub.columns else pd.Series("", index=sub.index)
    return [f"{s} [{d}]" if isinstance(d, str) and d else str(s) for s, d in zip(sub["schedule"], differs)]


def _curves_figure(sub: pd.DataFrame, samples: dict, records: dict, colours: dict) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for label, (_, row) in zip(row_labels(sub), sub.iterrows()):
        ids = row["run_ids"].split(",")
        grid = np.asarray(records[ids[0]]["sweep"]["eps_grid"]) * 255
        flags = np.mean([samples[r].sweep.astype(float) for r in ids if r in samples], axis=0)  # (n, G)
        acc = flags.mean(0)
        ci = stats.bootstrap((flags.T,), np.mean, axis=-1, vectorized=True, method="percentile",
                             n_resamples=1000, rng=np.random.default_rng(0)).confidence_interval
        ax.plot(grid, acc, marker="o", label=label, color=colours[label])
        ax.fill_between(grid, ci.low, ci.high, alpha=0.2, color=colours[label])
    ax.set(xlabel="eps (x 1/255)", ylabel="accuracy", ylim=(0, 1), title="Robustness curves (95% CI band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return _png(fig, "half")


def _history(client, run_id: str, key: str) -> tuple[list[float], list[float]]:
    h = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [float(m.step) for m in h], [m.value for m in h]


def _history_figures(client, sub: pd.DataFrame, runs: pd.DataFrame, colours: dict) -> str:
    """The eps each run trained with, and clean/adversarial training accuracy per epoch
    (:func:`rftbench.plots.training_accuracy_figure`), one colour per row of ``sub``."""
    train_of = dict(zip(runs["run_id"], runs["train_run_id"]))
    f1, a1 = plt.subplots(figsize=(7, 4.5), dpi=100)
    series: dict[str, list] = {}
    for label, ids in zip(row_labels(sub), sub["run_ids"]):
        series[label] = []
        for i, rid in enumerate(r for r in ids.split(",") if r in train_of):
            steps, eps = _history(client, train_of[rid], "train_step/eps")
            a1.plot(steps, eps, color=colours[label], label=label if i == 0 else "_nolegend_")
            e, clean = _history(client, train_of[rid], "train/acc_clean")
            e_adv, adv = _history(client, train_of[rid], "train/acc_adv")  # no value in an unattacked epoch
            series[label].append(([x + 1 for x in e], clean, [x + 1 for x in e_adv], adv))
    a1.set(xlabel="optimizer step", ylabel="eps", title="eps each run trained with (train_step/eps)")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=9)
    f1.tight_layout()
    return _png(f1, "half") + _png(training_accuracy_figure(series, colours))


def _num(v: Any) -> str:
    return "–" if v is None or v != v else f"{v:.4f}"


def _ci_cell(row: pd.Series, m: str) -> str:
    """mean ± std over seeds, and below it the 95% bootstrap CI over test samples."""
    mean = row[f"{m}_mean"]
    if mean != mean:
        return "<td>–</td>"
    std = f" ± {_num(row[f'{m}_std'])}" if row["n_seeds"] >= 2 else ""
    return (f"<td>{_num(mean)}{std}<br><small>[{_num(row[f'{m}_ci_lo'])}, {_num(row[f'{m}_ci_hi'])}]"
            f"</small></td>")


def _certificate(row: pd.Series, versions: set[str]) -> str:
    """What the AutoAttack number is: certified (standard, whole designated subset, target eps,
    no failed check) or not, with the samples attacked out of the evaluated ones."""
    n_aa, n = row["n_aa"], row["n_samples"]
    count = f"n={int(n_aa) if n_aa == n_aa else 0} of {int(n) if n == n else '?'}"
    version = "/".join(sorted(versions)) or "?"
    if row["certified"]:
        return f"✓ certified: {version}, full subset, {count}"
    why = "checks failed" if row["flagged"] else ("subset only" if n_aa == n_aa and n == n and n_aa < n
                                                   else "not certified")
    return f"{why}: {version}, {count}"


def headline_table(sub: pd.DataFrame, runs: pd.DataFrame | None = None) -> str:
    """The compact table of one group: one row per leaderboard row (``sub``, a slice of
    :attr:`Leaderboard.table`); ``runs`` (:attr:`Leaderboard.runs`) supplies the AutoAttack version."""
    version_of = {} if runs is None else {r: p.get("eval.autoattack.version", "") for r, p in
                                          zip(runs["run_id"], runs["params"])}
    has_differs = "differs" in sub.columns and any(isinstance(d, str) and d for d in sub["differs"])
    head = ["#", "schedule", "seeds", "clean", "PGD @ target ε", "AutoAttack @ target ε", "ER"]
    head += ["differs"] * has_differs + ["notes"]
    body = []
    for _, row in sub.iterrows():
        versions = {version_of.get(r, "") for r in row["run_ids"].split(",")} - {""}
        cells = [f"<td>{row['rank']}</td>", f"<td class=name>{html.escape(str(row['schedule']))}</td>",
                 f"<td>{row['n_seeds']}<br><small>({html.escape(str(row['seeds']))})</small></td>"]
        cells += [_ci_cell(row, m) for m in ("clean", "pgd")]
        cells.append(_ci_cell(row, "aa").replace("</td>", f"<br><small>{html.escape(_certificate(row, versions))}"
                                                          f"</small></td>") if row["aa_mean"] == row["aa_mean"]
                     else "<td>–<br><small>not run</small></td>")
        cells.append(_ci_cell(row, "er"))
        if has_differs:
            d = row["differs"]
            cells.append(f"<td class=note>{html.escape(d if isinstance(d, str) else '')}</td>")
        n_warn = len([w for w in str(row["warnings"]).split(" | ") if w])
        note = ("FLAGGED " if row["flagged"] else "") + (f"⚠ {n_warn} warning(s)" if n_warn else "")
        cells.append(f"<td class=note>{html.escape(note)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (f"<table class=headline><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _setting_value(key: str, value: Any) -> str:
    if key == "eps" and isinstance(value, float) and value == value:
        return f"{value:.4g} ({value * 255:.3g}/255)"
    return short_hashes(str(value))


def shared_settings(keys: list[str], values: tuple, runs: pd.DataFrame) -> str:
    """The group's settings stated once: its group keys, the training settings every run of the
    group shares (:data:`_SHARED_PARAMS`), and those that vary between its runs."""
    parts = [f"{k}: <b>{html.escape(_setting_value(k, v))}</b>" for k, v in zip(keys, values)]
    varying = []
    for key, name in _SHARED_PARAMS.items():
        vals = {p.get(key) for p in runs["params"]} - {None}
        if len(vals) == 1:
            parts.append(f"{name}: <b>{html.escape(vals.pop())}</b>")
        elif vals:
            varying.append(key)
    n = sorted({int(x) for x in runs["n_samples"] if x == x})
    if n:
        parts.append(f"test samples: <b>{'/'.join(map(str, n))}</b>")
    text = "Shared settings: " + "; ".join(parts) + "."
    if varying:
        text += f" Varies between rows: {html.escape(', '.join(varying))} (see <i>differs</i>)."
    return f"<p class=settings>{text}</p>"


def _raw_table(sub: pd.DataFrame) -> str:
    """The full leaderboard frame of a group (every column of the JSON export), hashes shortened."""
    table = sub.to_html(index=False, float_format=lambda v: FLOAT % v, na_rep="", classes="leaderboard", border=0)
    return (f"<details class=raw><summary>Full leaderboard table ({sub.shape[1]} columns; full hashes in "
            f"Provenance and in <code>rftbench leaderboard --format json</code>)</summary>"
            f"{short_hashes(table)}</details>")


def _compute(sub: pd.DataFrame, colours: dict) -> str:
    labels = row_labels(sub)
    return _png(compute_figure(labels, sub["train_wall_s"].tolist(), sub["attack_passes"].tolist(), colours))


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
    title = ", ".join(f"{k}={_setting_value(k, v)}" for k, v in zip(lb.group_keys, key))
    colours = schedule_colours(row_labels(sub))
    return (f"<section class=group><h2>{html.escape(title)}</h2>{shared_settings(lb.group_keys, key, runs)}"
            f"{headline_table(sub, runs)}{_raw_table(sub)}<h3>Robustness curves and the eps trained with</h3>"
            f"{_curves_figure(sub, lb.samples, records, colours)}{_history_figures(client, sub, runs, colours)}"
            f"<h3>Compute cost</h3>{_compute(sub, colours)}"
            f"<h3>Sanity-check warnings</h3>{_warnings(runs)}<h3>Provenance</h3>{_provenance(runs, records, lb.uri)}"
            f"</section>")


def write_report(lb: Any, out: str | Path) -> Path:
    """Write the report of leaderboard ``lb`` (:func:`rftbench.results.leaderboard.build_leaderboard`) to ``out``."""
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
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1><p>Headline cells: mean ± std over "
            f"seeds, below it [95% bootstrap CI over test samples]; the full tables add t-intervals over "
            f"seeds (<code>*_seed_ci_*</code>). AutoAttack is certified when it is AutoAttack standard on "
            f"the whole designated test subset at the target eps with no failed sanity check. Flagged rows "
            f"never rank above unflagged ones. Tracking store: "
            f"<code>{html.escape(lb.uri)}</code>.</p>{''.join(sections)}{_SELF_CHECK}</body></html>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out
