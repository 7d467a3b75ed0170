"""What a study found: best trial or Pareto front (Optuna's ``best_trials``), fANOVA parameter
importances, trial states, and Optuna's visualizations (HTML with plotly, PNG with
``optuna.visualization.matplotlib``) logged into the study's parent run."""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from ..atomic import atomic_write, atomic_write_text
from ..errors import TuneError
from .setting import study_changes
from .storage import open_storage


@dataclass
class TuneResult:
    study_name: str
    storage: str
    objectives: list[str]
    directions: list[str]
    best_params: dict[str, Any]
    best_value: float | None
    pareto_front: list[dict[str, Any]]
    n_trials: int
    states: dict[str, int]
    trials: list[dict[str, Any]]
    importances: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)
    config_changes: list[dict[str, Any]] = field(default_factory=list)  # allowed on resume (setting.py)

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def trial_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return {"number": t.number, "state": t.state.name, "values": t.values, "params": t.params,
            "schedule": t.user_attrs.get("schedule"), "schedule_params": t.user_attrs.get("schedule_params"),
            "epochs_trained": t.user_attrs.get("epochs_trained"), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "config_changes": t.user_attrs.get("config_changes", {})}


def importances(study: optuna.Study) -> dict[str, Any]:
    """fANOVA importances per objective (empty when fewer than two finished trials)."""
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if len(done) < 2:
        return {}
    names = study.user_attrs.get("rftbench.objectives") or [f"objective{i}" for i in range(len(study.directions))]
    out: dict[str, Any] = {}
    for i, name in enumerate(names):
        try:
            ev = optuna.importance.FanovaImportanceEvaluator(seed=0)
            imp = optuna.importance.get_param_importances(study, evaluator=ev, target=lambda t, i=i: t.values[i])
            out[name] = {k: float(v) for k, v in imp.items()}
        except (RuntimeError, ValueError) as exc:  # e.g. one distinct value of every parameter
            out[name] = {"unavailable": str(exc)}
    return out


def summarize(study_name: str, storage: str, *, tracking_uri: str | None = None,
              with_importances: bool = True) -> TuneResult:
    """The study's state as plain data (TuneError when there is no such study)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(open_storage(storage))]
        raise TuneError(f"no study {study_name!r} in {storage.split('@')[-1]}; studies there: "
                        f"{', '.join(names) or '(none)'}.") from None
    multi = len(study.directions) > 1
    front = [trial_row(t) for t in study.best_trials] if _any_complete(study) else []
    best = None if multi or not front else study.best_trial
    states = {s.name: sum(t.state == s for t in study.trials) for s in TrialState}
    return TuneResult(study_name, storage, study.user_attrs.get("rftbench.objectives", []),
                      [d.name.lower() for d in study.directions], best.params if best else {},
                      best.value if best else None, front, len(study.trials), {k: v for k, v in states.items() if v},
                      [trial_row(t) for t in study.trials], importances(study) if with_importances else {},
                      study.user_attrs.get("mlflow_parent_run_id"), config_changes=study_changes(study))


def _any_complete(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.trials)


def _plots(study: optuna.Study, objectives: list[Any]) -> dict[str, tuple[Any, Any]]:
    """name -> (plotly builder, matplotlib builder) for the study's figures."""
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vmpl

    names = [o.name for o in objectives]
    kw: dict[str, Any] = {} if len(names) == 1 else {"target": lambda t: t.values[0], "target_name": names[0]}
    out = {"optimization_history": (lambda: vis.plot_optimization_history(study, **kw),
                                    lambda: vmpl.plot_optimization_history(study, **kw)),
           "param_importances": (lambda: vis.plot_param_importances(study, **kw),
                                 lambda: vmpl.plot_param_importances(study, **kw)),
           "parallel_coordinate": (lambda: vis.plot_parallel_coordinate(study, **kw),
                                   lambda: vmpl.plot_parallel_coordinate(study, **kw)),
           "intermediate_values": (lambda: vis.plot_intermediate_values(study),
                                   lambda: vmpl.plot_intermediate_values(study))}
    top = _top_two(study, kw)
    if top:
        out["contour"] = (lambda: vis.plot_contour(study, params=top, **kw),
                          lambda: vmpl.plot_contour(study, params=top, **kw))
    if len(names) > 1:
        out["pareto_front"] = (lambda: vis.plot_pareto_front(study, target_names=names),
                               lambda: vmpl.plot_pareto_front(study, target_names=names))
    return out


def _top_two(study: optuna.Study, kw: dict[str, Any]) -> list[str]:
    try:
        imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
                                                      target=kw.get("target"))
    except (RuntimeError, ValueError):
        return []
    return list(imp)[:2] if len(imp) >= 2 else []


def write_visualizations(study: optuna.Study, objectives: list[Any], out: Path) -> dict[str, str]:
    """Each figure as ``<name>.html`` and ``<name>.png``; name -> "ok" or why it was skipped.

    Both are written atomically: a figure that fails leaves no half-written file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    status: dict[str, str] = {}
    for name, (plotly_fig, mpl_fig) in _plots(study, objectives).items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                atomic_write_text(out / f"{name}.html", plotly_fig().to_html(include_plotlyjs="cdn"))
                ax = mpl_fig()
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                atomic_write(out / f"{name}.png", lambda f: fig.savefig(f, format="png", dpi=90, bbox_inches="tight"))
                plt.close(fig)
            status[name] = "ok"
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError, KeyError) as exc:
            status[name] = f"skipped: {type(exc).__name__}: {exc}"
    return status


def log_study_to_parent(study: optuna.Study, client, parent_run_id: str, objectives: list[Any],
                        visualize: bool = True) -> None:
    """Best value / Pareto front, trial states and the figures into the parent run."""
    import json

    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for s in TrialState:
        client.log_metric(parent_run_id, f"study/n_{s.name.lower()}", sum(t.state == s for t in study.trials))
    if done and len(objectives) == 1:
        client.log_metric(parent_run_id, f"best/{objectives[0].name}", study.best_value)
        client.set_tag(parent_run_id, "optuna.best_trial", study.best_trial.number)
    if done:
        front = [trial_row(t) for t in study.best_trials]
        client.log_text(parent_run_id, json.dumps(front, indent=1, default=str), "optuna/pareto_front.json")
    with tempfile.TemporaryDirectory() as tmp:
        status = write_visualizations(study, objectives, Path(tmp)) if done and visualize else {}
        atomic_write_text(Path(tmp) / "visualizations.json", json.dumps(status, indent=1))
        client.log_artifacts(parent_run_id, tmp, "optuna")
