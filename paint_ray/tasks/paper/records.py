"""Which images each split holds, without decoding any: (path or record id, label) per item, in split order.

So two groups can compare splits exactly (`paint-ray data splits TASK`). Image files are named by their path
relative to the data root; images stored inside array files (MNIST IDX, SVHN .mat, CIFAR pickles, STL-10
binaries) by 'FILE#N', N being the record's index within that file. `PARTITIONS` says, per task, which
partition is used and why.
"""
from __future__ import annotations

import os
from pathlib import Path

from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv

from ..base import ArraySplit
from .binary import _CIFAR10, _MNIST, _STL10, _SVHN
from .common import FileDataset
from .kitti import KittiDistance, distance_label

_HELD_OUT = "validation: min(10% of train, 5,000) held out of it by random_split, seed 0, as the reference code does"
PARTITIONS: dict[str, str] = {
    "cars": f"official train / test (devkit annotations); {_HELD_OUT}",
    "dtd": "official partition 1 of DTD's 10 (torchvision's default): train1 + val1 as train, test1 as test, as "
           f"the reference merges train and val; {_HELD_OUT}",
    "eurosat": "no official split exists; the reference moved 2,700 random images each to val and test without a "
               "seed, so its exact split cannot be rebuilt: here 10% per class to val and 10% to test by a seeded "
               "shuffle (seed 0), the same 21,600 / 2,700 / 2,700 sizes, reproducible",
    "gtsrb": f"official training folders / official final test (GT-final_test.csv); {_HELD_OUT}",
    "kitti_distance": "KITTI's object training set (its test set has no labels), split by video: 10% of videos to "
                      "val and 10% to test, numpy seed 123, through the devkit's mapping files, as the reference "
                      "(after VTAB)",
    "mnist": f"official 60,000 train / 10,000 test; {_HELD_OUT}",
    "resisc45": "the resisc45-{train,test}.txt split lists the reference reads (its val list is unused); "
                f"{_HELD_OUT}",
    "sun397": "official partition 1 of SUN397's 10 (Training_01 / Testing_01: 50 + 50 images per class), the "
              f"partition the authors' follow-up code and torchvision default to; {_HELD_OUT}",
    "svhn": f"official train / test (no 'extra'); {_HELD_OUT}",
    "imagenet": f"official train / val (val serves as test); {_HELD_OUT}",
    "cifar10": f"official train / test batches; {_HELD_OUT}",
    "cifar100": f"official train / test; {_HELD_OUT}",
    "stl10": f"official train / test (the unlabeled images are not used); {_HELD_OUT}",
    "food101": f"official meta/train.json / meta/test.json; {_HELD_OUT}",
}


def _rel(path: str | os.PathLike, root: Path | None) -> str:
    return os.path.relpath(path, root) if root is not None else str(path)


def _in_files(sources: list[tuple[str, int]]) -> list[str]:
    """'FILE#N' for each record of files read back to back."""
    return [f"{name}#{i}" for name, n in sources for i in range(n)]


def records(data: Dataset, root: Path | None, name: str = "", split: str = "") -> list[tuple[str, int]]:
    """(path relative to `root` or 'FILE#N', label) for every item of a split, in the order the task serves it."""
    if isinstance(data, Subset):
        inner = records(data.dataset, root, name, split)
        return [inner[i] for i in data.indices]
    if isinstance(data, FileDataset):
        return [(_rel(p, root), int(y)) for p, y in data.samples]
    if isinstance(data, tv.DatasetFolder):                       # EuroSAT, ImageNet (ImageFolder)
        return [(_rel(p, root), int(y)) for p, y in data.samples]
    if isinstance(data, (tv.StanfordCars, tv.GTSRB)):
        return [(_rel(p, root), int(y)) for p, y in data._samples]
    if isinstance(data, KittiDistance):
        out = []
        for i in data.image_ids:
            stem = f"{i:06d}"
            out.append((_rel(data.raw / "training" / "image_2" / f"{stem}.png", root),
                        distance_label(data.raw / "training" / "label_2" / f"{stem}.txt")))
        return out
    if isinstance(data, _MNIST):
        prefix = "train" if data.train else "t10k"
        ids = _in_files([(f"MNIST/raw/{prefix}-images-idx3-ubyte", len(data.targets))])
        return list(zip(ids, (int(y) for y in data.targets)))
    if isinstance(data, _SVHN):
        return list(zip(_in_files([(f"svhn/{data.filename}", len(data.labels))]), (int(y) for y in data.labels)))
    if isinstance(data, _CIFAR10):                                # and CIFAR-100
        return list(zip(_in_files(data.sources), (int(y) for y in data.targets)))
    if isinstance(data, _STL10):
        x_file = (_STL10.train_list if data.split == "train" else _STL10.test_list)[0][0]
        ids = _in_files([(f"stl10/{data.base_folder}/{x_file}", len(data.labels))])
        return list(zip(ids, (int(y) for y in data.labels)))
    if isinstance(data, ArraySplit):                              # generated in memory
        return [(f"{name}/{split}#{i}", int(y)) for i, y in enumerate(data.labels)]
    return [(f"{name}/{split}#{i}", int(data[i][1])) for i in range(len(data))]   # any other dataset: decodes
