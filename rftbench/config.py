"""Typed experiment configuration, loaded from YAML and validated with clear errors.

Units: every eps is in [0,1] pixel units (4/255 means 4/255 of the [0,1] range). YAML values
may be written as fractions, e.g. ``target_eps: 4/255``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

_FRACTION = re.compile(r"^\s*([0-9.]+)\s*/\s*([0-9.]+)\s*$")


def _number(value: Any) -> Any:
    """Accept ``"4/255"`` wherever a float is expected."""
    if isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            return float(m.group(1)) / float(m.group(2))
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """Which network to fine-tune and from which weights.

    ``name`` is a registry name: ``small_cnn`` (built-in), ``timm:<name>[.<tag>]``,
    ``torchvision:<name>``, ``robustbench:<dataset>/<threat>/<name>`` or ``file:<path>``.
    ``pretrained``: ``true`` (the family's pretrained weights; for built-ins the embedded
    non-robust checkpoint), ``false`` (random init). ``weights``: a local file that overrides.
    """

    name: str = "small_cnn"
    pretrained: bool = True
    weights: Optional[str] = None
    finetune: Literal["full", "linear_probe"] = "full"
    head_lr_scale: float = Field(1.0, gt=0)
    head_weight_decay: Optional[float] = Field(None, ge=0)  # None: train.weight_decay for the head too
    kwargs: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Strict):
    """Which dataset, where it lives, and how splits and batches are made."""

    name: str = "digits"
    root: Optional[str] = None
    download: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    num_workers: int = Field(0, ge=0)
    augment: bool = True


class AttackConfig(_Strict):
    """The training attack (torchattacks). ``step_size_ratio`` * eps is the PGD step size;
    ``None`` uses 2.5 / steps (Madry et al.).

    ``bn_mode``: how the model runs while the attack crafts examples. ``eval`` (default): eval
    mode, BatchNorm uses and keeps its running statistics, dropout off. ``train``: training
    mode, BatchNorm uses the adversarial batch's statistics and updates its running
    statistics on every attack step (as in Madry et al.'s code). See ``attacks.TrainAttack``.
    """

    name: Literal["pgd", "apgd"] = "pgd"
    norm: Literal["Linf", "L2"] = "Linf"
    target_eps: float = Field(0.2, ge=0)
    steps: int = Field(7, ge=1)
    step_size_ratio: Optional[float] = Field(None, gt=0)
    random_start: bool = True
    bn_mode: Literal["eval", "train"] = "eval"

    _num = field_validator("target_eps", "step_size_ratio", mode="before")(lambda v: _number(v))

    @property
    def step_ratio(self) -> float:
        return self.step_size_ratio if self.step_size_ratio is not None else 2.5 / self.steps


class ScheduleConfig(_Strict):
    """Which epsilon schedule plugin, with which parameters, evaluated per step or per epoch."""

    name: str = "epsilon_scheduling"
    params: dict[str, float] = Field(default_factory=dict)
    granularity: Literal["step", "epoch"] = "step"


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1)
    objective: str = "pgd_at"
    trades_beta: float = Field(6.0, ge=0)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0.0, ge=0)
    grad_clip: Optional[float] = Field(None, gt=0)
    accum_steps: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    device: str = "auto"
    val_every: int = Field(0, ge=0)  # epochs between validations; 0 = only at the end
    val_samples: int = Field(200, ge=1)
    checkpoint_every: int = Field(1, ge=1)  # epochs
    checkpoint_every_steps: int = Field(0, ge=0)  # optimizer steps between mid-epoch checkpoints; 0 = off
    log_every: int = Field(25, ge=0)  # batches between per-step MLflow metrics / progress; 0 = per epoch only
    progress: Literal["auto", "rich", "plain", "off"] = "auto"  # auto: rich on a terminal, else plain lines
    nesterov: bool = True  # SGD: Nesterov momentum (when momentum > 0)


class AutoAttackConfig(_Strict):
    enabled: bool = True
    version: Literal["standard", "plus", "rand", "custom"] = "standard"
    attacks: list[str] = Field(default_factory=list)
    n_samples: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    second_opinion: bool = False  # also run torchattacks' AutoAttack and record it beside pyautoattack's


class EvalChecksConfig(_Strict):
    """Sanity checks against gradient masking (see ``rftbench.checks``), run on a probe: the
    first ``probe_samples`` of the evaluation subset. ``large_eps``: ``None`` = Linf 1.0 / L2 the
    image cube's diameter."""

    probe_samples: int = Field(64, ge=0)
    large_eps: Optional[float] = Field(None, gt=0)
    large_eps_max_accuracy: float = Field(0.05, ge=0, le=1)
    monotone_tolerance: float = Field(0.02, ge=0, le=1)
    square_tolerance: float = Field(0.002, ge=0, le=1)

    _num = field_validator("large_eps", mode="before")(lambda v: _number(v))


class EvalConfig(_Strict):
    """The evaluation: PGD sweep over an eps grid (for expected robustness) and AutoAttack."""

    eps_grid: Optional[list[float]] = None  # default: num_points evenly from 0 to target eps
    num_points: int = Field(5, ge=2)
    pgd_steps: int = Field(10, ge=1)
    restarts: int = Field(1, ge=1)
    random_start: bool = False  # restart 0 from a random start too (further restarts always are)
    step_size_ratio: Optional[float] = Field(None, gt=0)
    distribution: str = "uniform"
    n_samples: int = Field(1000, ge=1)
    subset_seed: int = 0
    split: Literal["test", "val"] = "test"
    autoattack: AutoAttackConfig = Field(default_factory=AutoAttackConfig)
    checks: EvalChecksConfig = Field(default_factory=EvalChecksConfig)

    @field_validator("eps_grid", mode="before")
    @classmethod
    def _grid(cls, v):
        if v is None:
            return v
        if not isinstance(v, list):
            raise ValueError("eps_grid must be a list of numbers, e.g. [0, 2/255, 4/255]")
        return [_number(x) for x in v]


class ExperimentConfig(_Strict):
    """One robust fine-tuning run: model x data x schedule x attack, then evaluation."""

    name: str = "run"
    experiment: str = "rftbench"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    plugins: list[str] = Field(default_factory=list)
    output_dir: str = "rftbench-runs"

    @model_validator(mode="after")
    def _eps_grid_within_target(self):
        grid = self.eval.eps_grid
        if grid is not None and any(e < 0 for e in grid):
            raise ValueError("eval.eps_grid holds a negative eps")
        return self

    def eps_grid(self) -> list[float]:
        """The evaluation eps grid (sorted, starting at 0) in pixel units."""
        if self.eval.eps_grid is not None:
            grid = sorted(set(float(e) for e in self.eval.eps_grid) | {0.0})
        else:
            n = self.eval.num_points
            grid = [self.attack.target_eps * i / (n - 1) for i in range(n)]
        return grid

    def flat(self) -> dict[str, Any]:
        """The config as a flat ``{"section.key": value}`` dict (MLflow params)."""
        out: dict[str, Any] = {}

        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, dict):
                for k, v in obj.items():
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
            else:
                out[prefix] = obj

        walk("", self.model_dump())
        return out


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {loc}: unknown key (check its spelling; see benchmarks/*.yaml for examples)")
        else:
            lines.append(f"  - {loc}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<dict>") -> ExperimentConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping, got {type(data).__name__}.")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML experiment config; ``overrides`` are ``section.key=value`` strings."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    data = apply_overrides(data or {}, overrides or [])
    return parse_config(data, str(p))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value.")
        set_dotted(data, key, yaml.safe_load(raw), f"override {item!r}")
    return data


def set_dotted(data: dict, key: str, value: Any, where: str) -> None:
    """``data["a"]["b"]["c"] = value`` for ``key = "a.b.c"``, creating sections as needed;
    ``where`` names the source in the error when a part of the key is not a section."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {key!r} goes through {part!r}, which is not a section.")
    node[parts[-1]] = value


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(), sort_keys=False)
