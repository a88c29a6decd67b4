"""MNIST, SVHN, CIFAR-10/100 and STL-10: array files, served by torchvision's own dataset classes.

The subclasses below keep torchvision's item access (`__getitem__`, `__len__`, the PIL images it returns) but
read and check the files themselves: every file a split needs is validated (magic numbers, headers, sizes,
shapes, dtypes, label ranges) and anything else is a one-line PaintRayError naming the file and what it should
hold, never an UnpicklingError or AssertionError from deep inside a reader. They skip torchvision's MD5 checks
(run on every load, and STL-10's would need its 2.6 GB unlabeled file, which PAINT never uses); `--download`
uses the unmodified classes, so downloads are verified.
"""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision import datasets as tv

from ...errors import PaintRayError
from . import names
from .common import Official, PaperDataset, Spec, brief, load_mat, shown


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise PaintRayError(f"cannot read {path} ({e.strerror or type(e).__name__})") from e


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__} ({shown(value, 40)})"


def _labels(path: Path, value: Any, n: int, lo: int, hi: int, name: str, expected: str) -> np.ndarray:
    """value as n integer labels in lo..hi, or a one-line error naming the file and the first bad label."""
    try:
        arr = np.asarray(value)
    except Exception:  # noqa: BLE001 - ragged or odd objects: described below
        arr = None
    if arr is None or arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer) or
                                                  np.issubdtype(arr.dtype, np.floating)):
        raise PaintRayError(f"{path}: {name} is {_describe(value)}; expected {expected}")
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or len(arr) != n:
        raise PaintRayError(f"{path}: {name} is {_describe(value)} for {n:,} images; expected {expected}")
    bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (arr < lo) | (arr > hi) if arr.dtype.kind == "f" else \
        (arr < lo) | (arr > hi)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise PaintRayError(f"{path}: {name}[{i}] is {shown(arr[i].item())}; expected {expected}")
    return arr.astype(np.int64)


# ---------------------------------------------------------------- MNIST: IDX files
_IDX = {  # kind -> (magic, dimensions, what the file should be)
    "images": (0x803, 3, "MNIST images in IDX format: magic 0x00000803 (unsigned bytes, 3 dimensions), "
                         "the count N, 28, 28, then N x 28 x 28 pixel bytes"),
    "labels": (0x801, 1, "MNIST labels in IDX format: magic 0x00000801 (unsigned bytes, 1 dimension), "
                         "the count N, then N label bytes 0..9"),
}


