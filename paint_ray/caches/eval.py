"""Eval splits decoded and resized once per node into uint8 tensors, and the key of what an accuracy is on.

An entry is the uint8 result of `data.resize_center_crop` for every item of a split (images N x 3 x S x S,
labels N) saved as .npy under PAINT_RAY_HOME/eval_cache and read back memory-mapped, so a later run, an α
sweep or another Ray worker on the node pays a page-cache read instead of JPEG decoding. Its key
(entry.key) hashes everything the bytes depend on: the task's data fingerprint, the split, the image size,
the resize mode, the normalisation (none: it happens per batch on the device) and the cache's version.

`task_key(task)` is what an accuracy on a task depends on besides the model: its data, how it is prepared
here (PREPARATION), and its head's prompts. Result rows are keyed by it, never by the task's name.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data import PreparedSplit, prepare, resize_center_crop
from ..errors import PaintRayError
from ..paths import home
from ..tasks import ArraySplit, Task
from ..identity import digest
from . import entry

CACHE_VERSION = "2"
RESIZE_MODE = "bicubic-shorter-side+center-crop"   # what data.resize_center_crop does
NORMALIZATION = "none-uint8"                          # mean/std are applied per batch on the device
# how eval data is prepared, whatever the data: part of every row's task key and of shift-recipe θ1 keys
PREPARATION = entry.key("eval", CACHE_VERSION, RESIZE_MODE, NORMALIZATION)
BATCH = 64


def task_key(task: Task) -> str:
    """What an accuracy on `task` depends on besides the model: its data (fingerprint), how it is prepared,
    and its head's prompts and answer groups. Never its name."""
    return digest([task.fingerprint, PREPARATION, task.prompt_key])


def cache_root() -> Path:
    return home() / "eval_cache"


def cache_key(task: Task, split: str, image_size: int) -> str:
    return entry.key("eval", CACHE_VERSION, task.fingerprint, split, int(image_size), RESIZE_MODE, NORMALIZATION)


def entry_dir(task: Task, split: str, image_size: int) -> Path:
    """The entry's folder: the task's name and size for reading, its content key for identity."""
    return cache_root() / f"{task.name}-{split}-{image_size}px-{cache_key(task, split, image_size)}"


class Decoded(Dataset):
    """`resize(image, size)` of one item (in a DataLoader worker), CHW uint8; failures come back as one-line
    messages. Shared by the eval cache (resize + centre crop) and the train cache (whole image, bounded)."""

    def __init__(self, data, size: int, resize=None):
        self.data, self.size, self.resize = data, size, resize or resize_center_crop

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        try:
            image, label = self.data[i]
            return self.resize(image, self.size).transpose(2, 0, 1), int(label), None
        except Exception as e:  # noqa: BLE001 - any unreadable item becomes one line, not a worker traceback
            first = str(e).splitlines()[0] if str(e) else ""
            return None, -1, f"item {i}: {type(e).__name__}: {first}"


def _workers(n: int) -> int:
    # Worker processes pay off only when there is enough to decode; small splits decode in-process.
    return 0 if n < 512 else min(os.cpu_count() or 1, 16)


def decode_into(data, image_size: int, images: np.ndarray, labels: np.ndarray, desc: str = "decoding",
                progress: bool = True) -> None:
    """Fill images (N x 3 x S x S uint8) and labels (N) from any map-style (image, label) dataset, in order."""
    from tqdm.auto import tqdm

    from ..data import prepare
    from ..tasks import ArraySplit
    n = len(data)
    if isinstance(data, ArraySplit):     # generated in memory: one vectorised pass, same bytes as per item
        ready = prepare(data, image_size)
        images[:] = ready.images.numpy()
        labels[:] = ready.labels.numpy()
        return
    loader = DataLoader(Decoded(data, image_size), batch_size=BATCH, num_workers=_workers(n),
                        collate_fn=list, shuffle=False)
    gb = n * 3 * image_size * image_size / 1e9
    bar = tqdm(total=n, unit="img", desc=f"{desc} ({n:,} images → {gb:.2f} GB uint8 at {image_size}px)",
               disable=None if progress else True, leave=False)
    start = 0
    with bar:
        for batch in loader:
            for k, (image, label, error) in enumerate(batch):
                if error is not None:
                    raise PaintRayError(f"cannot read {desc}: {error}")
                images[start + k] = image
                labels[start + k] = label
            start += len(batch)
            bar.update(len(batch))


