"""The study's one MLflow parent run, and Optuna's record of each trial in the trial's run.

**One parent run, by construction.** Exactly one process creates a study in the Optuna storage:
the storage's unique study name decides (``optuna.create_study`` without ``load_if_exists``
succeeds once, in one transaction, on SQLite and PostgreSQL alike). That creator makes the parent
run (tags ``rftbench.kind=study``, ``optuna.study``) and records its id as the study's user
attribute ``mlflow_parent_run_id``, the last step of the study's setup. Every other worker and
every resume reads that attribute, waiting up to ``PARENT_WAIT_S`` for a creator still setting
up; no two processes ever both create one. Only a study with no usable record (made by plain
Optuna, a creator that died between the two steps, or another MLflow store) is given a parent
here by the older rule: the earliest run tagged with the study, else a new one.

**Trial runs.** rftbench creates each trial's run itself (a child of the parent, through the
spooling tracker, as soon as training starts: pruned, failed and interrupted trials are linked
too) and hands its id to optuna-integration's ``MLflowCallback`` the way the callback's own
``track_in_mlflow`` does, in the trial's system attribute ``mlflow_run_id``. After each finished
trial the callback reopens that run and logs the objective values (``objective/<name>``), the
Optuna params and its tags (``number``, ``state``, ``direction``, distributions, the trial's user
attributes). Two things it cannot do are kept here: it ends every run it reopens FINISHED (and
renames it after the trial number), so a pruned trial's run is put back to KILLED with its own
end time; and it sets MLflow's process-wide tracking URI, which is put back afterwards.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import optuna

from ..tracking.store import client_for, default_tracking_uri, get_or_create_experiment

ATTR_PARENT = "mlflow_parent_run_id"
PARENT_WAIT_S = 60.0  # how long a worker waits for the study's creator to record the parent run
RUN_ID_SYSTEM_ATTR = "mlflow_run_id"  # optuna_integration.mlflow's RUN_ID_ATTRIBUTE_KEY


def _study_runs(client, exp_id: str, study_name: str) -> list[Any]:
    name = study_name.replace("'", "\\'")
    runs = client.search_runs([exp_id], f"tags.`rftbench.kind` = 'study' and tags.`optuna.study` = '{name}'",
                              max_results=1000)
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def create_parent(study: optuna.Study, cfg, storage_url: str, options, space) -> str:
    """The study's creator (and only it, but for :func:`parent_of`'s fallback): a new parent run
    with the search's description as params, recorded on the study."""
    client = client_for(options.tracking_uri)
    exp_id = get_or_create_experiment(client, cfg.experiment)
    where = storage_url.split("@")[-1]
    tags = {"rftbench.kind": "study", "optuna.study": study.study_name, "rftbench.split": "val",
            "optuna.storage": where, "mlflow.runName": f"tune:{study.study_name}"}
    run_id = client.create_run(exp_id, run_name=f"tune:{study.study_name}", tags=tags).info.run_id
    from ..tracking.store import Tracker

    Tracker(client, run_id).log_params({
        "search_space": json.dumps(_flat_space(space)), "study": study.study_name, "storage": where,
        "objectives": ",".join(study.user_attrs.get("rftbench.objectives", [])),
        "sampler": options.sampler, "pruner": options.pruner_name()})
    study.set_user_attr(ATTR_PARENT, run_id)
    return run_id


def wait_for_setup(study: optuna.Study, wait_s: float | None = None) -> dict[str, Any]:
    """The study's user attributes once its creator has recorded the parent run. A study that has
    run a trial (its setup is over, or plain Optuna made it) or is waited for ``wait_s`` seconds
    is taken as it is; the creator's enqueued defaults (WAITING) do not count."""
    from optuna.trial import TrialState

    deadline = time.monotonic() + (PARENT_WAIT_S if wait_s is None else wait_s)
    while True:
        attrs = study.user_attrs
        if ATTR_PARENT in attrs or time.monotonic() > deadline:
            return attrs
        if any(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            return attrs
        time.sleep(0.2)


def parent_of(study: optuna.Study, cfg, storage_url: str, options, space) -> str:
    """The parent run recorded on an existing study, if this MLflow store has it; otherwise the
    earliest run tagged with the study, or a new one (the fallback for studies with no record)."""
    from mlflow.exceptions import MlflowException

    client = client_for(options.tracking_uri)
    recorded = study.user_attrs.get(ATTR_PARENT)
    if recorded is not None:
        try:
            if client.get_run(recorded).info.lifecycle_stage == "active":
                return recorded
        except MlflowException:  # recorded in another MLflow store, or deleted there
            pass
    runs = _study_runs(client, get_or_create_experiment(client, cfg.experiment), study.study_name)
    if not runs:
        return create_parent(study, cfg, storage_url, options, space)
    run_id = runs[0].info.run_id
    if recorded != run_id:
        study.set_user_attr(ATTR_PARENT, run_id)
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


class TrialRunCallback:
    """A study callback: optuna-integration's ``MLflowCallback`` on the run rftbench made for the
    trial (see the module docstring for what it logs and what is kept here)."""

    def __init__(self, tracking_uri: str | None, objectives: list[Any]):
        self.uri = tracking_uri or default_tracking_uri()
        self.client = client_for(self.uri)
        self.metric_names = [f"objective/{o.name}" for o in objectives]

    def _mlflow_callback(self, run) -> Any:
        import warnings

        from optuna_integration import MLflowCallback

        with warnings.catch_warnings():  # deprecated in optuna-integration 4.9 (moving to OptunaHub): NOTES.md
            warnings.simplefilter("ignore", FutureWarning)
            return MLflowCallback(tracking_uri=self.uri, metric_name=self.metric_names, create_experiment=False,
                                  mlflow_kwargs={"experiment_id": run.info.experiment_id,
                                                 "run_name": run.info.run_name},
                                  tag_study_user_attrs=False, tag_trial_user_attrs=True)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        import mlflow

        run_id = trial.system_attrs.get(RUN_ID_SYSTEM_ATTR)
        if run_id is None:  # the trial ended before its run started: nothing to add to
            return
        run = self.client.get_run(run_id)
        before = run.info
        env = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            self._mlflow_callback(run)(study, trial)
        finally:  # MLflowCallback sets the process-wide URI (and the variable): put both back
            mlflow.set_tracking_uri(None)
            if env is not None:
                os.environ["MLFLOW_TRACKING_URI"] = env
        if before.status in ("FINISHED", "KILLED", "FAILED"):  # the callback ends it FINISHED, at its own time
            self.client.set_terminated(run_id, before.status, end_time=before.end_time)


def close_parent(study: optuna.Study, prep) -> None:
    """Log the study's summary and visualizations into the parent run and mark it FINISHED."""
    from .report import log_study_to_parent

    client = client_for(prep.tracking_uri)
    study = optuna.load_study(study_name=study.study_name, storage=prep.storage)
    log_study_to_parent(study, client, prep.parent_run_id, prep.objectives, visualize=prep.visualize)
    client.set_terminated(prep.parent_run_id, status="FINISHED")
