"""MNIST, SVHN, CIFAR-10/100 and STL-10: array files read by torchvision's own dataset classes.

torchvision verifies the MD5 of every CIFAR, SVHN and STL-10 file on each load (and requires STL-10's
2.6 GB unlabeled file, which PAINT never uses). The subclasses below keep torchvision's readers but only
require the files a split needs; `--download` uses the unmodified classes, so downloads are verified.
"""
from __future__ import annotations

from pathlib import Path

from torchvision import datasets as tv

from . import names
from .common import Official, PaperDataset, Spec


class _CIFAR10(tv.CIFAR10):
    train_list = [[f, None] for f, _ in tv.CIFAR10.train_list]
    test_list = [[f, None] for f, _ in tv.CIFAR10.test_list]
    meta = {**tv.CIFAR10.meta, "md5": None}


class _CIFAR100(tv.CIFAR100):
    train_list = [[f, None] for f, _ in tv.CIFAR100.train_list]
    test_list = [[f, None] for f, _ in tv.CIFAR100.test_list]
    meta = {**tv.CIFAR100.meta, "md5": None}


class _SVHN(tv.SVHN):
    split_list = {k: [url, f, None] for k, (url, f, _) in tv.SVHN.split_list.items()}


class _STL10(tv.STL10):
    train_list = [[f, None] for f, _ in tv.STL10.train_list[:2]]   # no unlabeled_X.bin
    test_list = [[f, None] for f, _ in tv.STL10.test_list]


def _mnist(root: Path) -> Official:
    return Official(tv.MNIST(root, train=True), tv.MNIST(root, train=False))


def _svhn(root: Path) -> Official:
    return Official(_SVHN(root / "svhn", split="train"), _SVHN(root / "svhn", split="test"))


def _cifar10(root: Path) -> Official:
    return Official(_CIFAR10(root, train=True), _CIFAR10(root, train=False))


def _cifar100(root: Path) -> Official:
    return Official(_CIFAR100(root, train=True), _CIFAR100(root, train=False))


def _stl10(root: Path) -> Official:
    return Official(_STL10(root / "stl10", split="train"), _STL10(root / "stl10", split="test"))


def _download_mnist(root: Path) -> None:
    tv.MNIST(root, train=True, download=True)
    tv.MNIST(root, train=False, download=True)


def _download_svhn(root: Path) -> None:
    for split in ("train", "test"):
        tv.SVHN(root / "svhn", split=split, download=True)


def _download_cifar10(root: Path) -> None:
    tv.CIFAR10(root, download=True)


def _download_cifar100(root: Path) -> None:
    tv.CIFAR100(root, download=True)


def _download_stl10(root: Path) -> None:
    tv.STL10(root / "stl10", split="test", download=True)


_MNIST_FILES = tuple(f"MNIST/raw/{p}-{k}-ubyte" for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1"))
_CIFAR10_FILES = tuple(f"cifar-10-batches-py/{f}" for f in
                       [f for f, _ in tv.CIFAR10.train_list + tv.CIFAR10.test_list] + ["batches.meta"])
_CIFAR100_FILES = ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta")
_STL10_FILES = tuple(f"stl10/stl10_binary/{f}" for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"))

DATASETS = [
    PaperDataset("mnist", names.DIGITS, names.TEMPLATES["mnist"],
                 Spec("MNIST", _MNIST_FILES, layout="MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte "
                      "(uncompressed IDX files)"), _mnist, _download_mnist),
    PaperDataset("svhn", names.DIGITS, names.TEMPLATES["svhn"],
                 Spec("SVHN", ("svhn/train_32x32.mat", "svhn/test_32x32.mat"),
                      layout="svhn/{train,test}_32x32.mat"), _svhn, _download_svhn),
    PaperDataset("cifar10", names.CIFAR10, names.TEMPLATES["cifar10"],
                 Spec("CIFAR-10", _CIFAR10_FILES, layout="cifar-10-batches-py/{data_batch_1..5,test_batch,"
                      "batches.meta} (python pickles)"), _cifar10, _download_cifar10),
    PaperDataset("cifar100", names.CIFAR100, names.TEMPLATES["cifar100"],
                 Spec("CIFAR-100", _CIFAR100_FILES, layout="cifar-100-python/{train,test,meta} (python pickles)"),
                 _cifar100, _download_cifar100),
    PaperDataset("stl10", names.STL10, names.TEMPLATES["stl10"],
                 Spec("STL-10", _STL10_FILES, layout="stl10/stl10_binary/{train,test}_{X,y}.bin"),
                 _stl10, _download_stl10),
]
