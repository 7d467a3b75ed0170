"""Typed experiment configuration, loaded from YAML and validated with clear errors.

Units: every eps is in [0,1] pixel units (4/255 means 4/255 of the [0,1] range). YAML values
may be written as fractions, e.g. ``target_eps: 4/255``.
"""
from __future__ import annotations

import io
import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
                      model_serializer, model_validator)

from .errors import ConfigError

_FRACTION = re.compile(r"^\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)\s*$")

# Keys that moved in the wave-2 layout: old dotted key -> where it lives now.
MOVED_KEYS = {
    "attack.target_eps": "threat.eps",
    "attack.norm": "threat.norm",
    "train.trades_beta": "train.objective.params.beta",
    "eval.pgd_steps": "eval.sweep_steps",
}


def parse_fraction(text: str) -> float:
    """``"4/255"`` -> 4/255 (also a plain number); ValueError with a readable message otherwise."""
    m = _FRACTION.match(text)
    if m:
        num, den = float(m.group(1)), float(m.group(2))
        if den == 0:
            raise ValueError(f"{text!r} divides by zero")
        return num / den
    return float(text)


def _number(value: Any) -> Any:
    """Accept ``"4/255"`` wherever a float is expected."""
    if isinstance(value, str) and "/" in value:
        try:
            return parse_fraction(value)
        except ValueError as exc:
            raise ValueError(f"{exc}; write a number or a fraction like 4/255") from None
    return value


_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str, option: str = "--shard") -> tuple[int, int]:
    """``"1/4"`` -> (1, 4): a 0-based index and a count (evaluation shards, grid workers)."""
    m = _SHARD.match(text or "")
    if not m:
        raise ConfigError(f"{option} {text!r} must look like i/N (0-based index), e.g. 0/4.")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"{option} {text!r}: the index must lie in 0..{max(n - 1, 0)} and N >= 1.")
    return i, n


def _finite_eps(value: float, where: str, norm: str = "Linf") -> float:
    """An eps in [0, 1] pixel units (Linf); a value that looks like a /255 number gets a hint."""
    if not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value}")
    if value < 0:
        raise ValueError(f"{where} must be >= 0, got {value}")
    if norm == "Linf" and value > 1:
        hint = f" (did you mean {value:g}/255 = {value / 255:.4g}?)" if value <= 255 else ""
        raise ValueError(f"{where}={value:g} is outside [0, 1]: eps is in [0,1] pixel units{hint}")
    return value


def _number_list(v: Any, example: str) -> Any:
    """A YAML list of numbers or fractions (``[0, 2/255]``); None stays None."""
    if v is None:
        return v
    if not isinstance(v, list):
        raise ValueError(f"eps_grid must be a list of numbers, e.g. {example}")
    return [_number(x) for x in v]


