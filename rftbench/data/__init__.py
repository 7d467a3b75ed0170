"""Dataset registry: train / val / test splits of images in [0,1] (never normalised here).

Names: torchvision's ``cifar10``, ``cifar100``, ``svhn``, ``stl10``, ``mnist``,
``fashion_mnist``, ``flowers102``, ``caltech101``, ``oxford_pet``, ``fgvc_aircraft``,
``stanford_cars``, ``dtd``, ``food101``; ``stanford_dogs`` and ``cub200`` from their archive
layouts; ``imagefolder`` (any class-per-folder tree); ``digits`` (embedded, no download).
:func:`build_splits` is the one door. One module per source: :mod:`.torchvision_sets`,
:mod:`.archives`, :mod:`.folder`, :mod:`.digits`; transforms in :mod:`.transforms`.
"""
from .core import (DATASET_META, DATASETS, DatasetFactory, DatasetMeta, EpochSampler, ImageView, Part, Splits,
                   TensorImageDataset, assemble_splits, build_splits, class_counts, data_root, dataset_labels,
                   eval_subset_indices, indices_sha256, per_class_split, register_dataset, stratified_split,
                   stratified_subset_indices, take_options)
from . import archives, digits, folder, torchvision_sets  # noqa: F401  (register the datasets)
from .catalog import describe_datasets
from .augment import AUGMENTATIONS, resolve_augment

__all__ = [
    "DATASETS", "DATASET_META", "DatasetFactory", "DatasetMeta", "EpochSampler", "ImageView", "Part", "Splits",
    "TensorImageDataset", "assemble_splits", "build_splits", "data_root", "describe_datasets",
    "class_counts", "dataset_labels", "eval_subset_indices", "indices_sha256", "stratified_subset_indices",
    "per_class_split", "register_dataset", "stratified_split", "take_options", "AUGMENTATIONS", "resolve_augment",
]
