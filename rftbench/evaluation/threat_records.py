"""The record's ``threats`` section, computed from per-sample arrays like the rest of the record:
per norm threat its curve, ER, AutoAttack at its target with its own checks and ``certified``;
the **union** worst case (a sample counts only if robust under every norm threat at its target);
per corruption and severity the accuracy, their mean and the mean relative to clean accuracy.

Per-sample parts (``SampleResults.threats``): a norm threat ``{sweep_flags (n, grid), probe_raw,
probe_large, aa_broken_by (n_aa,), aa_attacks, aa_n_target_classes, aa_library_warnings}``; the
corruptions ``{flags (n, corruptions x severities), block_sha256: [one per block]}``.
"""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Callable, Optional

import numpy as np

_SCALARS = ("aa_attacks", "aa_n_target_classes")


def _target_column(grid: list[float], eps: float) -> int:
    return max(i for i, e in enumerate(grid) if e <= eps + 1e-12)


def _norm_samples(s, part: dict[str, Any]):
    """A SampleResults of one threat's per-sample arrays (same indices and labels as ``s``)."""
    return type(s)(start=s.start, indices=s.indices, labels=s.labels, sweep_flags=part["sweep_flags"],
                   aa_broken_by=part["aa_broken_by"], ta_flags=None, probe_raw=part["probe_raw"],
                   probe_large=part["probe_large"], aa_attacks=list(part.get("aa_attacks") or []),
                   aa_n_target_classes=part.get("aa_n_target_classes"),
                   aa_library_warnings=list(part.get("aa_library_warnings") or []))


def _norm_threat(meta: dict[str, Any], s, entry: dict[str, Any], primary: dict[str, Any],
                 numbers: Callable) -> tuple[dict[str, Any], np.ndarray, Optional[np.ndarray]]:
    """One norm threat's summary, its per-sample robustness at the target under the sweep (n,)
    and under AutoAttack (n_aa,) or None."""
    if entry["primary"]:
        num, ts = primary, s
    else:
        ts = _norm_samples(s, s.threats[entry["key"]])
        st = {k: entry[k] for k in ("eps_grid", "distribution", "sweep", "batch_size", "autoattack", "checks")}
        tmeta = {**meta, "settings": st, "threat_model": {"norm": entry["norm"], "target_eps": entry["eps"]}}
        num = numbers(tmeta, ts, clean_checks=False)
    j = _target_column(num["sweep"]["eps_grid"], entry["eps"])
    aa = (ts.aa_broken_by == 0) if num["autoattack"] is not None else None
    out = {"norm": entry["norm"], "eps": entry["eps"], "primary": entry["primary"],
           **{k: copy.deepcopy(num[k]) for k in ("clean_accuracy", "sweep", "expected_robustness", "autoattack",
                                                 "certified", "flagged", "checks", "warnings")}}
    return out, ts.sweep_flags[:, j], aa


def _union(sweep: dict[str, np.ndarray], aa: dict[str, Optional[np.ndarray]], attacks: dict[str, str]) -> dict:
    """Robust under every norm threat at its target: the AND of the per-threat flags."""
    keys = list(sweep)
    both = np.logical_and.reduce([sweep[k] for k in keys]) if keys else np.zeros(0, bool)
    out: dict[str, Any] = {"threats": keys, "rule": "robust at every norm threat's target eps (AND per sample)",
                           "sweep": {"accuracy": float(both.mean()) if len(both) else float("nan"), "n": int(len(both)),
                                     "attacks": attacks},
                           "autoattack": None}
    if keys and all(aa[k] is not None for k in keys):
        m = min(len(aa[k]) for k in keys)
        flags = np.logical_and.reduce([aa[k][:m] for k in keys])
        out["autoattack"] = {"accuracy": float(flags.mean()) if m else float("nan"), "n": int(m)}
    return out


def _corruptions(entry: dict[str, Any], part: dict[str, Any], clean: float) -> dict[str, Any]:
    """Accuracy per corruption and severity, means, relative to clean, and the content hash."""
    flags = np.asarray(part["flags"], bool)
    pairs = [(c, sv) for c in entry["corruptions"] for sv in entry["severities"]]
    acc = flags.mean(0) if len(flags) else np.full(len(pairs), np.nan)
    table: dict[str, dict[str, float]] = {}
    for (c, sv), a in zip(pairs, acc):
        table.setdefault(c, {})[str(sv)] = float(a)
    mean = float(np.mean(acc)) if len(pairs) else float("nan")
    sev = {str(sv): float(np.mean([table[c][str(sv)] for c in entry["corruptions"]])) for sv in entry["severities"]}
    digest = hashlib.sha256("".join(part["block_sha256"]).encode()).hexdigest()
    return {"accuracy": table, "mean_accuracy": mean, "mean_per_severity": sev,
            "mean_per_corruption": {c: float(np.mean(list(v.values()))) for c, v in table.items()},
            "relative_to_clean": mean / clean if clean else float("nan"), "clean_accuracy": clean,
            "n_samples": int(len(flags)), "content_sha256": digest,
            **{k: entry[k] for k in ("library", "seeds", "seed", "images", "severities")}}