def _literal_choices(annotation: Any) -> tuple[str, ...]:
    if get_origin(annotation) is Literal:
        return tuple(a for a in get_args(annotation) if isinstance(a, str))
    return ()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans_in_enums(cls, data: Any) -> Any:
        """YAML 1.1 reads off/on/yes/no as booleans: map them back where a field is a choice of
        words (``progress: off``), or say how to quote them."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            choices = _literal_choices(field.annotation)
            if not choices or not isinstance(out.get(name), bool):
                continue
            word = {False: ("off", "no", "false"), True: ("on", "yes", "true")}[out[name]]
            match = [w for w in word if w in choices]
            if match:  # otherwise the field's own error names it (see _format_validation_error)
                out[name] = match[0]
        return out


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
    # which parameters train, and how (a plugin of rftbench.regimes); the old spelling
    # ``finetune: full | linear_probe`` is read as ``regime: {name: ...}``
    regime: "RegimeConfig" = Field(default_factory=lambda: RegimeConfig())
    head_lr_scale: float = Field(1.0, gt=0)
    head_weight_decay: Optional[float] = Field(None, ge=0)  # None: train.weight_decay for the head too
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _finetune_is_a_regime(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "finetune" not in data:
            return data
        out = dict(data)
        old = out.pop("finetune")
        if old not in ("full", "linear_probe"):
            raise ValueError(f"model.finetune must be 'full' or 'linear_probe' (got {old!r}); other regimes: "
                             f"model.regime: {{name: ...}}")
        regime = out.get("regime")
        name = regime if isinstance(regime, str) else (regime or {}).get("name", old)
        if name != old:
            raise ValueError(f"model.finetune {old!r} and model.regime {name!r} disagree; write model.regime only")
        out["regime"] = {"name": old} if regime is None else regime
        return out


class RegimeConfig(_Strict):
    """The fine-tuning regime (``rftbench regimes list``): ``name``, its declared numeric
    ``params`` (validated against their bounds, searchable by Optuna) and its ``options``
    (non-numeric settings such as parameter-name patterns or LoRA target modules)."""

    name: str = "full"
    params: dict[str, float] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class DataConfig(_Strict):
    """Which dataset, where it lives, and how splits and batches are made."""

    name: str = "digits"
    root: Optional[str] = None
    download: bool = False
    options: dict[str, Any] = Field(default_factory=dict)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(64, ge=1, le=1_000_000)
    eval_batch_size: int = Field(256, ge=1, le=1_000_000)
    num_workers: int = Field(0, ge=0, le=1024)
    # a preset of rftbench.data.augment.AUGMENTATIONS (none, crop, crop_flip, randaugment, timm);
    # true = the dataset's default preset, false = none
    augment: Union[bool, str] = True
    augment_options: dict[str, Any] = Field(default_factory=dict)


class ThreatConfig(_Strict):
    """The threat model, read by training (the schedule scales to ``eps``) and evaluation
    alike: ``norm`` Linf or L2, ``eps`` the target radius in [0,1] pixel units (``4/255``)."""

    norm: Literal["Linf", "L2"] = "Linf"
    eps: float = 0.2

    _num = field_validator("eps", mode="before")(lambda v: _number(v))

    @model_validator(mode="after")
    def _eps_in_range(self):
        _finite_eps(self.eps, "threat.eps", self.norm)
        return self


class AttackConfig(_Strict):
    """The training attack (torchattacks); its norm and target eps are ``threat``'s.
    ``step_size_ratio`` * eps is the PGD step size; ``None`` uses 2.5 / steps (Madry et al.).

    ``bn_mode``: how the model runs while the attack crafts examples. ``eval`` (default): eval
    mode, BatchNorm uses and keeps its running statistics, dropout off. ``train``: training
    mode, BatchNorm uses the adversarial batch's statistics and updates its running
    statistics on every attack step (as in Madry et al.'s code). See ``attacks.TrainAttack``.
    """

    name: Literal["pgd", "apgd"] = "pgd"
    steps: int = Field(7, ge=1, le=10_000)
    step_size_ratio: Optional[float] = Field(None, gt=0)
    random_start: bool = True
    bn_mode: Literal["eval", "train"] = "eval"

    _num = field_validator("step_size_ratio", mode="before")(lambda v: _number(v))

    @property
    def step_ratio(self) -> float:
        return self.step_size_ratio if self.step_size_ratio is not None else 2.5 / self.steps


class ScheduleConfig(_Strict):
    """Which epsilon schedule plugin, with which parameters, evaluated per step or per epoch."""

    name: str = "epsilon_scheduling"
    params: dict[str, float] = Field(default_factory=dict)
    granularity: Literal["step", "epoch"] = "step"


class ObjectiveConfig(_Strict):
    """The training objective plugin (``rftbench.objectives``) and its declared parameters,
    e.g. ``{name: trades, params: {beta: 6}}``; a bare name is accepted too."""

    name: str = "pgd_at"
    params: dict[str, float] = Field(default_factory=dict)


class TrainConfig(_Strict):
    epochs: int = Field(20, ge=1, le=100_000)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=1000)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    warmup_epochs: float = Field(0.0, ge=0, le=100_000)
    grad_clip: Optional[float] = Field(None, gt=0)
    accum_steps: int = Field(1, ge=1, le=100_000)  # micro-batches (of data.batch_size) per optimizer step
    # the samples of one optimizer step: sets accum_steps = effective_batch_size / data.batch_size. Each
    # micro-batch is attacked on its own; BatchNorm normalises each micro-batch with its own statistics
    # (and updates its running statistics once per micro-batch), so only BatchNorm-free models get
    # exactly the update of one big batch
    effective_batch_size: Optional[int] = Field(None, ge=1, le=100_000_000)
    ema: Optional["EmaConfig"] = None  # an exponential moving average of the weights
    lora_lr_scale: float = Field(1.0, gt=0)  # LoRA parameters' LR: this times train.lr
    lora_weight_decay: Optional[float] = Field(None, ge=0)  # None: train.weight_decay
    decay_norm_and_bias: bool = False  # weight decay on 1-d parameters too (norms, biases); timm's default: not
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    device: str = "auto"
    val_every: int = Field(0, ge=0)  # epochs between validations; 0 = only at the end
    val_samples: int = Field(200, ge=1, le=100_000_000)
    checkpoint_every: int = Field(1, ge=1)  # epochs
    checkpoint_every_steps: int = Field(0, ge=0)  # optimizer steps between mid-epoch checkpoints; 0 = off
    log_every: int = Field(25, ge=0)  # batches between per-step MLflow metrics / progress; 0 = per epoch only
    progress: Literal["auto", "rich", "plain", "off"] = "auto"  # auto: rich on a terminal, else plain lines
    nesterov: bool = True  # SGD: Nesterov momentum (when momentum > 0)
    log_mlflow_model: bool = True  # the fine-tuned model as an MLflow PyTorch model (registrable)
    # BatchNorm in training: "local" (batch statistics of each process's batch), "sync" (SyncBatchNorm
    # over all torchrun ranks: the global batch's statistics; GPUs only), "frozen" (running statistics, eval mode)
    batchnorm: Literal["local", "sync", "frozen"] = "local"
    # torch intra-op CPU threads of this process: 0 / None = rftbench's rule
    # (rftbench.training.threads.set_torch_threads: this process's cores, shared with the other processes
    # of the run and less those busy with other work, never above torch's count). An execution setting
    # like the process count: left out of dumps (run identity, resume check, MLflow params); the count
    # used is the run's tag rftbench.torch_threads.
    threads: Optional[int] = Field(None, ge=0, le=1024, exclude=True)

    @field_validator("device")
    @classmethod
    def _device_name(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError(f"{v!r} is not a device; use auto, cpu, cuda, cuda:1 or mps")
        return v

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_name(cls, v):
        return {"name": v} if isinstance(v, str) else v


class EmaConfig(_Strict):
    """An exponential moving average of the weights (and buffers), timm's ``ModelEmaV3``,
    updated after every optimizer step ``t`` (1-based): ``ema = decay_t * ema + (1 - decay_t) *
    weights`` with ``decay_t = 0`` at ``t = 1`` (a copy), then ``decay``, or with ``warmup``
    ``min(decay, 1 - (1 + (t - 1)) ** (-2/3))`` (timm's warm-up, gamma 1, power 2/3).
    ``evaluate``: which weights the evaluation scores (``ema``, ``raw`` or ``both``; the record
    says which)."""

    decay: float = Field(0.999, gt=0, lt=1)
    warmup: bool = True
    evaluate: Literal["ema", "raw", "both"] = "ema"


class AutoAttackConfig(_Strict):
    enabled: bool = True
    version: Literal["standard", "plus", "rand", "custom"] = "standard"
    attacks: list[str] = Field(default_factory=list)
    n_samples: int = Field(100, ge=1, le=100_000_000)
    batch_size: int = Field(256, ge=1, le=1_000_000)
    second_opinion: bool = False  # also run torchattacks' AutoAttack and record it beside pyautoattack's


class EvalChecksConfig(_Strict):
    """Sanity checks against gradient masking (see ``rftbench.evaluation.checks``): ``monotone`` and
    ``large_eps`` run on a probe, the first ``probe_samples`` of the evaluation subset; the
    AutoAttack checks (``sweep_vs_autoattack`` with ``sweep_vs_autoattack_max_gap``) on
    AutoAttack's samples. ``large_eps``: ``None`` = Linf 1.0 / L2 the
    image cube's diameter."""

    probe_samples: int = Field(64, ge=0, le=100_000_000)
    large_eps: Optional[float] = Field(None, gt=0)
    large_eps_max_accuracy: float = Field(0.05, ge=0, le=1)
    monotone_tolerance: float = Field(0.02, ge=0, le=1)
    square_tolerance: float = Field(0.002, ge=0, le=1)
    # the sweep attack's accuracy at the target eps may exceed AutoAttack's on the same samples by
    # at most this much (honest models: PGD-10 a few to ~11 points above; masked ones: far more)
    sweep_vs_autoattack_max_gap: float = Field(0.2, ge=0, le=1)

    _num = field_validator("large_eps", mode="before")(lambda v: _number(v))


THREAT_NORMS = ("Linf", "L2", "L1")  # norms a threat can be evaluated in (training: Linf or L2)


class NormThreatConfig(_Strict):
    """One norm threat of ``eval.threats``: ``eps`` the target radius in [0,1] pixel units (Linf:
    per pixel; L2: Euclidean norm of the perturbation over all C*H*W values; L1: sum of its
    absolute values over them). Unset keys take ``eval``'s (``eps_grid`` default: ``num_points``
    evenly from 0 to ``eps``; ``sweep_attack`` default for L1: ``apgd-ce``, pyautoattack's L1 APGD)."""

    norm: Literal["Linf", "L2", "L1"]
    eps: float = Field(gt=0)
    eps_grid: Optional[list[float]] = None
    num_points: Optional[int] = Field(None, ge=2, le=10_000)
    sweep_attack: Optional[Union[str, list[str]]] = None
    sweep_steps: Optional[int] = Field(None, ge=1, le=10_000)
    restarts: Optional[int] = Field(None, ge=1, le=10_000)
    autoattack: Optional[AutoAttackConfig] = None  # None: eval.autoattack

    _num = field_validator("eps", mode="before")(lambda v: _number(v))

    _grid = field_validator("eps_grid", mode="before")(lambda v: _number_list(v, "[0, 0.5, 1.0]"))

    @model_validator(mode="after")
    def _eps_in_range(self):
        _finite_eps(self.eps, f"eval.threats {self.norm} eps", self.norm)
        for x in self.eps_grid or []:
            _finite_eps(float(x), f"eval.threats {self.norm} eps_grid value", self.norm)
        return self

    def key(self) -> str:
        """The threat's name in records and leaderboards: ``L2:1`` (norm and eps)."""
        return f"{self.norm}:{self.eps:.6g}"


class CorruptionThreatConfig(_Strict):
    """The common-corruptions threat of ``eval.threats``: ``corruptions`` names of the
    ``imagecorruptions`` library (or ``all``: its 15 benchmark corruptions), each applied at
    every severity of ``severities`` (1-5) to every image of the evaluation subset."""

    corruptions: Union[Literal["all"], list[str]]
    severities: list[int] = Field(default_factory=lambda: [3])

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 1 <= s <= 5]
        if not v or bad or len(set(v)) != len(v):
            raise ValueError(f"severities must be distinct integers in 1..5 (imagecorruptions' levels), got {v}")
        return v

    @field_validator("corruptions")
    @classmethod
    def _names(cls, v):
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"corruptions must be `all` or a list of distinct names, got {v}")
        return v

    def key(self) -> str:
        return "corruptions"


