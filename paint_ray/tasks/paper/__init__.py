"""The PAINT paper's datasets, read from their published on-disk layouts under a data root.

Patch tasks: cars, dtd, eurosat, gtsrb, kitti_distance, mnist, resisc45, sun397, svhn.
Supported tasks: imagenet, cifar10, cifar100, stl10, food101.
Case study: vqav2 (VQA v2 as multiple choice, vqa.py).
"""
from __future__ import annotations

from .binary import DATASETS as _BINARY
from .common import PaperDataset
from .files import DATASETS as _FILES
from .kitti import DATASETS as _KITTI
from .vqa import vqav2_task

PATCH_TASKS = ("cars", "dtd", "eurosat", "gtsrb", "kitti_distance", "mnist", "resisc45", "sun397", "svhn")
SUPPORTED_TASKS = ("imagenet", "cifar10", "cifar100", "stl10", "food101")

PAPER_DATASETS: dict[str, PaperDataset] = {d.name: d for d in _BINARY + _FILES + _KITTI}
assert set(PAPER_DATASETS) == set(PATCH_TASKS + SUPPORTED_TASKS)

# name -> factory(data_root) -> Task, the shape the task registry takes.
PAPER_TASKS = {name: d.task for name, d in PAPER_DATASETS.items()}
# The VQA case study's dataset: its classes come from its files (question-answer pairs), so it is a factory
# of its own rather than a PaperDataset with fixed class names.
PAPER_TASKS["vqav2"] = vqav2_task

__all__ = ["PAPER_DATASETS", "PAPER_TASKS", "PATCH_TASKS", "SUPPORTED_TASKS", "PaperDataset"]
