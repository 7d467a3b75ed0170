"""Model registry: every model takes images in [0,1]; normalisation is a module inside it.

Names: ``small_cnn`` / ``small_resnet`` (built-ins, or ``builtin:<name>``),
``timm:<name>[.<pretrained tag>]``, ``torchvision:<name>[.<WEIGHTS>]``,
``robustbench:<dataset>/<threat>/<name>`` and ``file:<path>`` (a checkpoint saved by rftbench).
:func:`create_model` is the one door; the classifier head is always replaced for the target's
classes. One module per family: :mod:`.builtin`, :mod:`.timm_family`, :mod:`.torchvision_family`,
:mod:`.robustbench_family`, :mod:`.checkpoints` (``file:``).
"""
from .core import (MODEL_FAMILIES, NAME_CHECKS, DataSpec, ModelFactory, Normalize, PixelModel, check_model_name,
                   create_model, name_check, split_name)
from .checkpoints import load_checkpoint, load_state_dict_file, save_checkpoint, weights_sha256
from .builtin import BUILTIN_MODELS, BuiltinModel, SmallCNN, SmallResNet
from . import robustbench_family, timm_family, torchvision_family  # noqa: F401  (register the families)
from .catalog import describe_models

__all__ = [
    "BUILTIN_MODELS", "BuiltinModel", "DataSpec", "MODEL_FAMILIES", "ModelFactory", "NAME_CHECKS", "Normalize",
    "PixelModel", "SmallCNN", "SmallResNet", "check_model_name", "create_model", "describe_models",
    "load_checkpoint", "load_state_dict_file", "name_check", "save_checkpoint", "split_name", "weights_sha256",
]
