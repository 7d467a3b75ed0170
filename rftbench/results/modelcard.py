"""``rftbench export model-card RUN_ID --out DIR``: a run's weights and a RobustBench model card.

DIR receives ``model.safetensors`` (+ ``model.safetensors.json``, the architecture spec) and
``model_info.json`` with the fields of RobustBench's ``ModelInfo`` (robustbench.utils) filled
from the run's evaluation record: clean and AutoAttack accuracy (percent, as RobustBench lists
them), eps, threat model, dataset, architecture, number of forward passes per prediction (1: a
plain classifier), additional data, footnote. Only a run whose AutoAttack is certified (standard
version on the whole designated test subset, every check passed) gets a card.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import LeaderboardError
from ..tracking.store import client_for

MODEL_INFO_FIELDS = ("link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                     "architecture", "eps", "clean_acc", "reported", "corruptions_acc", "corruptions_acc_3d",
                     "corruptions_mce", "corruptions_mce_3d", "autoattack_acc", "footnote")


def _weights_run(client, run) -> Any:
    """The run holding the weights: this one, or the training run with the same weights hash."""
    if any(a.path == "model" for a in client.list_artifacts(run.info.run_id)):
        return run
    sha = run.data.tags.get("rftbench.weights_sha256", "")
    found = client.search_runs([run.info.experiment_id], f"tags.`rftbench.weights_sha256` = '{sha}'") if sha else []
    for r in found:
        if any(a.path == "model" for a in client.list_artifacts(r.info.run_id)):
            return r
    raise LeaderboardError(f"run {run.info.run_id} logged no weights (artifact 'model/') and no run of its "
                           f"experiment with weights hash {sha[:12] or '?'} did; export a training run instead.")


def certification_gaps(record: dict[str, Any]) -> list[str]:
    """What keeps an evaluation record from being certified, each with what to do, read from the
    record itself (the conditions of :func:`rftbench.evaluation.records.summarize`)."""
    aa, sub, tm = record.get("autoattack"), record["subset"], record["threat_model"]
    gaps = []
    if record["split"] != "test":
        gaps.append(f"it evaluated the {record['split']!r} split (certification needs eval.split=test)")
    if record.get("shard"):
        gaps.append(f"it is shard {record['shard']['index']}/{record['shard']['count']} of an evaluation (merge the "
                    f"shards' records with `rftbench evaluate merge`)")
    if not aa:
        gaps.append("AutoAttack did not run (evaluate with eval.autoattack.enabled=true)")
    else:
        if aa["version"] != "standard":
            gaps.append(f"AutoAttack ran version {aa['version']!r} (evaluate with eval.autoattack.version=standard)")
        if not record.get("shard") and aa["n_samples"] < sub["n_total"]:
            gaps.append(f"AutoAttack ran on {aa['n_samples']} of the {sub['n_total']} samples of the evaluation subset "
                        f"(evaluate again with eval.autoattack.n_samples={sub['n_total']})")
        if sub["n_total"] != sub["designated_size"]:
            gaps.append(f"the evaluation subset has {sub['n_total']} samples, not the designated "
                        f"{sub['designated_size']}")
        if not math.isclose(aa["eps"], tm["target_eps"], rel_tol=1e-9, abs_tol=1e-12):
            gaps.append(f"AutoAttack ran at eps {aa['eps'] * 255:g}/255, not the target {tm['target_eps'] * 255:g}/255")
    failed = [f"{name} ({c.get('message', '')})" for name, c in record.get("checks", {}).items()
              if c.get("passed") is False]
    if failed:
        gaps.append("a sanity check failed: " + "; ".join(failed))
    return gaps or ["the record says so without naming why (re-evaluate with the current rftbench)"]


def model_info(record: dict[str, Any], run: Any) -> dict[str, Any]:
    tm, aa = record["threat_model"], record["autoattack"]
    p = run.data.params
    info = dict.fromkeys(MODEL_INFO_FIELDS)
    info.update({
        "name": run.info.run_name, "authors": run.data.tags.get("mlflow.user"), "additional_data": False,
        "number_forward_passes": 1, "dataset": record["dataset"],
        "architecture": (record["model"].get("arch") or {}).get("name", p.get("model.name")),
        "eps": f"{tm['target_eps'] * 255:g}/255", "clean_acc": f"{100 * record['clean_accuracy']:.2f}",
        "reported": f"{100 * aa['accuracy']:.2f}", "autoattack_acc": f"{100 * aa['accuracy']:.2f}",
        "footnote": (f"rftbench robust fine-tuning ({_regime_of(record, run)}), schedule {p.get('schedule.name', '?')} "
                     f"{json.dumps({k[16:]: v for k, v in p.items() if k.startswith('schedule.params.')})}; "
                     f"AutoAttack {aa['version']} on {aa['n_samples']} {record['split']} samples "
                     f"(subset sha256 {record['subset']['indices_sha256'][:12]}); ER {record['expected_robustness']['name']}"
                     f" = {100 * record['expected_robustness']['value']:.2f}%."),
    })
    info["threat_model"] = tm.get("norm", p.get("threat.norm"))
    if record.get("threats"):
        info["threats"] = threats_card(record["threats"])
        if record["threats"].get("corruptions"):
            info["corruptions_acc"] = f"{100 * record['threats']['corruptions']['mean_accuracy']:.2f}"
    train = record.get("train") or {}
    info["rftbench"] = {"mlflow_run_id": run.info.run_id, "weights_sha256": record["model"].get("weights_sha256"),
                        "certified": record["certified"], "versions": record.get("versions"),
                        "regime": _regime_of(record, run), "trainable_params": train.get("trainable_params"),
                        "weights": train.get("weights", "raw")}
    return info


def _regime_of(record: dict[str, Any], run: Any) -> str:
    """The fine-tuning regime (``lora(rank=8,...)``: a LoRA run, its adapters merged into the
    exported weights); runs from before regimes say ``model.finetune`` or are full fine-tuning."""
    p = run.data.params
    return ((record.get("train") or {}).get("regime") or run.data.tags.get("rftbench.regime")
            or p.get("model.regime.name") or p.get("model.finetune") or "full")


def threats_card(th: dict[str, Any]) -> dict[str, Any]:
    """One field per threat model of ``eval.threats`` (as RobustBench keeps one leaderboard per
    threat model): eps in pixel units of its norm, clean and AutoAttack accuracy in percent (AutoAttack
    None where it did not run), its own ``certified``; the union worst case; the corruptions' mean."""
    def pct(v: Any) -> Any:
        return None if v is None else f"{100 * v:.2f}"

    out: dict[str, Any] = {}
    for key, v in th["norms"].items():
        aa = v["autoattack"]
        out[key] = {"threat_model": v["norm"], "eps": v["eps"], "clean_acc": pct(v["clean_accuracy"]),
                    "autoattack_acc": pct(aa["accuracy"] if aa else None),
                    "autoattack_version": aa["version"] if aa else None, "certified": v["certified"],
                    "expected_robustness": pct(v["expected_robustness"]["value"]),
                    "er_name": v["expected_robustness"]["name"]}
    if th.get("union"):
        u = th["union"]
        out["union"] = {"threats": u["threats"], "autoattack_acc": pct((u["autoattack"] or {}).get("accuracy")),
                        "sweep_acc": pct(u["sweep"]["accuracy"])}
    if th.get("corruptions"):
        c = th["corruptions"]
        out["corruptions"] = {"corruptions_acc": pct(c["mean_accuracy"]), "relative_to_clean": c["relative_to_clean"],
                              "severities": c["severities"], "library": c["library"],
                              "content_sha256": c["content_sha256"]}
    return out


