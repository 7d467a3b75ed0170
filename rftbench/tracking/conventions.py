"""What MLflow users expect on a run, beyond rftbench's own tags and metrics.

- the record's numbers under the split's prefix (``eval/*`` on test, ``val/*`` on the
  validation split, so search trials never look like test results), the robustness curve as ONE
  metric ``<prefix>/robustness_curve`` over the eps index (step = index into the grid; the grid
  itself is the ``evaluation/robustness_curve.csv`` artifact);
- the tags the leaderboard groups by (split, subset hash, compact per-sample summary);
- the fine-tuned model as an MLflow PyTorch model with an input signature, logged through
  MLflow's logged-model API so that the run page lists it (registrable with
  ``mlflow.register_model("runs:/<run id>/mlflow_model", NAME)``);
- the train/val/test splits as run inputs (``mlflow.data``) with digests.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..evaluation.sample_summary import summary_tag
from ..evaluation.threat_records import threat_definitions

log = logging.getLogger(__name__)

CURVE_METRIC = "robustness_curve"
THREATS_TAG = "rftbench.threats"
MODEL_ARTIFACT = "mlflow_model"


def split_prefix(split: str) -> str:
    return "eval" if split == "test" else "val" if split == "val" else f"eval_{split}"


def record_metrics(record: Any) -> tuple[dict[str, float], list[float]]:
    """The record's scalar metrics under its split's prefix, and the curve (accuracy per eps index)."""
    prefix = split_prefix(record["split"])
    out = {}
    for k, v in record.metrics().items():
        name = k.split("/", 1)[1]
        if not name.startswith("acc_sweep_eps_"):
            out[f"{prefix}/{name}"] = v
    return out, list(record["sweep"]["accuracy"])


def log_record_metrics(tracker: Any, record: Any, step: int = 0) -> None:
    """Scalars at ``step`` (after the last epoch for a validation record, so they are the latest
    value), the curve at steps 0..G-1."""
    metrics, curve = record_metrics(record)
    tracker.log_metrics(metrics, step=step)
    prefix = split_prefix(record["split"])
    for i, acc in enumerate(curve):
        tracker.log_metrics({f"{prefix}/{CURVE_METRIC}": acc}, step=i)


def leaderboard_tags(record: Any) -> dict[str, Any]:
    tm = record["threat_model"]
    tags = {"rftbench.split": record["split"], "rftbench.norm": tm["norm"], "rftbench.eps": tm["target_eps"],
            "rftbench.subset_sha256": record["subset"]["indices_sha256"],
            "rftbench.n_aa": (record["autoattack"] or {}).get("n_samples", 0), **summary_tag(record)}
    data = getattr(record, "data", record)
    if data.get("threats"):  # eval.threats: each threat's definition digest (the leaderboard's --threat)
        tags[THREATS_TAG] = json.dumps(threat_definitions(data), sort_keys=True)
    return tags


def log_pytorch_model(tracker: Any, model: Any, example: Any) -> Optional[str]:
    """The model as an MLflow PyTorch model (input signature from an example batch of 2) through
    MLflow's logged-model API: a ``LoggedModel`` named :data:`MODEL_ARTIFACT` whose source run is
    the tracker's (the run page lists it under "Logged models"; ``runs:/RUN_ID/mlflow_model``
    resolves to it). Returns its model id.

    Where that cannot be done now -- the run has only a local id (the store was down when it
    started) or the store refuses the call -- the same saved model goes as the run's artifacts
    ``mlflow_model/`` through the tracker's ``log_artifacts`` (a spooling tracker keeps a copy
    until the store takes it), which ``runs:/RUN_ID/mlflow_model`` loads too; returns None."""
    import torch
    from mlflow.models import infer_signature

    model = model.eval()
    x = example[:2].to(next(model.parameters()).device)  # a batch of 2: the exported batch size stays dynamic
    with torch.no_grad():
        y = model(x)
    save = {"signature": infer_signature(x.cpu().numpy(), y.cpu().numpy()), "input_example": x,
            "pip_requirements": [f"torch=={torch.__version__.split('+')[0]}", "rftbench"]}
    with tempfile.TemporaryDirectory() as d:
        try:
            return _log_logged_model(tracker.client, tracker.run_id, model, Path(d) / "logged", save)
        except Exception as exc:  # noqa: BLE001 - MLflow's own kinds; the spooled artifacts are the fallback
            log.warning("MLflow model of run %s logged as run artifacts %s/ (the logged-model API failed: %s: %s)",
                        tracker.run_id, MODEL_ARTIFACT, type(exc).__name__, str(exc)[:300])
        import mlflow.pytorch

        path = Path(d) / MODEL_ARTIFACT
        mlflow.pytorch.save_model(model, str(path), **save)
        tracker.log_artifacts(path, MODEL_ARTIFACT)
    return None


def _log_logged_model(client: Any, run_id: str, model: Any, path: Path, save: dict[str, Any]) -> str:
    """Create the ``LoggedModel`` (PENDING), link it to the run as an output, upload the saved
    model into it and mark it READY; a failure deletes it again (and raises), so no half-logged
    model shadows the fallback artifacts under the same name."""
    import mlflow.pytorch
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    run = client.get_run(run_id)  # fails for an offline run's local id
    lm = client.create_logged_model(run.info.experiment_id, name=MODEL_ARTIFACT, source_run_id=run_id)
    try:
        client.log_outputs(run_id, [LoggedModelOutput(lm.model_id, step=0)])
        meta = Model(artifact_path=lm.artifact_location, run_id=run_id, model_id=lm.model_id, model_uuid=lm.model_id)
        mlflow.pytorch.save_model(model, str(path), mlflow_model=meta, **save)
        client.log_model_artifacts(lm.model_id, str(path))
        client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    except BaseException:
        try:
            client.delete_logged_model(lm.model_id)
        except Exception as exc:  # noqa: BLE001 - the first error is the one to report
            log.warning("could not delete the half-logged MLflow model %s: %s", lm.model_id, exc)
        raise
    return lm.model_id


def log_dataset_inputs(tracker: Any, cfg: Any, splits: Any) -> None:
    """train/val/test as MLflow dataset inputs (the tracker's ``log_inputs``); digest = sha256 of
    the data config, the split's size and the split description (``splits.json``)."""
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    inputs = []
    for name in ("train", "val", "test"):
        ds = splits.split(name)
        desc = json.dumps({"data": cfg.data.model_dump(), "split": name, "n": len(ds), "info": splits.info},
                          sort_keys=True, default=str)
        digest = hashlib.sha256(desc.encode()).hexdigest()[:16]
        source = HTTPDatasetSource(url=f"rftbench://{cfg.data.name}/{name}")
        meta = MetaDataset(source=source, name=f"{cfg.data.name}-{name}", digest=digest)
        inputs.append(DatasetInput(meta._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", name)]))
    tracker.log_inputs(inputs)


def example_batch(dataset: Any, n: int = 2) -> Any:
    """The first ``n`` inputs of ``dataset`` as one batch (two by default: MLflow exports the
    model with a dynamic batch size only from an example batch of more than one)."""
    import torch

    return torch.stack([torch.as_tensor(np.asarray(dataset[i][0])) for i in range(min(n, len(dataset)))])
