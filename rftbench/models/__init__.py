"""Model registry: every model takes images in [0,1]; normalisation is a module inside it.

Names: ``small_cnn`` / ``small_resnet`` (built-ins, or ``builtin:<name>``),
``timm:<name>[.<pretrained tag>]``, ``torchvision:<name>[.<WEIGHTS>]``,
``robustbench:<dataset>/<threat>/<name>`` and ``file:<path>`` (a checkpoint saved by rftbench).
:func:`create_model` is the one door; the classifier head is always replaced for the target's
classes. :func:`data_spec` answers a model's input spec from its family's metadata, without
building it or reading weights (so a dataset can be prepared before the one real build).
One module per family: :mod:`.builtin`, :mod:`.timm_family`, :mod:`.torchvision_family`,
:mod:`.robustbench_family`, :mod:`.checkpoints` (``file:``). ``DataSpec`` lives in
:mod:`rftbench.spec` (re-exported here).
"""
from ..spec import DataSpec
from .core import (MODEL_FAMILIES, NAME_CHECKS, SPEC_READERS, ModelFactory, Normalize, PixelModel, check_model_name,
                   create_model, data_spec, name_check, spec_reader, split_name)
from .checkpoints import (checkpoint_spec, load_checkpoint, load_state_dict_file, read_arch, save_checkpoint,
                          weights_sha256)
from .builtin import BUILTIN_MODELS, BuiltinModel, SmallCNN, SmallResNet
from . import robustbench_family, timm_family, torchvision_family  # noqa: F401  (register the families)
from .catalog import describe_models

__all__ = [
    "BUILTIN_MODELS", "BuiltinModel", "DataSpec", "MODEL_FAMILIES", "ModelFactory", "NAME_CHECKS", "Normalize",
    "PixelModel", "SPEC_READERS", "SmallCNN", "SmallResNet", "check_model_name", "checkpoint_spec", "create_model",
    "data_spec", "describe_models", "load_checkpoint", "load_state_dict_file", "name_check", "read_arch",
    "save_checkpoint", "spec_reader", "split_name", "weights_sha256",
]