def _threat_kind(v: Any) -> str:
    return "corruptions" if isinstance(v, dict) and "corruptions" in v or isinstance(v, CorruptionThreatConfig) \
        else "norm"


ThreatEntry = Annotated[Union[Annotated[NormThreatConfig, Tag("norm")],
                              Annotated[CorruptionThreatConfig, Tag("corruptions")]], Discriminator(_threat_kind)]


class EvalConfig(_Strict):
    """The evaluation: an eps sweep (``sweep_attack``: a name in
    ``rftbench.attacks.SWEEP_ATTACKS``, e.g. ``pgd`` or the paper's ``apgd-ce``) over an eps grid
    for expected robustness, and AutoAttack at the target eps (``threat``)."""

    eps_grid: Optional[list[float]] = None  # default: num_points evenly from 0 to threat.eps
    num_points: int = Field(5, ge=2, le=10_000)
    sweep_attack: Union[str, list[str]] = "pgd"  # a list: the worst case per sample over these attacks
    sweep_steps: int = Field(10, ge=1, le=10_000)
    restarts: int = Field(1, ge=1, le=10_000)
    random_start: bool = False  # restart 0 from a random start too (further restarts always are)
    step_size_ratio: Optional[float] = Field(None, gt=0)
    distribution: str = "uniform"
    n_samples: int = Field(1000, ge=1, le=100_000_000)
    subset_seed: int = 0
    split: Literal["test", "val"] = "test"
    autoattack: AutoAttackConfig = Field(default_factory=AutoAttackConfig)
    checks: EvalChecksConfig = Field(default_factory=EvalChecksConfig)
    # threats evaluated on the same subset beside the training threat (rftbench.evaluation.threats);
    # None: the training threat alone (left out of dumps, so older configs keep their identity)
    threats: Optional[list[ThreatEntry]] = None

    @model_serializer(mode="wrap")
    def _without_unset_threats(self, handler):
        out = handler(self)
        if isinstance(out, dict) and out.get("threats", 0) is None:
            out.pop("threats")
        return out

    @field_validator("threats")
    @classmethod
    def _distinct_threats(cls, v):
        if v is None:
            return v
        keys = [t.key() for t in v]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"eval.threats lists {', '.join(twice)} twice (a norm threat is its norm and eps; "
                             f"corruptions go in one entry): keep one of each")
        return v

    @field_validator("sweep_attack")
    @classmethod
    def _sweep_attacks(cls, v):
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("sweep_attack needs one name (pgd) or a list of distinct names for the worst case "
                             "([apgd-ce, apgd-dlr])")
        return v

    @field_validator("eps_grid", mode="before")
    @classmethod
    def _grid(cls, v):
        out = _number_list(v, "[0, 2/255, 4/255]")
        for x in out or []:
            if isinstance(x, (int, float)) and not isinstance(x, bool):
                _finite_eps(float(x), "eval.eps_grid value")
        return out


