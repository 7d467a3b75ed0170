"""Find and replace the classification head of any network.

timm models and rftbench's built-ins have ``get_classifier`` / ``reset_classifier``; for the
others (torchvision, RobustBench) the head is the last ``nn.Linear`` registered in the network
(``fc``, ``classifier[-1]``, ``heads.head``, ``linear``, ...).
"""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError


def head_name(net: nn.Module) -> str:
    """Dotted name of the classification head of ``net`` (the last registered ``nn.Linear``)."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and n]
    if not names:
        raise ConfigError(f"cannot find a linear classification head in {type(net).__name__}; "
                          f"use a model with a linear head or give it get_classifier/reset_classifier.")
    return names[-1]


def get_head(net: nn.Module) -> nn.Module:
    """The module that maps features to logits."""
    if hasattr(net, "get_classifier"):
        return net.get_classifier()
    return net.get_submodule(head_name(net))


def head_out_features(net: nn.Module) -> int:
    head = get_head(net)
    return int(getattr(head, "out_features", 0) or 0)


def reset_head(net: nn.Module, num_classes: int) -> None:
    """Replace the head by a freshly initialised ``num_classes``-way layer, in place."""
    if hasattr(net, "reset_classifier"):
        net.reset_classifier(num_classes)
        return
    name = head_name(net)
    old: nn.Linear = net.get_submodule(name)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    new.to(device=old.weight.device, dtype=old.weight.dtype)
    parent_name, _, leaf = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, leaf, new)