def decode(data, image_size: int, desc: str = "decoding", progress: bool = True) -> PreparedSplit:
    """Decode a split into memory (no cache): the path the cache replaces."""
    images = np.empty((len(data), 3, image_size, image_size), np.uint8)
    labels = np.empty(len(data), np.int64)
    decode_into(data, image_size, images, labels, desc, progress)
    return PreparedSplit(torch.from_numpy(images), torch.from_numpy(labels))


def _read(path: Path) -> PreparedSplit | None:
    try:
        images = np.load(path / "images.npy", mmap_mode="r")
        labels = np.load(path / "labels.npy")
    except (OSError, ValueError):
        return None
    if images.ndim != 4 or len(images) != len(labels):
        return None
    with warnings.catch_warnings():
        # The memory map is read-only on purpose: evaluation and fine-tuning only ever read these pixels.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return PreparedSplit(torch.from_numpy(images), torch.from_numpy(labels))


def lookup(task: Task, split: str, image_size: int) -> PreparedSplit | None:
    """The cached entry for this split at this size, or None."""
    if not task.fingerprint:
        return None
    path = entry_dir(task, split, image_size)
    return _read(path) if (path / "meta.json").is_file() else None


def _build(data, path: Path, desc: str, progress: bool, meta: dict) -> None:
    with entry.building(path, "eval cache") as tmp:
        n, size = len(data), meta["image_size"]
        if n:
            images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                               shape=(n, 3, size, size))
        else:  # a zero-length memory map cannot be created
            images = np.empty((0, 3, size, size), np.uint8)
        labels = np.empty(n, np.int64)
        t0 = time.time()
        decode_into(data, size, images, labels, desc, progress)
        if n:
            images.flush()
            del images
        else:
            np.save(tmp / "images.npy", images)
        np.save(tmp / "labels.npy", labels)
        (tmp / "meta.json").write_text(json.dumps({**meta, "n": n, "build_s": round(time.time() - t0, 3)}, indent=2))


def cached_prepare(task: Task, split: str, image_size: int, data=None, progress: bool = True) -> PreparedSplit:
    """The split decoded and resized to `image_size` once, then read from the on-disk cache."""
    hit = lookup(task, split, image_size)
    if hit is not None:
        return hit
    if not task.fingerprint:   # nothing identifies the data, so nothing decoded could be safely reused
        return decode(task.split(split) if data is None else data, image_size, f"{task.name}/{split}", progress)
    path = entry_dir(task, split, image_size)
    held = entry.lock(path, "eval cache")
    try:
        hit = lookup(task, split, image_size)   # another process may have built it while we waited
        if hit is not None:
            return hit
        data = task.split(split) if data is None else data
        meta = {"task": task.name, "fingerprint": task.fingerprint, "split": split, "image_size": int(image_size),
                "resize": RESIZE_MODE, "normalization": NORMALIZATION, "version": CACHE_VERSION}
        _build(data, path, f"{task.name}/{split}", progress, meta)
    finally:
        held.release()
    out = lookup(task, split, image_size)
    if out is None:
        raise PaintRayError(f"eval cache entry {path} could not be read back after writing it")
    return out


def prepare_task(task: Task, split: str, image_size: int) -> PreparedSplit:
    """A split at `image_size`: in-memory splits are prepared here, on-disk ones through the cache (decoded once)."""
    hit = lookup(task, split, image_size)   # a hit skips even listing the dataset's files
    if hit is not None:
        return hit
    data = task.split(split)
    if isinstance(data, ArraySplit):
        return prepare(data, image_size)
    return cached_prepare(task, split, image_size, data=data)
