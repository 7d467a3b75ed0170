"""The study's one MLflow parent run: found again by its tags (``rftbench.kind=study``,
``optuna.study``) by every worker and every resume, created once.

Two workers that start together may both create one; each then keeps the earliest-created run
with the tags and deletes its own if it lost, so the study ends with one parent either way.
"""
from __future__ import annotations

import json
from typing import Any

import optuna

from ..tracking import client_for, get_or_create_experiment


def _study_runs(client, exp_id: str, study_name: str) -> list[Any]:
    name = study_name.replace("'", "\\'")
    runs = client.search_runs([exp_id], f"tags.`rftbench.kind` = 'study' and tags.`optuna.study` = '{name}'",
                              max_results=1000)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def find_or_create_parent(study: optuna.Study, cfg, storage_url: str, options, space) -> str:
    client = client_for(options.tracking_uri)
    exp_id = get_or_create_experiment(client, cfg.experiment)
    runs = _study_runs(client, exp_id, study.study_name)
    if runs:
        run_id = runs[0].info.run_id
    else:
        tags = {"rftbench.kind": "study", "optuna.study": study.study_name, "rftbench.split": "val",
                "optuna.storage": storage_url.split("@")[-1], "mlflow.runName": f"tune:{study.study_name}"}
        mine = client.create_run(exp_id, run_name=f"tune:{study.study_name}", tags=tags).info.run_id
        run_id = _study_runs(client, exp_id, study.study_name)[0].info.run_id
        if run_id != mine:  # another worker created one first: keep one parent
            client.delete_run(mine)
        else:
            client.log_param(mine, "search_space", json.dumps(_flat_space(space)))
            client.log_param(mine, "objectives", ",".join(study.user_attrs.get("rftbench.objectives", [])))
            client.log_param(mine, "study", study.study_name)
            client.log_param(mine, "sampler", options.sampler)
            client.log_param(mine, "pruner", options.pruner_name())
            client.log_param(mine, "storage", storage_url.split("@")[-1])
    if study.user_attrs.get("mlflow_parent_run_id") != run_id:
        study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id


def _flat_space(space) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, d in space.distributions().items():
        if isinstance(d, CategoricalDistribution):
            out[name] = {"choices": list(d.choices), "kind": "categorical"}
        else:
            out[name] = {"low": d.low, "high": d.high, "kind": "int" if isinstance(d, IntDistribution) else "float",
                         "log": d.log}
    return out


def close_parent(study: optuna.Study, prep) -> None:
    """Log the study's summary and visualizations into the parent run and mark it FINISHED."""
    from .report import log_study_to_parent

    client = client_for(prep.tracking_uri)
    study = optuna.load_study(study_name=study.study_name, storage=prep.storage)
    log_study_to_parent(study, client, prep.parent_run_id, prep.objectives, visualize=prep.visualize)
    client.set_terminated(prep.parent_run_id, status="FINISHED")
