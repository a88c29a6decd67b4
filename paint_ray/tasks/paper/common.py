"""What every paper dataset shares: layout checks, fingerprints, held-out validation splits, a lazy loader.

A dataset module describes one dataset as a `Spec` (its files, its expected layout) plus a `build(root)`
that returns the official splits. `PaperDataset.task` makes a `Task` whose loader holds out validation
exactly as the PAINT reference code does when the dataset has no validation split of its own.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset, random_split

from ...errors import PaintRayError
from ...identity import digest
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
    files: tuple[str, ...]            # must exist as files; their bytes enter the fingerprint (`fingerprint`)
    dirs: tuple[str, ...] = ()        # must exist as folders; every file's name, size and mtime_ns too
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


# Index and archive files up to this size are hashed whole; larger ones by their size, first and last MiB.
HASH_LIMIT = 64 * 2**20
EDGE = 2**20
# Of an image folder, every file's relative name and size enter the fingerprint, and the first SAMPLE_BYTES
# of SAMPLE_FILES files chosen by name (the same files wherever the tree lies) enter by content.
SAMPLE_FILES = 1024
SAMPLE_BYTES = 64 * 2**10
# PAINT_RAY_FINGERPRINT=full hashes every byte of every file instead (slow on ImageNet: see `fingerprint`).
MODES = ("sampled", "full")
# Image folders with at least this many files are scanned once per process (see `fingerprint`).
MEMO_MIN_FILES = 20_000
_FOLDER_MEMO: dict[tuple[str, str, str], tuple[list[tuple[str, int]], str, int]] = {}


def shown(value: Any, limit: int = 80) -> str:
    """repr(value), cut to about `limit` characters: how a bad value is echoed in a one-line error."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def brief(e: BaseException, limit: int = 80) -> str:
    """'ExceptionType: first line of its message', the message cut to about `limit` characters."""
    first = str(e).splitlines()[0] if str(e) else ""
    first = first if len(first) <= limit else first[:limit - 1] + "…"
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _unreadable(name: str, path: Path, e: OSError) -> PaintRayError:
    return PaintRayError(f"{name}: cannot read {path} ({e.strerror or type(e).__name__}) while fingerprinting "
                         f"the dataset")


def fingerprint_mode() -> str:
    mode = os.environ.get("PAINT_RAY_FINGERPRINT", "sampled").strip().lower() or "sampled"
    if mode not in MODES:
        raise PaintRayError(f"PAINT_RAY_FINGERPRINT={mode!r} is not one of {', '.join(MODES)}")
    return mode


def _sha1(path: Path, start: int = 0, length: int | None = None) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            left = None if left is None else left - len(chunk)
    return h.hexdigest()


def _file_identity(name: str, path: Path) -> list[Any]:
    """[size, sha1 of the bytes] for a file up to HASH_LIMIT (or any file in 'full' mode), else
    [size, sha1 of its first MiB, sha1 of its last MiB]."""
    try:
        size = path.stat().st_size
        if size <= HASH_LIMIT or fingerprint_mode() == "full":
            return [size, "sha1", _sha1(path)]
        return [size, "edges", _sha1(path, 0, EDGE), _sha1(path, max(0, size - EDGE), EDGE)]
    except OSError as e:
        raise _unreadable(name, path, e) from e


def _sampled(rel: str, full: bool) -> bool:
    """Whether a file's content enters a folder's fingerprint: every file in 'full' mode, else the files whose
    name hashes into the lowest SAMPLE_FILES / 2**16 of the range (about SAMPLE_FILES per 65,536 files; all
    of a small tree: see `_folder_identity`)."""
    return full or int(hashlib.sha1(rel.encode("utf-8", "surrogateescape")).hexdigest()[:4], 16) < SAMPLE_FILES