def read_idx(path: Path, kind: str) -> np.ndarray:
    """An uncompressed MNIST IDX file as a uint8 array (N x 28 x 28 images or N labels), checked throughout."""
    magic, ndim, what = _IDX[kind]
    data = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(data) >= 2 and data[:2] == b"\x1f\x8b":
        raise PaintRayError(f"{path} is gzip-compressed (unpack it with gunzip, keeping the name); expected {what}")
    if len(data) < header:
        raise PaintRayError(f"{path} has {len(data)} bytes, too short for the {header}-byte IDX header "
                            f"(truncated?); expected {what}")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise PaintRayError(f"{path} has magic number 0x{found:08x}, not 0x{magic:08x}; expected {what}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if kind == "images" and dims[1:] != (28, 28):
        raise PaintRayError(f"{path} holds {dims[1]} x {dims[2]} images, not 28 x 28; expected {what}")
    size = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != size:
        state = "is truncated" if len(data) < size else "has trailing bytes"
        raise PaintRayError(f"{path} {state}: its header declares {dims[0]:,} {kind} ({size:,} bytes) but it has "
                            f"{len(data):,} bytes; expected {what}")
    arr = np.frombuffer(bytearray(data), np.uint8, offset=header).reshape(dims)
    if kind == "labels" and arr.size and int(arr.max()) > 9:
        i = int(np.flatnonzero(arr > 9)[0])
        raise PaintRayError(f"{path} has label {int(arr[i])} at position {i}; expected {what}")
    return arr


class _MNIST(tv.MNIST):
    """torchvision's MNIST reading MNIST/raw/*-ubyte through `read_idx`."""

    @property
    def raw_folder(self) -> str:
        return os.path.join(self.root, "MNIST", "raw")

    @property
    def processed_folder(self) -> str:
        return os.path.join(self.root, "MNIST", "processed")

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        prefix = "train" if self.train else "t10k"
        images_file = Path(self.raw_folder) / f"{prefix}-images-idx3-ubyte"
        labels_file = Path(self.raw_folder) / f"{prefix}-labels-idx1-ubyte"
        images, labels = read_idx(images_file, "images"), read_idx(labels_file, "labels")
        if len(images) != len(labels):
            raise PaintRayError(f"{labels_file} holds {len(labels):,} labels but {images_file} holds "
                                f"{len(images):,} images; expected one label per image")
        return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- CIFAR-10/100: python pickles
def load_pickle(path: Path, what: str) -> Any:
    data = _read_bytes(path)
    try:
        return pickle.loads(data, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - unpickling garbage raises nearly anything: all of it is one line
        raise PaintRayError(f"{path} is not a readable python pickle ({brief(e, 60)}); expected {what}") from e


class _CIFAR10(tv.CIFAR10):
    """torchvision's CIFAR-10 with every batch and the meta file checked as it is read."""
    title, label_key, n_classes = "CIFAR-10", "labels", 10

    def __init__(self, root: str | Path, train: bool = True):
        tv.VisionDataset.__init__(self, str(root))
        self.train = train
        base = Path(self.root) / self.base_folder
        files = [f for f, _ in (self.train_list if train else self.test_list)]
        batches = [self._batch(base / f) for f in files]
        self.sources = [(f"{self.base_folder}/{f}", len(d)) for f, (d, _) in zip(files, batches)]   # split export
        self.data = np.vstack([d for d, _ in batches]).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC
        self.targets = [int(y) for _, t in batches for y in t]
        self._load_meta()

    def _batch(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        what = (f"a {self.title} batch: a pickled dict with 'data' (N x 3072 uint8, the R, G, B planes of "
                f"32 x 32 images) and {self.label_key!r} (N labels 0..{self.n_classes - 1})")
        entry = load_pickle(path, what)
        if not isinstance(entry, dict):
            raise PaintRayError(f"{path} holds {_describe(entry)}; expected {what}")
        for key in ("data", self.label_key):
            if key not in entry:
                raise PaintRayError(f"{path} has no {key!r} (its keys: {shown(sorted(map(str, entry)), 60)}); "
                                    f"expected {what}")
        data = entry["data"]
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            raise PaintRayError(f"{path}: 'data' is {_describe(data)}; expected {what}")
        labels = _labels(path, entry[self.label_key], len(data), 0, self.n_classes - 1, repr(self.label_key), what)
        return data, labels

    def _load_meta(self) -> None:
        path = Path(self.root) / self.base_folder / self.meta["filename"]
        key = self.meta["key"]
        what = f"the {self.title} meta file: a pickled dict with {key!r} (the {self.n_classes} class names)"
        meta = load_pickle(path, what)
        classes = meta.get(key) if isinstance(meta, dict) else None
        if not isinstance(classes, (list, tuple)) or len(classes) != self.n_classes:
            found = _describe(meta) if not isinstance(meta, dict) else \
                f"{key!r} as {_describe(classes)}" if key in meta else f"no {key!r}"
            raise PaintRayError(f"{path} holds {found}; expected {what}")
        self.classes = [str(c) for c in classes]
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class _CIFAR100(_CIFAR10, tv.CIFAR100):
    title, label_key, n_classes = "CIFAR-100", "fine_labels", 100
    base_folder, train_list, test_list, meta = (tv.CIFAR100.base_folder, tv.CIFAR100.train_list,
                                                tv.CIFAR100.test_list, tv.CIFAR100.meta)


# ---------------------------------------------------------------- SVHN: MATLAB .mat files
class _SVHN(tv.SVHN):
    """torchvision's SVHN with the .mat file's X and y checked as they are read."""

    def __init__(self, root: str | Path, split: str = "train"):
        tv.VisionDataset.__init__(self, str(root))
        self.split, self.filename = split, self.split_list[split][1]
        path = Path(self.root) / self.filename
        what = ("an SVHN .mat file (cropped digits) with X (32 x 32 x 3 x N uint8) and y (N labels 1..10, "
                "10 for the digit 0)")
        mat = load_mat(path, what)
        for key in ("X", "y"):
            if key not in mat:
                found = sorted(k for k in mat if not k.startswith("__"))
                raise PaintRayError(f"{path} has no variable {key!r} (it has {shown(found, 60)}); expected {what}")
        x = mat["X"]
        if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[:3] == (32, 32, 3)):
            raise PaintRayError(f"{path}: X is {_describe(x)}; expected {what}")
        labels = _labels(path, mat["y"], x.shape[3], 1, 10, "y", what)
        self.labels = np.where(labels == 10, 0, labels)
        self.data = np.transpose(x, (3, 2, 0, 1))


# ---------------------------------------------------------------- STL-10: raw uint8 binaries
class _STL10(tv.STL10):
    """torchvision's STL-10 reading only the split's two files (not the unlabeled one), sizes and labels checked."""
    train_list = [[f, None] for f, _ in tv.STL10.train_list[:2]]   # no unlabeled_X.bin
    test_list = [[f, None] for f, _ in tv.STL10.test_list]
    IMAGE_BYTES = 3 * 96 * 96

    def __init__(self, root: str | Path, split: str = "train"):
        tv.VisionDataset.__init__(self, str(root))
        self.split, self.folds = split, None
        base = Path(self.root) / self.base_folder
        x_file, y_file = (base / f for f, _ in (self.train_list if split == "train" else self.test_list))
        x = np.frombuffer(_read_bytes(x_file), np.uint8)
        if x.size == 0 or x.size % self.IMAGE_BYTES:
            raise PaintRayError(f"{x_file} has {x.size:,} bytes, not a positive multiple of {self.IMAGE_BYTES:,}; "
                                f"expected STL-10 images: N x 3 x 96 x 96 bytes (column-major)")
        n = x.size // self.IMAGE_BYTES
        y = np.frombuffer(_read_bytes(y_file), np.uint8)
        what = f"STL-10 labels: one byte 1..10 per image of {x_file.name} ({n:,} images)"
        if y.size != n:
            raise PaintRayError(f"{y_file} has {y.size:,} labels but {x_file.name} holds {n:,} images; expected {what}")
        labels = _labels(y_file, y, n, 1, 10, "labels", what)
        self.labels = (labels - 1).astype(np.uint8)            # 0-based, as torchvision stores them
        self.data = np.transpose(x.reshape(n, 3, 96, 96), (0, 1, 3, 2))
        class_file = base / self.class_names_file
        if class_file.is_file():
            self.classes = class_file.read_text(errors="replace").splitlines()


def _mnist(root: Path) -> Official:
    return Official(_MNIST(root, train=True), _MNIST(root, train=False))


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