def export_model_card(run_id: str, out: str | Path, *, uri: str | None = None) -> Path:
    client = client_for(uri)
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - MLflow raises its own exception kinds for an unknown id
        raise LeaderboardError(f"no MLflow run {run_id!r} at {client.tracking_uri}; list runs with "
                               f"`rftbench runs list` or the MLflow UI.") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            rec = json.loads(Path(client.download_artifacts(run_id, "evaluation/evaluation.json", tmp)).read_text())
        except Exception:  # noqa: BLE001
            raise LeaderboardError(f"run {run_id} has no evaluation record (evaluation/evaluation.json); "
                                   f"evaluate the model first.") from None
        if not rec.get("certified") or rec.get("flagged"):
            raise LeaderboardError(f"run {run_id}'s AutoAttack is not certified: {'; '.join(certification_gaps(rec))}. "
                                   f"RobustBench cards list only certified numbers (AutoAttack 'standard' at the "
                                   f"target eps on the whole designated test subset, every check passing).")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        wrun = _weights_run(client, run)
        local = Path(client.download_artifacts(wrun.info.run_id, "model", tmp))
        for f in local.iterdir():
            name = "model.safetensors" + (".json" if f.name.endswith(".json") else "")
            shutil.copy(f, out / name)
        (out / "model_info.json").write_text(json.dumps(model_info(rec, run), indent=2))
    return out
