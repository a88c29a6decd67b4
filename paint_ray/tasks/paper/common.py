"""What every paper dataset shares: layout checks, fingerprints, held-out validation splits, a lazy loader.

A dataset module describes one dataset as a `Spec` (its files, its expected layout) plus a `build(root)`
that returns the official splits. `PaperDataset.task` makes a `Task` whose loader holds out validation
exactly as the PAINT reference code does when the dataset has no validation split of its own.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, random_split

from ...errors import PaintRayError
from ..base import Task

# Bumped whenever a split definition changes, so caches keyed on fingerprints never serve stale splits.
SPLITS_VERSION = "1"
VAL_FRACTION = 0.1
MAX_VAL = 5000
VAL_SEED = 0


@dataclass(frozen=True)
class Spec:
    """One dataset on disk: the paths (relative to the data root) it needs and its layout in words."""
    title: str
    files: tuple[str, ...]            # must exist as files; their size + mtime enter the fingerprint
    dirs: tuple[str, ...] = ()        # must exist as folders; their and their subfolders' mtimes too
    layout: str = ""


@dataclass
class Official:
    """The splits a dataset provides. `val` is None when validation must be held out of `train`."""
    train: Dataset
    test: Dataset
    val: Dataset | None = None
    val_indices: list[int] | None = None   # for a dataset's own validation: indices into `val_source`
    val_source: str = ""


class FileDataset(Dataset):
    """(path, label) pairs read as RGB PIL images: the shape of every file-list dataset here."""

    def __init__(self, samples: Sequence[tuple[str, int]]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        path, label = self.samples[i]
        with Image.open(path) as img:
            return img.convert("RGB"), label


def held_out(n: int) -> tuple[list[int], list[int]]:
    """(train, val) indices of a train set of n: the reference's split_train_into_train_val, index for index."""
    n_val = min(int(n * VAL_FRACTION), MAX_VAL)
    if n_val <= 0 or n - n_val <= 0:
        raise PaintRayError(f"the train split has {n} images; at least 10 are needed to hold out validation")
    train, val = random_split(range(n), [n - n_val, n_val], generator=torch.Generator().manual_seed(VAL_SEED))
    return list(train.indices), list(val.indices)


def layout_error(name: str, spec: Spec, root: Path, missing: str) -> PaintRayError:
    return PaintRayError(f"{spec.title} ({name}): {root / missing} is missing; expected under {root}: {spec.layout}")


def check_layout(name: str, spec: Spec, data_root: str | os.PathLike | None) -> Path:
    """The resolved data root, or a one-line error naming the first missing file or folder."""
    if data_root is None:
        raise PaintRayError(f"task {name!r} reads {spec.title} from disk; give --data-root DIR "
                            f"(expected under DIR: {spec.layout})")
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise PaintRayError(f"data root {root} does not exist or is not a folder (task {name!r} expects "
                            f"{spec.layout} under it)")
    for rel in spec.dirs:
        if not (root / rel).is_dir():
            raise layout_error(name, spec, root, rel)
    for rel in spec.files:
        if not (root / rel).is_file():
            raise layout_error(name, spec, root, rel)
    return root.resolve()


def fingerprint(name: str, spec: Spec, root: Path) -> str:
    """Identity of the data: root, index files' sizes and mtimes, and the mtimes of image folders.

    A folder's mtime changes when a file is added, removed or renamed in it, which is what changes the
    splits of folder-scanned datasets; statting every image (a million for ImageNet) would cost minutes.
    """
    parts: list[Any] = [name, SPLITS_VERSION, str(root)]
    for rel in spec.files:
        st = (root / rel).stat()
        parts.append([rel, st.st_size, st.st_mtime_ns])
    for rel in spec.dirs:
        folder = root / rel
        parts.append([rel, folder.stat().st_mtime_ns])
        with os.scandir(folder) as entries:
            parts.append(sorted([e.name, e.stat().st_mtime_ns] for e in entries if e.is_dir()))
    return f"{name}-" + hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Splits:
    """train/val/test as the task serves them, and where the validation indices point."""
    data: dict[str, Dataset]
    val_indices: list[int]
    val_source: str


class PaperLoader:
    """Task.loader for a paper dataset: builds the official splits on first use, holds out validation."""

    def __init__(self, name: str, root: Path, build: Callable[[Path], Official]):
        self.name, self.root, self._build = name, root, build

    @cached_property
    def splits(self) -> Splits:
        try:
            official = self._build(self.root)
        except PaintRayError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError, IndexError) as e:
            # torchvision and the parsers raise these for unreadable or malformed files: one line instead
            first = str(e).splitlines()[0] if str(e) else ""
            raise PaintRayError(f"{self.name}: cannot read the dataset under {self.root} "
                                f"({type(e).__name__}: {first})") from e
        if official.val is not None:
            return Splits({"train": official.train, "val": official.val, "test": official.test},
                          list(official.val_indices or []), official.val_source)
        train_idx, val_idx = held_out(len(official.train))
        return Splits({"train": Subset(official.train, train_idx), "val": Subset(official.train, val_idx),
                       "test": official.test}, val_idx,
                      f"official train split ({len(official.train)} images): min(10%, {MAX_VAL}) held out by "
                      f"random_split, seed {VAL_SEED}")

    def __call__(self, split: str) -> Dataset:
        return self.splits.data[split]

    @property
    def val_indices(self) -> list[int]:
        return list(self.splits.val_indices)

    @property
    def val_source(self) -> str:
        return self.splits.val_source


@dataclass(frozen=True)
class PaperDataset:
    """A registry entry: names, templates, files, and how to build the official splits."""
    name: str
    classnames: tuple[str, ...] | Callable[[], tuple[str, ...]]
    templates: tuple[str, ...] | Callable[[], tuple[str, ...]]
    spec: Spec
    build: Callable[[Path], Official] = field(repr=False)
    download: Callable[[Path], None] | None = field(default=None, repr=False)

    def task(self, data_root: str | os.PathLike | None = None) -> Task:
        root = check_layout(self.name, self.spec, data_root)
        names = self.classnames() if callable(self.classnames) else self.classnames
        templates = self.templates() if callable(self.templates) else self.templates
        return Task(self.name, tuple(names), tuple(templates), PaperLoader(self.name, root, self.build),
                    fingerprint(self.name, self.spec, root))


def read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class ClassIndex:
    """Class folder name -> label, from a dataset's fixed class list; unknown names are one-line errors."""

    def __init__(self, name: str, folders: Sequence[str]):
        self.name, self._index = name, {f: i for i, f in enumerate(folders)}

    def __call__(self, folder: str, where: Path | str) -> int:
        try:
            return self._index[folder]
        except KeyError:
            raise PaintRayError(f"{self.name}: unknown class {folder!r} in {where}") from None
