"""``robustbench:<dataset>/<threat>/<name>``: robust pretrained baselines from the RobustBench zoo.

RobustBench is imported lazily, behind a compatibility layer: it imports ``autoattack`` (the
git package's name) although the PyPI package is ``pyautoattack``, so that alias is registered
only here; optional modules it imports at top level but needs only for downloads (``gdown``) or
for one architecture (``geotorch``, ``torchdiffeq``) are replaced, when not installed, by
placeholders that raise a clear error if they are actually used.

Checkpoints live in ``$RFTBENCH_ROBUSTBENCH_DIR`` (default ``<rftbench cache>/robustbench``)
as ``<dataset>/<threat>/<name>.pt``, the layout RobustBench itself uses. Downloads from Google
Drive sometimes save an HTML page instead of the checkpoint; rftbench checks every file before
RobustBench loads it, and loads with ``weights_only`` forced on.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any
from urllib.error import URLError

from ..errors import CheckpointError, ConfigError, OfflineError, RftbenchError
from ..paths import cache_dir
from ..spec import DataSpec
from .checkpoints import load_state_dict_file, looks_like_html, weights_only_loads
from .core import MODEL_FAMILIES, PixelModel, name_check, spec_reader
from .heads import head_out_features, reset_head

_DATASETS = ("cifar10", "cifar100", "imagenet")
_THREATS = ("Linf", "L2", "corruptions", "corruptions_3d")
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
# robustbench's preprocessing names -> (input size, crop_pct, interpolation)
_PREPROCESSING = {None: (32, 1.0, "bilinear"), "Res256Crop224": (224, 224 / 256, "bilinear"),
                  "BicubicRes256Crop224": (224, 224 / 256, "bicubic"), "Crop288": (288, 1.0, "bilinear"),
                  "Res224": (224, 1.0, "bilinear")}
_OPTIONAL = {"gdown": "to download RobustBench checkpoints (pip install gdown==5.1.0)",
             "geotorch": "for RobustBench's SODEF models (pip install geotorch)",
             "torchdiffeq": "for RobustBench's SODEF models (pip install torchdiffeq)"}
GDRIVE_HOST = "drive.google.com"


class _MissingModule(types.ModuleType):
    """Stands in for an optional module RobustBench imports at top level; any use raises."""

    def __init__(self, name: str, purpose: str):
        super().__init__(name)
        self._purpose = purpose
        self.__rftbench_placeholder__ = True

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        name, purpose = self.__name__, self._purpose

        def missing(*args, **kwargs):
            raise RftbenchError(f"the Python package {name!r} is not installed; it is needed {purpose}.")

        return missing


def import_robustbench() -> types.ModuleType:
    """Import ``robustbench`` (with the compatibility layer) and return ``robustbench.utils``."""
    if "robustbench.utils" in sys.modules:
        return sys.modules["robustbench.utils"]
    import pyautoattack
    import pyautoattack.state

    sys.modules.setdefault("autoattack", pyautoattack)
    sys.modules.setdefault("autoattack.state", pyautoattack.state)
    for mod, purpose in _OPTIONAL.items():
        if mod not in sys.modules and importlib.util.find_spec(mod) is None:
            sys.modules[mod] = _MissingModule(mod, purpose)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm deprecation and pkg_resources warnings at import
        try:
            import robustbench.utils
        except ImportError as exc:
            raise RftbenchError(f"RobustBench cannot be imported ({exc}). Install it as the Makefile does "
                                f"(pip install --no-deps robustbench==1.1.1 pyautoattack==0.2.0).") from None
    return robustbench.utils


def parse_robustbench_name(rest: str) -> tuple[str, str, str]:
    parts = rest.split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"robustbench model names look like robustbench:<dataset>/<threat>/<name>, "
                          f"e.g. robustbench:cifar10/Linf/Standard; got {rest!r}.")
    dataset, threat, name = parts
    if dataset not in _DATASETS:
        raise ConfigError(f"RobustBench has no dataset {dataset!r}; use one of {', '.join(_DATASETS)}.")
    if threat not in _THREATS:
        raise ConfigError(f"RobustBench has no threat model {threat!r}; use one of {', '.join(_THREATS)}.")
    return dataset, threat, name


def zoo_entry(dataset: str, threat: str, name: str) -> dict[str, Any]:
    """RobustBench's model-zoo entry (``model`` constructor, ``gdrive_id``, ``preprocessing``)."""
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    zoo = model_dicts[BenchmarkDataset(dataset)].get(ThreatModel(threat.replace("_3d", "")), {})
    if name not in zoo:
        close = difflib.get_close_matches(name, list(zoo), n=3)
        raise ConfigError(f"RobustBench has no {dataset}/{threat} model {name!r}."
                          f"{' Did you mean ' + ', '.join(close) + '?' if close else ''} "
                          f"Known ({len(zoo)}): {', '.join(sorted(zoo))}.")
    return zoo[name]