class TrackingConfig(_Strict):
    """How a training run talks to the MLflow store. Metrics and tags always go through an on-disk
    spool in the run directory, flushed in the background. ``offline_ok``: a store that does not
    answer at start is not an error: the run spools and ``rftbench runs sync RUN_DIR`` uploads it
    later. ``sync_wait_s``: how long the end of a run waits for an unreachable store.
    ``spool_max_mb``: the most disk the spool may take (MiB, 1 MiB = 2**20 bytes): what was sent
    is dropped from it as it goes; when it is full because the store is behind, per-step metrics
    (``train_step/*``) and heartbeats are dropped (with a warning and the tag
    ``rftbench.spool_dropped``) until it catches up, while epoch metrics, params, tags and
    artifacts are always kept. Training never waits."""

    offline_ok: bool = False
    sync_wait_s: float = Field(30.0, ge=0, le=3600)
    spool_max_mb: float = Field(256.0, gt=0, le=1048576)


SEARCHABLE_TRAIN_KNOBS = ("lr", "momentum", "weight_decay", "warmup_epochs", "grad_clip", "lora_lr_scale",
                          "lora_weight_decay")


class SearchRange(_Strict):
    """One searched number: ``{low, high, log}`` (``kind: int`` for integers), inclusive."""

    low: float
    high: float
    log: bool = False
    kind: Literal["float", "int"] = "float"

    _num = field_validator("low", "high", mode="before")(lambda v: _number(v))

    @model_validator(mode="after")
    def _non_empty(self):
        if not self.low < self.high:
            raise ValueError(f"the range [{self.low}, {self.high}] is empty: write low < high")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low}")
        if self.kind == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs integer low and high")
        return self