def _folder_identity(name: str, folder: Path) -> tuple[str, int, list[tuple[str, int]]]:
    """(digest, number of files, [(folder, mtime_ns)]) of a tree: every entry's relative name and size, and the
    content of a sample of its files (the first SAMPLE_BYTES of each; every byte of every file in 'full' mode).

    One os.scandir pass; names are relative to `folder` and sorted per directory, so the digest does not depend
    on where the tree lies, on when its files were written (a copy that does not keep mtimes is the same data)
    or on the order the file system lists it. Links are followed (datasets are often linked in), each real
    directory once. A tree of at most SAMPLE_FILES files has every file sampled. The folders' mtimes come
    back for the per-process memo only (`folder_identity`); they never enter the digest.
    """
    full = fingerprint_mode() == "full"
    h = hashlib.sha1()
    files: list[tuple[str, Path, int]] = []
    dirs: list[tuple[str, int]] = []
    seen: set[tuple[int, int]] = set()
    stack = [("", folder)]
    while stack:
        rel, path = stack.pop()
        try:
            st = path.stat()
            if (st.st_dev, st.st_ino) in seen:       # a link back up the tree
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs.append((str(path), st.st_mtime_ns))
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
            subdirs = []
            for e in entries:
                est = e.stat()   # follows links; a dangling link raises, as reading it would
                child = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir():
                    h.update(f"D {child}\n".encode("utf-8", "surrogateescape"))
                    subdirs.append((child, Path(e.path)))
                else:
                    files.append((child, Path(e.path), est.st_size))
                    h.update(f"F {child} {est.st_size}\n".encode("utf-8", "surrogateescape"))
        except OSError as e:
            raise _unreadable(name, Path(e.filename) if e.filename else path, e) from e
        stack.extend(reversed(subdirs))
    small = len(files) <= SAMPLE_FILES
    try:
        for child, path, _ in files:
            if small or _sampled(child, full):
                h.update(f"C {child} {_sha1(path, 0, None if full else SAMPLE_BYTES)}\n".encode("utf-8", "surrogateescape"))
    except OSError as e:
        raise _unreadable(name, path, e) from e
    return h.hexdigest(), len(files), dirs


def _dirs_unchanged(dirs: list[tuple[str, int]]) -> bool:
    try:
        return all(os.stat(d).st_mtime_ns == m for d, m in dirs)
    except OSError:
        return False


def folder_identity(name: str, root: Path, rel: str) -> str:
    """The digest of root/rel, memoised per process per (root, rel) when the tree is large (see `fingerprint`)."""
    key = (str(root), rel, fingerprint_mode())
    memo = _FOLDER_MEMO.get(key)
    if memo is not None and _dirs_unchanged(memo[0]):
        return memo[1]
    digest, n_files, dirs = _folder_identity(name, root / rel)
    if n_files >= MEMO_MIN_FILES:
        _FOLDER_MEMO[key] = (dirs, digest, n_files)
    else:
        _FOLDER_MEMO.pop(key, None)
    return digest


def forget_fingerprints() -> None:
    """Drop this process's memo of large image folders, so the next fingerprint rescans them."""
    _FOLDER_MEMO.clear()