@name_check("robustbench")
def _check(rest: str) -> None:
    zoo_entry(*parse_robustbench_name(rest))


def robustbench_dir() -> Path:
    """Where RobustBench checkpoints are kept (``$RFTBENCH_ROBUSTBENCH_DIR`` or the rftbench cache)."""
    env = os.environ.get("RFTBENCH_ROBUSTBENCH_DIR")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "robustbench"


def checkpoint_paths(model_dir: Path, dataset: str, threat: str, name: str, entry: dict) -> list[Path]:
    """The file(s) RobustBench's ``load_model`` reads for this model (ensembles have several)."""
    base = Path(model_dir) / dataset / threat.replace("_3d", "") / f"{name}.pt"
    ids = entry.get("gdrive_id")
    if isinstance(ids, list):
        return [Path(f"{base}_m{i}.pt") for i in range(len(ids))]
    return [base]


def _verify_checkpoint(path: Path) -> None:
    if looks_like_html(path):
        raise CheckpointError(
            f"{path} is an HTML page, not a checkpoint: Google Drive answered with a quota or virus-scan page "
            f"instead of the file. Delete it and download it again later, or download it in a browser and "
            f"put it there.")


def _fetch(dataset: str, threat: str, name: str, entry: dict, model_dir: Path) -> None:
    """Make sure every checkpoint file of the model is present and is not an HTML page."""
    ids = entry.get("gdrive_id")
    ids = ids if isinstance(ids, list) else [ids]
    for path, gid in zip(checkpoint_paths(model_dir, dataset, threat, name, entry), ids):
        if not path.is_file():
            from ..hub import offline_flag, online

            url = f"https://drive.google.com/uc?id={gid}"
            if not online(GDRIVE_HOST):
                raise OfflineError(
                    f"the RobustBench checkpoint of {dataset}/{threat}/{name} is not at {path} and "
                    f"{GDRIVE_HOST} cannot be reached{' (offline mode is set)' if offline_flag() else ''}. "
                    f"Download {url} on a machine with network and put it at {path} (or point "
                    f"RFTBENCH_ROBUSTBENCH_DIR at a folder that has {dataset}/{threat}/{name}.pt), or set "
                    f"`model.weights: /path/to/{name}.pt`.")
            path.parent.mkdir(parents=True, exist_ok=True)
            utils = import_robustbench()
            utils.download_gdrive_new(gid, str(path))
            if not path.is_file():
                raise OfflineError(f"downloading {url} to {path} failed; download it by hand and put it there.")
        _verify_checkpoint(path)


def _load(utils, name: str, model_dir: Path, dataset: str, threat: str, **extra):
    try:
        with weights_only_loads(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return utils.load_model(name, model_dir=str(model_dir), dataset=dataset, threat_model=threat, **extra)
    except RftbenchError:
        raise
    except URLError as exc:
        raise OfflineError(f"RobustBench needed a download for {dataset}/{threat}/{name} that failed ({exc}); "
                           f"run it once with network, or set `model.weights: /path/to/file`.") from None
    except Exception as exc:
        raise CheckpointError(f"RobustBench could not load {dataset}/{threat}/{name} from {model_dir}: "
                              f"{type(exc).__name__}: {exc}. The checkpoint is corrupt, partial or not a "
                              f"weights-only file; delete it and download it again.") from None


def _timm_backed_name(dataset: str, threat: str, name: str) -> str | None:
    import timm

    candidate = f"{name.lower().replace('-', '_')}_{dataset}_{threat.replace('_3d', '').lower()}"
    return candidate if timm.is_model(candidate) else None


def _spec(dataset: str, entry: dict, timm_name: str | None) -> DataSpec:
    if timm_name is not None:
        import timm

        cfg = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(timm_name).to_dict())
        size, crop_pct, interp = cfg["input_size"][1], float(cfg["crop_pct"]), cfg["interpolation"]
    else:
        key = entry.get("preprocessing") if dataset == "imagenet" else None
        size, crop_pct, interp = _PREPROCESSING.get(key, _PREPROCESSING["Res256Crop224"])
    # zoo models take [0,1] images and normalise inside themselves: identity Normalize here
    return DataSpec((3, size, size), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), interp, crop_pct)


