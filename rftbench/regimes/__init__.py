"""The fine-tuning regime plugin contract: which parameters of a model train, when, and in
which optimizer group.

A regime (``model.regime: {name, params, options}``) is a :class:`Regime` subclass registered
with :func:`register_regime`; the built-ins live one file each in this package (``full``,
``linear_probe``, ``partial``, ``lp_ft``, ``lora``), installed packages add theirs under the
entry-point group ``rftbench.regimes`` and a user's file comes in with ``--plugin path.py`` /
``plugins:``, as schedules do. Numeric settings are declared :class:`~rftbench.params.Param`
(bounds, int/float, log scale: the Optuna search space); non-numeric ones (name patterns,
LoRA target modules, a choice of words) are ``options`` with declared defaults.

The trainer asks a regime, in order: :meth:`Regime.prepare` (check it fits the model and change
its structure, e.g. add LoRA branches: before the optimizer exists, so a bad regime fails before
any work), :meth:`Regime.in_optimizer` (every parameter that trains in some phase; they are the
optimizer's), :meth:`Regime.boundaries` (training progress in (0, 1) where the trained set
changes) and, at the start and at each boundary, :meth:`Regime.trainable` (the parameters of
that phase: ``requires_grad`` True, the others False, so their gradients stay None and the
optimizer leaves them untouched). Parameter names are those of ``model.net.named_parameters()``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from torch import nn

from ..errors import ConfigError, RftbenchError
from ..params import Param, validate_values
from ..registry import Registry, check_declared_class, import_plugin_package


class Regime:
    """Base class of fine-tuning regimes; the default trains every parameter (``full``).

    ``self.values``: validated numeric parameters; ``self.opts``: options (declared defaults
    completed with the config's). ``group_of`` names each trained parameter's optimizer group
    (``head``, ``backbone`` or ``lora``), whose LR and weight decay the config sets.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    options: ClassVar[Mapping[str, Any]] = {}  # option name -> default
    reference: ClassVar[str] = ""

    def __init__(self, params: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None):
        owner = f"regime {self.name!r}"
        self.values: dict[str, float | int] = validate_values(self.params, dict(params or {}), owner)
        unknown = sorted(set(options or {}) - set(self.options))
        if unknown:
            raise ConfigError(f"{owner} has no option(s) {', '.join(map(repr, unknown))}; its options are: "
                              f"{', '.join(self.options) or '(none)'}.")
        self.opts: dict[str, Any] = {**self.options, **dict(options or {})}
        self.check()

    def check(self) -> None:
        """Cross-setting validation that needs no model; raise ConfigError."""

    def prepare(self, model: Any) -> None:
        """Check the regime fits ``model`` (a :class:`~rftbench.models.PixelModel`) and change its
        structure if it must, in place; raise ConfigError before any training."""

    def boundaries(self) -> tuple[float, ...]:
        """Training progress points in (0, 1) at which the trained set changes (phase ``i + 1``
        starts at ``boundaries()[i]``)."""
        return ()

    def trainable(self, model: Any, phase: int) -> set[str]:
        """Names of the parameters trained in ``phase`` (0-based)."""
        return {n for n, _ in model.net.named_parameters()}

    def in_optimizer(self, model: Any) -> set[str]:
        """Names of the parameters trained in any phase (the optimizer's parameters)."""
        out: set[str] = set()
        for phase in range(len(self.boundaries()) + 1):
            out |= self.trainable(model, phase)
        return out

    def group_of(self, model: Any, name: str, head: set[str]) -> str:
        """The optimizer group of parameter ``name``: ``head`` when in ``head``, else ``backbone``."""
        return "head" if name in head else "backbone"

    def eps_progress(self, progress: float) -> float | None:
        """Where the eps schedule stands at training progress ``progress`` (None: eps = 0)."""
        return progress

    def lr_restarts(self) -> bool:
        """Whether the LR schedule (warm-up, cosine) starts afresh at each boundary."""
        return False

    def train_mode(self, model: Any, names: set[str]) -> None:
        """Put ``model`` in training mode where ``names`` (the phase's parameters) train."""
        set_train_mode(model, names)

    def finish(self, model: Any) -> None:
        """After training, before the model is saved and evaluated (e.g. merge adapters in place)."""

    def phase_at(self, progress: float) -> int:
        """The phase at training progress ``progress`` in [0, 1]."""
        return sum(progress >= b for b in self.boundaries())

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, reference, declared parameters and options (with their defaults), as plain data."""
        return {"name": cls.name, "reference": cls.reference, "params": [p.describe() for p in cls.params],
                "options": dict(cls.options)}

    def __repr__(self) -> str:
        args = [f"{k}={v:g}" for k, v in self.values.items()]
        args += [f"{k}={v!r}" for k, v in self.opts.items() if v != self.options.get(k)]
        return f"{self.name}({','.join(args)})" if args else self.name


def head_names(model: Any) -> set[str]:
    """Names of the classification head's parameters (``model.head_parameters()``)."""
    ids = {id(p) for p in model.head_parameters()}
    return {n for n, p in model.net.named_parameters() if id(p) in ids}


def set_trainable(model: Any, names: set[str]) -> None:
    """``requires_grad`` True for the parameters in ``names``, False for the others."""
    for n, p in model.net.named_parameters():
        p.requires_grad_(n in names)


def set_train_mode(model: Any, names: set[str]) -> None:
    """Training mode for the largest subtrees of ``model.net`` whose every parameter is in
    ``names`` (their parameter-free children, e.g. dropout, with them); eval mode elsewhere, so
    a frozen part keeps its BatchNorm statistics and runs without dropout. Full fine-tuning is
    ``model.train()``."""
    model.eval()
    prefix_of = {id(m): n for n, m in model.net.named_modules()}

    def all_trained(m: nn.Module) -> bool:
        own = [f"{prefix_of[id(m)]}.{n}".lstrip(".") for n, _ in m.named_parameters()]
        return bool(own) and all(n in names for n in own)

    if all_trained(model.net):
        model.train()
        return
    for _, m in model.net.named_modules():
        if not m.training and all_trained(m):
            m.train()


def _check_regime_class(name: str, obj: Any, source: str) -> None:
    where = check_declared_class(name, obj, source, Regime, "regime")
    try:
        obj()
    except RftbenchError as exc:
        raise RftbenchError(f"{where}: its defaults are not valid: {exc}") from None


REGIMES: Registry[type[Regime]] = Registry("regime", entry_point_group="rftbench.regimes", check=_check_regime_class)
register_regime = REGIMES.register  # class decorator: @register_regime("name") on a Regime subclass
REGIMES.add_loader(lambda: import_plugin_package(__name__, "regime"))


def create_regime(cfg: Any) -> Regime:
    """The regime of a ``model.regime`` config section (:class:`rftbench.config.RegimeConfig`)."""
    return REGIMES.get(cfg.name)(cfg.params, cfg.options)


__all__ = ["REGIMES", "Regime", "create_regime", "head_names", "register_regime", "set_train_mode", "set_trainable"]
