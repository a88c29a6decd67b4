"""The PAINT paper's datasets, read from their published on-disk layouts under a data root.

Patch tasks: cars, dtd, eurosat, gtsrb, kitti_distance, mnist, resisc45, sun397, svhn.
Supported tasks: imagenet, cifar10, cifar100, stl10, food101.
"""
from __future__ import annotations

from .binary import DATASETS as _BINARY
from .common import PaperDataset
from .files import DATASETS as _FILES
from .kitti import DATASETS as _KITTI

PATCH_TASKS = ("cars", "dtd", "eurosat", "gtsrb", "kitti_distance", "mnist", "resisc45", "sun397", "svhn")
SUPPORTED_TASKS = ("imagenet", "cifar10", "cifar100", "stl10", "food101")

PAPER_DATASETS: dict[str, PaperDataset] = {d.name: d for d in _BINARY + _FILES + _KITTI}
assert set(PAPER_DATASETS) == set(PATCH_TASKS + SUPPORTED_TASKS)

# name -> factory(data_root) -> Task, the shape the task registry takes.
PAPER_TASKS = {name: d.task for name, d in PAPER_DATASETS.items()}

__all__ = ["PAPER_DATASETS", "PAPER_TASKS", "PATCH_TASKS", "SUPPORTED_TASKS", "PaperDataset"]