def fingerprint(name: str, spec: Spec, root: Path) -> str:
    """What identifies the data by its content, not by where it lies or when it was written: equal data, equal
    fingerprint, so a copy on every node of a cluster (with or without its mtimes) shares one fingerprint, its
    θ1s and its results.

    It hashes the task name, SPLITS_VERSION, the fingerprint mode and, by their paths relative to the data
    root (never the root itself):

    * each index or archive file of `spec.files` (IDX files, pickles, .mat, .json, .csv, .txt, .zip) by its
      bytes (sha1) when it is at most HASH_LIMIT (64 MiB), else by its size and its first and last MiB;
    * each folder of `spec.dirs` by every file's relative name and size, every subfolder's name, and the first
      64 KiB of a sample of about 1,024 files in 65,536 (chosen by name, so the same files on every node; all
      files of a tree of at most 1,024).

    What it costs: a stat of every file (one os.scandir pass: seconds for ImageNet's 1.28 M images) and a read
    of 64 KiB of about 1.6% of the images (about 1.3 GB of ImageNet's ~150 GB; the test fixtures read every
    file). The gap it leaves: a file rewritten in place with other bytes of the same size, outside the sample
    and (for large index files) outside its first and last MiB. `PAINT_RAY_FINGERPRINT=full` closes it by
    hashing every byte of every file (ImageNet: ~150 GB read, minutes per node at disk speed).

    Scanning stats every image; so a tree of at least MEMO_MIN_FILES files is scanned once per process per
    (root, folder) and reused while the mtimes of all its folders are unchanged, which catches files added,
    removed or renamed. Images of such a tree rewritten in place under the same names while a process runs are
    seen by the next process (or after `forget_fingerprints()`); smaller trees are rescanned on every call.
    """
    mode = fingerprint_mode()
    parts: list[Any] = [name, SPLITS_VERSION] + ([] if mode == "sampled" else [mode])
    for rel in spec.files:
        parts.append([rel, *_file_identity(name, root / rel)])
    for rel in spec.dirs:
        parts.append([rel + "/", folder_identity(name, root, rel)])
    return f"{name}-" + digest(parts)


@dataclass(frozen=True)
class Splits:
    """train/val/test as the task serves them, and where the validation indices point."""
    data: dict[str, Dataset]
    val_indices: list[int]
    val_source: str


class PaperLoader:
    """Task.loader for a paper dataset: builds the official splits on first use, holds out validation."""

    def __init__(self, name: str, root: Path, build: Callable[[Path], Official], layout: str = ""):
        self.name, self.root, self._build, self.layout = name, root, build, layout

    @cached_property
    def splits(self) -> Splits:
        try:
            official = self._build(self.root)
        except PaintRayError as e:
            if str(e).startswith(f"{self.name}:"):
                raise
            raise PaintRayError(f"{self.name}: {e}") from e
        except (OSError, RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError, EOFError,
                AssertionError, pickle.UnpicklingError, struct.error, zipfile.BadZipFile) as e:
            # torchvision and the parsers raise these for unreadable or malformed files: one line instead.
            # The readers here name the file where they can; this is the fallback for the rest.
            raise PaintRayError(f"{self.name}: cannot read the dataset under {self.root} ({brief(e)}); "
                                f"expected: {self.layout}") from e
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
        loader = PaperLoader(self.name, root, self.build, self.spec.layout)
        return Task(self.name, tuple(names), tuple(templates), loader,
                    fingerprint(self.name, self.spec, root))


def read_text(path: Path, what: str) -> str:
    """A text file's contents; bytes that are not UTF-8 are a one-line error naming the file and `what`."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PaintRayError(f"{path} is not a text file (byte 0x{data[e.start]:02x} at offset {e.start} is not "
                            f"UTF-8); expected {what}") from e


def load_mat(path: Path, what: str, squeeze_me: bool = False) -> dict:
    """A MATLAB .mat file's variables; anything scipy cannot read is a one-line error naming the file."""
    import scipy.io
    try:
        return scipy.io.loadmat(str(path), squeeze_me=squeeze_me)
    except Exception as e:  # noqa: BLE001 - scipy raises ValueError, OSError, MatReadError, … on garbage
        raise PaintRayError(f"{path} is not a readable .mat file ({brief(e, 60)}); expected {what}") from e


def read_lines(path: Path, what: str = "a text file, one entry per line") -> list[str]:
    return [line.strip() for line in read_text(path, what).splitlines() if line.strip()]


class ClassIndex:
    """Class folder name -> label, from a dataset's fixed class list; unknown names are one-line errors."""

    def __init__(self, name: str, folders: Sequence[str]):
        self.name, self._index = name, {f: i for i, f in enumerate(folders)}

    def __call__(self, folder: str, where: Path | str) -> int:
        try:
            return self._index[folder]
        except KeyError:
            raise PaintRayError(f"{self.name}: unknown class {shown(folder)} in {where}") from None