class SearchConfig(_Strict):
    """What ``rftbench tune`` searches (see :mod:`rftbench.tuning.space`).

    ``schedules``: a categorical choice among schedule families, each with its own (conditional)
    declared parameters; empty = ``schedule.name`` only. ``params``: narrower ranges for schedule
    parameters, keyed ``name`` (every family declaring it) or ``family.name``; ``schedule.params``
    holds parameters fixed (never searched). ``train``: training knobs searched with their
    distributions, e.g. ``lr: {low: 1e-4, high: 1e-1, log: true}``."""

    schedules: list[str] = Field(default_factory=list)
    params: dict[str, SearchRange] = Field(default_factory=dict)
    train: dict[str, SearchRange] = Field(default_factory=dict)

    @field_validator("train")
    @classmethod
    def _known_knobs(cls, v: dict) -> dict:
        unknown = sorted(set(v) - set(SEARCHABLE_TRAIN_KNOBS))
        if unknown:
            raise ValueError(f"search.train cannot search {', '.join(unknown)}; searchable training knobs: "
                             f"{', '.join(SEARCHABLE_TRAIN_KNOBS)}")
        return v

    @field_validator("schedules")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"search.schedules names a family twice: {v}")
        return v


class LauncherConfig(_Strict):
    """A grid spec's ``launcher:`` section (``rftbench sweep``; CLI flags override it): where
    the runs go (:mod:`rftbench.launch`) and what each run gets there."""

    name: Optional[Literal["local", "submitit", "ray"]] = None  # None: in this process, one after another
    workers: int = Field(2, ge=1, le=10_000)  # local: runs at once
    threads: int = Field(1, ge=0, le=1024)  # torch threads per run (0: torch's default)
    partition: Optional[str] = None  # SLURM partition
    gpus: float = Field(0, ge=0, le=64)  # GPUs per run (SLURM, Ray)
    cpus: int = Field(1, ge=1, le=1024)  # CPUs per run (SLURM, Ray)
    time_min: int = Field(60, ge=1)  # SLURM time limit per run
    array_parallelism: int = Field(16, ge=1)  # SLURM array tasks at once
    mem_gb: Optional[float] = Field(None, ge=0)  # SLURM memory per run; None: 4 GB per CPU + 16 per GPU; 0: SLURM's
    folder: str = "rftbench-launch"  # submitit logs and pickles
    requeue: bool = True  # SLURM: a preempted or timed-out run is requeued and resumes where it stopped
    signal_delay_s: Optional[int] = Field(None, ge=1)  # SLURM: SIGUSR2 this long before the limit; None: min(90, limit/4)
    max_requeues: int = Field(3, ge=0, le=1000)  # SLURM: time-outs a run may be requeued after
    unknown_timeout_s: float = Field(120.0, gt=0)  # how long a task the engine no longer reports is waited for
    cluster: Optional[Literal["slurm", "local"]] = None  # submitit: None picks SLURM where sbatch exists
    ray_address: Optional[str] = None  # a running Ray cluster; None: a local ray.init()


