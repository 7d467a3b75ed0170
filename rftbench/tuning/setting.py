"""A study is one setting: the training config its trials share, recorded when it is created.

The study's creator stores its resolved config in the study's user attribute
``rftbench.config``. A worker or a resume whose config differs from it in a key that changes
what a trial computes (anything but :data:`STUDY_MAY_DIFFER`, the searched schedule and the
searched training knobs) is refused, naming each differing key with both values
(``train.epochs: study 3, now 10``) and the way out. ``--allow-config-change`` lets it through
and records the change: on the study (user attribute ``rftbench.config_change.<digest>`` with the
differing keys, the first trial number it can apply to and the whole new config) and on every
trial trained with it (user attributes ``config_changes`` and ``config_change``), so that
``tune show`` lists it and ``tune best`` retrains a trial with the config it trained with.
"""
from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import optuna

from ..config import ExperimentConfig, parse_config
from ..errors import ConfigError, TuneError
from ..training.state import config_without

ATTR_CONFIG = "rftbench.config"
CHANGE_PREFIX = "rftbench.config_change."
# keys that do not change what a trial computes (where it runs, what it prints, what is kept of
# it), or that the study searches or sets itself per trial (schedule, AutoAttack off, split val)
STUDY_MAY_DIFFER = ("name", "experiment", "output_dir", "plugins", "tracking.", "search", "search.", "schedule.name",
                    "schedule.params.", "train.device", "train.progress", "train.log_every", "train.checkpoint_every",
                    "train.checkpoint_every_steps", "train.log_mlflow_model", "data.num_workers",
                    "data.eval_batch_size", "eval.split", "eval.autoattack.", "eval.checks.")
UNSET = "(unset)"


def setting(cfg: ExperimentConfig) -> dict[str, Any]:
    """The keys of ``cfg`` that a study's trials share (flat, dotted), with their values."""
    searched = tuple(f"train.{k}" for k in (cfg.search.train if cfg.search is not None else {}))
    return config_without(cfg, STUDY_MAY_DIFFER + searched)


def recorded_config(study: optuna.Study) -> ExperimentConfig | None:
    """The config the study was created with (None for a study made without one)."""
    data = study.user_attrs.get(ATTR_CONFIG)
    if data is None:
        return None
    try:
        return parse_config(data, f"study {study.study_name}")
    except ConfigError as exc:
        raise TuneError(f"study {study.study_name!r} recorded a config this rftbench no longer reads ({exc}); "
                        f"start a new study (--study NAME).") from None


def config_changes(recorded: ExperimentConfig, cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """``{key: {"study": value, "now": value}}`` for every shared key that differs (UNSET where
    one of the two has no such key)."""
    was, now = setting(recorded), setting(cfg)
    same = lambda a, b: json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    return {k: {"study": was.get(k, UNSET), "now": now.get(k, UNSET)}
            for k in sorted(set(was) | set(now)) if k not in was or k not in now or not same(was[k], now[k])}


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def describe_changes(changes: dict[str, dict[str, Any]]) -> str:
    """``train.epochs: study 3, now 10; train.lr: study 0.02, now 0.05``."""
    return "; ".join(f"{k}: study {_shown(v['study'])}, now {_shown(v['now'])}" for k, v in changes.items())


def refusal(study_name: str, changes: dict[str, dict[str, Any]]) -> TuneError:
    back = " ".join(f"--set {k}={_shown(v['study'])}" for k, v in changes.items() if v["study"] != UNSET)
    return TuneError(
        f"study {study_name!r} was created with another training config: {describe_changes(changes)}. "
        f"Its trials would not be comparable. Resume it with the study's config"
        f"{f' ({back})' if back else ''}, start a new study (--study NAME), or pass --allow-config-change "
        f"to train the next trials with this config anyway (the change is recorded on the study and on "
        f"those trials, and `tune best` retrains each trial with the config it trained with).")


def change_digest(changes: dict[str, dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(changes, sort_keys=True, default=str).encode()).hexdigest()[:12]


def record_change(study: optuna.Study, cfg: ExperimentConfig, changes: dict[str, dict[str, Any]]) -> str:
    """Record an allowed change on the study (once per distinct change); its digest back."""
    digest = change_digest(changes)
    if CHANGE_PREFIX + digest not in study.user_attrs:
        study.set_user_attr(CHANGE_PREFIX + digest, {
            "changes": changes, "from_trial": len(study.get_trials(deepcopy=False)),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "config": cfg.model_dump(mode="json")})
    return digest


def study_changes(study: optuna.Study) -> list[dict[str, Any]]:
    """The allowed changes recorded on the study (without their configs), earliest first."""
    out = [{"digest": k[len(CHANGE_PREFIX):], "changes": v["changes"], "from_trial": v["from_trial"], "at": v["at"]}
           for k, v in study.user_attrs.items() if k.startswith(CHANGE_PREFIX)]
    return sorted(out, key=lambda c: (c["from_trial"], c["at"]))


def trial_base_config(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    """The config ``trial`` trained with, before its own schedule and knobs: the study's, or
    the allowed change's it ran under."""
    digest = trial.user_attrs.get("config_change")
    if digest is not None:
        change = study.user_attrs.get(CHANGE_PREFIX + digest)
        if change is None:
            raise TuneError(f"trial {trial.number} of study {study.study_name!r} trained under config change "
                            f"{digest}, which the study does not record; retrain it with `rftbench train`.")
        return change["config"]
    return study.user_attrs.get(ATTR_CONFIG)