def summarize_threats(meta: dict[str, Any], s, primary: dict[str, Any], numbers: Callable) -> dict[str, Any]:
    """The ``threats`` section from ``meta["settings"]["threats"]`` and the per-sample results
    ``s``; ``primary``: the training threat's numbers; ``numbers``: records.threat_numbers."""
    st = meta["settings"]["threats"]
    norms: dict[str, Any] = {}
    sweep, aa, attacks = {}, {}, {}
    corr = None
    warnings = [f"threats: {w}" for w in st.get("warnings", [])]
    for entry in st["list"]:
        if "corruptions" in entry:
            corr = _corruptions(entry, s.threats[entry["key"]], primary["clean_accuracy"])
            continue
        summary, sweep[entry["key"]], aa[entry["key"]] = _norm_threat(meta, s, entry, primary, numbers)
        attacks[entry["key"]] = summary["expected_robustness"]["attack"]
        norms[entry["key"]] = summary
        warnings += [f"threat {entry['key']}: {w}" for w in summary["warnings"] if not entry["primary"]]
    return {"training": f"{meta['threat_model']['norm']}:{meta['threat_model']['target_eps']:.6g}",
            "norms": norms, "union": _union(sweep, aa, attacks) if norms else None, "corruptions": corr,
            "warnings": warnings}


def concat_threats(parts: list[Optional[dict[str, dict[str, Any]]]]) -> Optional[dict[str, dict[str, Any]]]:
    """The per-threat per-sample parts of consecutive blocks or shards as one."""
    if not parts or any(p is None for p in parts):
        return None
    out: dict[str, dict[str, Any]] = {}
    for key in parts[0]:
        pieces = [p[key] for p in parts]
        merged: dict[str, Any] = {}
        for f, v in pieces[0].items():
            vals = [q.get(f) for q in pieces]
            if isinstance(v, np.ndarray):
                merged[f] = np.concatenate(vals)
            elif f in _SCALARS:
                merged[f] = next((x for x in vals if x), v)
            else:  # lists: block hashes, library warnings
                merged[f] = [x for lst in vals for x in (lst or [])]
        if "aa_library_warnings" in merged:
            merged["aa_library_warnings"] = list(dict.fromkeys(merged["aa_library_warnings"]))
        out[key] = merged
    return out


def metric_key(key: str) -> str:
    """A threat key as it goes into MLflow metric names: ``L2:1`` -> ``L2_1``."""
    return key.replace(":", "_")


def threat_metrics(th: dict[str, Any]) -> dict[str, float]:
    """The ``threats`` section's numbers under MLflow metric names ``eval/threats/<key>/...``."""
    out: dict[str, float] = {}
    for key, v in th["norms"].items():
        p = f"eval/threats/{metric_key(key)}/"
        j = _target_column(v["sweep"]["eps_grid"], v["eps"])
        out[p + "acc_sweep"] = v["sweep"]["accuracy"][j]
        out[p + "expected_robustness"] = v["expected_robustness"]["value"]
        if v["autoattack"] is not None:
            out[p + "acc_autoattack"] = v["autoattack"]["accuracy"]
    if th.get("union"):
        out["eval/threats/union/acc_sweep"] = th["union"]["sweep"]["accuracy"]
        if th["union"]["autoattack"] is not None:
            out["eval/threats/union/acc_autoattack"] = th["union"]["autoattack"]["accuracy"]
    corr = th.get("corruptions")
    if corr:
        out["eval/threats/corruptions/mean_accuracy"] = corr["mean_accuracy"]
        out["eval/threats/corruptions/relative_to_clean"] = corr["relative_to_clean"]
        for name, row in corr["accuracy"].items():
            for sev, a in row.items():
                out[f"eval/threats/corruptions/{name}_s{sev}"] = a
    return out


def _without_seeds(d: Any) -> Any:
    """A definition without its ``seed`` keys: seeds are averaged over, not separate definitions."""
    if isinstance(d, dict):
        return {k: _without_seeds(v) for k, v in d.items() if k != "seed"}
    return d


def threat_definitions(record_data: dict[str, Any]) -> dict[str, str]:
    """Per threat key (and ``union``, ``corruptions``), a digest of its definition (settings):
    numbers of one key are comparable across runs only where the digests are equal."""
    entries = [_without_seeds(e) for e in record_data["settings"]["threats"]["list"]]
    out = {e["key"]: hashlib.sha256(json.dumps(e, sort_keys=True).encode()).hexdigest()[:12] for e in entries}
    norms = sorted(v for k, v in out.items() if k != "corruptions")
    if norms:
        out["union"] = hashlib.sha256("|".join(norms).encode()).hexdigest()[:12]
    return out