@spec_reader("robustbench")
def robustbench_spec(rest: str, *, pretrained: bool, weights: str | None, kwargs: dict) -> DataSpec:
    """From the zoo entry's preprocessing (or the timm config of a timm-backed zoo model)."""
    dataset, threat, name = parse_robustbench_name(rest)
    return _spec(dataset, zoo_entry(dataset, threat, name), _timm_backed_name(dataset, threat, name))


@MODEL_FAMILIES.register("robustbench")
def robustbench_model(rest: str, num_classes: int, *, pretrained: bool, weights: str | None,
                      kwargs: dict) -> PixelModel:
    """robustbench:<dataset>/<threat>/<name> -- a RobustBench zoo model (e.g. robustbench:cifar10/Linf/Standard),
    robust baselines for comparison; checkpoints in $RFTBENCH_ROBUSTBENCH_DIR or model.weights."""
    if kwargs:
        raise ConfigError(f"robustbench models take no model.kwargs; got {sorted(kwargs)}.")
    dataset, threat, name = parse_robustbench_name(rest)
    entry = zoo_entry(dataset, threat, name)
    utils = import_robustbench()
    timm_name = _timm_backed_name(dataset, threat, name)
    ensemble = isinstance(entry.get("gdrive_id"), list)
    if weights is not None:
        if ensemble:
            raise ConfigError(f"{dataset}/{threat}/{name} is an ensemble of several checkpoints; put them in "
                              f"RFTBENCH_ROBUSTBENCH_DIR instead of using model.weights.")
        weights_path = Path(weights).expanduser().resolve()
        _verify_checkpoint(weights_path)
        if timm_name is not None:  # RobustBench would fetch hub weights first; load the file alone
            import timm

            net = timm.create_model(timm_name, pretrained=False, num_classes=_NUM_CLASSES[dataset])
            try:
                net.load_state_dict(load_state_dict_file(weights_path))
            except RuntimeError as exc:
                raise CheckpointError(f"weights file {weights} does not match {dataset}/{threat}/{name}: {exc}") from None
        else:
            with tempfile.TemporaryDirectory(prefix="rftbench-rb-") as tmp:
                (link := checkpoint_paths(Path(tmp), dataset, threat, name, entry)[0]).parent.mkdir(parents=True)
                link.symlink_to(weights_path)
                net = _load(utils, name, Path(tmp), dataset, threat)
    elif pretrained:
        if timm_name is not None:
            from ..hub import require_hub_or_file

            require_hub_or_file(timm_name)
        elif entry.get("gdrive_id"):
            _fetch(dataset, threat, name, entry, robustbench_dir())
        net = _load(utils, name, robustbench_dir(), dataset, threat)
    else:
        if timm_name is not None:
            import timm

            net = timm.create_model(timm_name, pretrained=False, num_classes=_NUM_CLASSES[dataset])
        else:
            net = entry["model"]()
    if num_classes != _NUM_CLASSES[dataset] or head_out_features(net) != num_classes:
        if ensemble:
            raise ConfigError(f"{dataset}/{threat}/{name} is an ensemble; its heads cannot be replaced for "
                              f"{num_classes} classes. Use it on {dataset} ({_NUM_CLASSES[dataset]} classes).")
        reset_head(net, num_classes)
    spec = _spec(dataset, entry, timm_name)
    arch = {"name": f"robustbench:{rest}", "num_classes": num_classes, "kwargs": {}, "spec": spec.to_dict()}
    return PixelModel(net, spec, arch)
