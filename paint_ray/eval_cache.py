"""On-disk cache of decoded, resized splits: each image file is decoded once per preprocessing, ever.

An entry is the uint8 result of `data.resize_center_crop` for every item of a split (images N x 3 x S x S,
labels N) saved as .npy under PAINT_RAY_HOME/eval_cache and read back memory-mapped, so a later run, an α
sweep or another Ray worker on the node pays a page-cache read instead of JPEG decoding. The key hashes
everything the bytes depend on: the task fingerprint (which identifies the files on disk), the split, the
image size, the resize mode and the normalisation (none: normalising happens per batch on the device).
Entries are built in a temporary folder and renamed into place, under a file lock, so a crash never leaves
a half-written entry and concurrent builders decode once.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .data import PreparedSplit, resize_center_crop
from .errors import PaintRayError
from .paths import home
from .tasks import Task

CACHE_VERSION = "1"
RESIZE_MODE = "bicubic-shorter-side+center-crop"   # what data.resize_center_crop does
NORMALIZATION = "none-uint8"                          # mean/std are applied per batch on the device
BATCH = 64


def cache_root() -> Path:
    return home() / "eval_cache"


def cache_key(task: Task, split: str, image_size: int) -> str:
    parts = [CACHE_VERSION, task.name, task.fingerprint, split, int(image_size), RESIZE_MODE, NORMALIZATION]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def entry_dir(task: Task, split: str, image_size: int) -> Path:
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

    from .data import prepare
    from .tasks import ArraySplit
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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir(parents=True)
    try:
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
        meta = {**meta, "n": n, "build_s": round(time.time() - t0, 3)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        for f in tmp.iterdir():         # on disk before the rename publishes the entry: a power cut leaves none
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        if path.exists():   # a stale or corrupt entry under the same key
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def entry_lock(path: Path, cache: str):
    """The acquired file lock of a cache entry (one builder per node); a one-line error when the cache's
    folder cannot be written. Shared by the eval and the train cache."""
    from filelock import FileLock
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as e:
        raise PaintRayError(f"cannot write the {cache} under {path.parent}: {e.strerror or e}; "
                            f"set PAINT_RAY_HOME to a writable folder") from e
    return lock


def cached_prepare(task: Task, split: str, image_size: int, data=None, progress: bool = True) -> PreparedSplit:
    """The split decoded and resized to `image_size` once, then read from the on-disk cache."""
    hit = lookup(task, split, image_size)
    if hit is not None:
        return hit
    if not task.fingerprint:   # nothing identifies the data, so nothing decoded could be safely reused
        return decode(task.split(split) if data is None else data, image_size, f"{task.name}/{split}", progress)
    path = entry_dir(task, split, image_size)
    lock = entry_lock(path, "eval cache")
    try:
        hit = lookup(task, split, image_size)   # another process may have built it while we waited
        if hit is not None:
            return hit
        data = task.split(split) if data is None else data
        meta = {"task": task.name, "fingerprint": task.fingerprint, "split": split, "image_size": int(image_size),
                "resize": RESIZE_MODE, "normalization": NORMALIZATION, "version": CACHE_VERSION}
        try:
            _build(data, path, f"{task.name}/{split}", progress, meta)
        except OSError as e:
            raise PaintRayError(f"cannot write the eval cache entry {path}: {e.strerror or e}") from e
    finally:
        lock.release()
    out = lookup(task, split, image_size)
    if out is None:
        raise PaintRayError(f"eval cache entry {path} could not be read back after writing it")
    return out