class ExperimentConfig(_Strict):
    """One robust fine-tuning run: model x data x schedule x attack, then evaluation."""

    name: str = Field("run", min_length=1)
    experiment: str = Field("rftbench", min_length=1)
    seed: int = Field(0, ge=0, lt=2**63)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    threat: ThreatConfig = Field(default_factory=ThreatConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    search: Optional[SearchConfig] = None  # what `rftbench tune` searches (None: the schedule's declared params)
    plugins: list[str] = Field(default_factory=list)
    output_dir: str = "rftbench-runs"

    @model_validator(mode="after")
    def _eps_grid_within_target(self):
        grid = self.eval.eps_grid
        if grid is not None and any(e < 0 for e in grid):
            raise ValueError("eval.eps_grid holds a negative eps")
        return self

    @model_validator(mode="after")
    def _effective_batch(self):
        eff, bs, acc = self.train.effective_batch_size, self.data.batch_size, self.train.accum_steps
        if eff is None:
            return self
        if eff % bs:
            raise ValueError(f"train.effective_batch_size {eff} is not a multiple of data.batch_size {bs} (the "
                             f"micro-batch): use a multiple, e.g. {max(1, eff // bs) * bs}")
        if acc not in (1, eff // bs):
            raise ValueError(f"train.accum_steps {acc} and train.effective_batch_size {eff} (= {eff // bs} "
                             f"micro-batches of {bs}) disagree: set one of them")
        return self

    def accum_steps(self) -> int:
        """Micro-batches (of ``data.batch_size``) per optimizer step: ``train.effective_batch_size``
        / ``data.batch_size`` when set, else ``train.accum_steps``."""
        eff = self.train.effective_batch_size
        return self.train.accum_steps if eff is None else eff // self.data.batch_size

    def eps_grid(self) -> list[float]:
        """The evaluation eps grid (sorted, starting at 0) in pixel units."""
        if self.eval.eps_grid is not None:
            grid = sorted(set(float(e) for e in self.eval.eps_grid) | {0.0})
        else:
            n = self.eval.num_points
            grid = [self.threat.eps * i / (n - 1) for i in range(n)]
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
        elif err["type"] == "literal_error" and isinstance(err.get("input"), bool):
            lines.append(f"  - {loc}: {err['msg']}; YAML read an unquoted yes/no/on/off/true/false as the "
                         f"boolean {err['input']}: write one of the words (quoted if need be)")
        else:
            lines.append(f"  - {loc}: {err['msg']} (got {reprlib.repr(err.get('input'))})")
    return "\n".join(lines)


def _moved_keys(data: dict) -> list[str]:
    """Messages for keys of the old layout (``MOVED_KEYS``) found in ``data``."""
    found = []
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        node = data.get(section)
        if isinstance(node, dict) and key in node:
            found.append(f"  - {old}: moved to {new} (write `{new}: {node[key]!r}`)")
    return found


def parse_config(data: Any, source: str = "<dict>") -> ExperimentConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping, got {type(data).__name__}.")
    moved = _moved_keys(data)
    if moved:
        raise ConfigError(f"configuration in {source} uses keys of the old layout:\n" + "\n".join(moved))
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key written twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(f"key {key!r} is written twice in one mapping (lines {seen[key]} and {line}); "
                                  f"keep one of them.")
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _refuse_cycles(node: Any, where: str, path: tuple[int, ...] = (), done: set[int] | None = None) -> None:
    """A YAML alias can make a value contain itself (``a: &x [*x]``): refuse it. Shared
    (aliased) values are walked once, so a "billion laughs" document costs linear time."""
    done = set() if done is None else done
    if not isinstance(node, (dict, list)) or id(node) in done:
        return
    if id(node) in path:
        raise ConfigError(f"{where}: a YAML alias makes a value contain itself; write the value out.")
    for child in (node.values() if isinstance(node, dict) else node):
        _refuse_cycles(child, where, path + (id(node),), done)
    done.add(id(node))


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """Parse a YAML file with clear errors: missing, not a file, not UTF-8 text, invalid YAML,
    a key written twice. Returns the parsed document (None for an empty file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist" + (" (it is a directory)." if p.is_dir() else "."))
    raw = p.read_bytes()
    if b"\x00" in raw:
        raise ConfigError(f"{what} {p} is a binary file, not YAML text.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r}); "
                          f"save it as UTF-8.") from None
    try:
        data = yaml.load(_NamedText(text, str(p)), Loader=_UniqueKeyLoader)
        _refuse_cycles(data, f"{what} {p}")
        return data
    except ConfigError as exc:
        if str(exc).startswith(what):
            raise
        raise ConfigError(f"{what} {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a date YAML cannot build
        raise ConfigError(f"{what} {p} holds a value YAML cannot read: {exc}") from None


class _NamedText(io.StringIO):
    """YAML text that carries its file's name, so that YAML's own error marks say
    ``in "path/to/config.yaml", line 3`` instead of ``"<unicode string>"``."""

    def __init__(self, text: str, name: str):
        super().__init__(text)
        self.name = name


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML experiment config; ``overrides`` are ``section.key=value`` strings.

    An empty file is refused (it would silently train the full default): write at least a
    ``name:``; ``rftbench demo`` runs the embedded default."""
    p = Path(path)
    data = read_yaml(p)
    if data is None:
        raise ConfigError(f"config file {p} is empty; write at least `name: my-run` (every other key has a "
                          f"default; see benchmarks/*.yaml), or run `rftbench demo` for the embedded default.")
    if isinstance(data, dict):
        data = apply_overrides(data, overrides or [])
    return parse_config(data, str(p))


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ("a.b", value parsed as YAML), with clear errors."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip() or any(not part for part in key.strip().split(".")):
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.epochs=5.")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else None
    except (yaml.YAMLError, ConfigError, ValueError) as exc:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc}); quote it, "
                          f"e.g. {key}='text'.") from None
    return key.strip(), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(data, key, value, f"override {item!r}")
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
