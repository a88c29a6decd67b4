"""Training images at their full field of view, decoded once: what the reference recipe's crops are cut from.

The eval cache (eval_cache.py) stores the centre crop at the model's input size; RandomResizedCrop needs the
whole image. So each training image is decoded once to uint8 at a bounded resolution:

* its shorter side is min(native shorter side, `full_view_side(image_size)`), which is image_size × 8/7
  rounded up (256 for 224 px models, the usual resize-256 / crop-224 margin), aspect ratio kept;
* its longer side is at most 4 × that side (wider panoramas are scaled down further, whole);
* images already within the bound are stored unresampled (MNIST stays 28 × 28, as the reference crops it).

Keeping the aspect ratio keeps the crop-box distribution the reference sees (boxes are drawn on each image's
own height and width), and a crop of at least 90% of the area is then resampled about 1:1 to the input size.
Images are stored back to back (no padding) in one raw uint8 file with an index of (offset, height, width),
read memory-mapped. An entry is keyed by the task's data fingerprint, the split, the bound and the resize
mode; it is built in a temporary folder, fsynced and renamed into place under a file lock, like the eval cache.

`train_key(task, recipe)` is what a fine-tuning job's result depends on of a task: its data, how the recipe's
training images are prepared (here for the reference crop, by the eval cache for the shift), its prompts.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ..errors import PaintRayError
from ..identity import digest
from . import entry
from .eval import PREPARATION as EVAL_PREPARATION, Decoded
from ..paths import home
from ..tasks import ArraySplit, Task

CACHE_VERSION = "2"
RESIZE_MODE = "pil-bicubic-shorter-side<=S,longer<=4S,aspect-kept"
MAX_ASPECT = 4
PREPARATION = entry.key("train", CACHE_VERSION, RESIZE_MODE, MAX_ASPECT)
BATCH = 64


def train_key(task: Task, recipe) -> str:
    """What a θ1 depends on of `task`: its data, the preparation of the training images the recipe's
    augmentation reads (the full view for 'rrc', the eval cache's input-size crop for 'shift'), its prompts."""
    preparation = PREPARATION if recipe.augment == "rrc" else EVAL_PREPARATION
    return digest([task.fingerprint, preparation, task.prompt_key])


def full_view_side(image_size: int) -> int:
    """The bound on the stored shorter side: image_size × 8/7, rounded up (224 -> 256)."""
    return math.ceil(image_size * 8 / 7)


def bounded(image: Image.Image | np.ndarray, side: int) -> np.ndarray:
    """H x W x 3 uint8 of the whole image, shorter side at most `side`, longer at most MAX_ASPECT × side."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    w, h = image.size
    scale = min(1.0, side / min(w, h), MAX_ASPECT * side / max(w, h))
    if scale < 1.0:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return np.asarray(image)


@dataclass(frozen=True)
class FullViewSplit:
    """Variable-size uint8 images stored back to back: `pixels` (flat), `index` N x 3 (offset, h, w), labels."""
    pixels: torch.Tensor
    index: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        offset, h, w = (int(v) for v in self.index[i])
        return self.pixels[offset:offset + 3 * h * w].view(3, h, w)

    def images(self, idx: torch.Tensor) -> list[torch.Tensor]:
        return [self.image(int(i)) for i in idx]


def from_arrays(images: list[np.ndarray], labels: np.ndarray) -> FullViewSplit:
    """A FullViewSplit in memory from H x W x 3 uint8 arrays."""
    chw = [np.ascontiguousarray(a.transpose(2, 0, 1)) for a in images]
    sizes = np.array([a.size for a in chw], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if len(chw) else np.zeros(0, np.int64)
    index = np.stack([offsets, [a.shape[1] for a in chw], [a.shape[2] for a in chw]], 1) if chw else \
        np.zeros((0, 3), np.int64)
    flat = np.concatenate([a.reshape(-1) for a in chw]) if chw else np.zeros(0, np.uint8)
    return FullViewSplit(torch.from_numpy(flat), torch.from_numpy(index.astype(np.int64)),
                         torch.from_numpy(np.asarray(labels, np.int64)))


def cache_key(task: Task, split: str, side: int) -> str:
    return entry.key("train", CACHE_VERSION, task.fingerprint, split, int(side), MAX_ASPECT, RESIZE_MODE)


def entry_dir(task: Task, split: str, side: int) -> Path:
    return home() / "train_cache" / f"{task.name}-{split}-fullview{side}-{cache_key(task, split, side)}"


def _read(path: Path) -> FullViewSplit | None:
    try:
        pixels = np.memmap(path / "pixels.u8", np.uint8, mode="r") if (path / "pixels.u8").stat().st_size else \
            np.zeros(0, np.uint8)
        index, labels = np.load(path / "index.npy"), np.load(path / "labels.npy")
    except (OSError, ValueError):
        return None
    if index.ndim != 2 or len(index) != len(labels) or \
            (len(index) and int(index[-1, 0] + 3 * index[-1, 1] * index[-1, 2]) != len(pixels)):
        return None
    with warnings.catch_warnings():   # read-only on purpose: training only reads these pixels
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return FullViewSplit(torch.from_numpy(pixels), torch.from_numpy(index), torch.from_numpy(labels))


def _build(data, path: Path, side: int, desc: str, progress: bool, meta: dict) -> None:
    from tqdm.auto import tqdm
    with entry.building(path, "train cache") as tmp:
        n = len(data)
        index = np.zeros((n, 3), np.int64)
        labels = np.zeros(n, np.int64)
        workers = 0 if n < 512 else min(os.cpu_count() or 1, 16)
        loader = DataLoader(Decoded(data, side, bounded), batch_size=BATCH, num_workers=workers, collate_fn=list)
        offset, k = 0, 0
        with open(tmp / "pixels.u8", "wb") as f, tqdm(total=n, unit="img", desc=f"{desc} (full view, ≤{side}px)",
                                                      disable=None if progress else True, leave=False) as bar:
            for batch in loader:
                for chw, label, error in batch:
                    if error is not None:
                        raise PaintRayError(f"cannot read {desc}: {error}")
                    f.write(chw.tobytes())
                    index[k] = (offset, chw.shape[1], chw.shape[2])
                    labels[k] = label
                    offset += chw.size
                    k += 1
                bar.update(len(batch))
        np.save(tmp / "index.npy", index)
        np.save(tmp / "labels.npy", labels)
        (tmp / "meta.json").write_text(json.dumps({**meta, "n": n, "bytes": offset}, indent=2))


def full_view(task: Task, split: str, image_size: int, progress: bool = True) -> FullViewSplit:
    """The split's images at their full field of view (bounded as above): in memory for generated tasks,
    else decoded once into the train cache and read from it afterwards."""
    side = full_view_side(image_size)
    path = entry_dir(task, split, side)
    if task.fingerprint and (path / "meta.json").is_file() and (hit := _read(path)) is not None:
        return hit      # a hit skips even listing the dataset's files
    data = task.split(split)
    if not task.fingerprint or isinstance(data, ArraySplit):   # generated in memory: nothing to cache
        return from_arrays([bounded(data[i][0], side) for i in range(len(data))],
                           np.array([int(data[i][1]) for i in range(len(data))], np.int64))
    held = entry.lock(path, "train cache")
    try:
        if not ((path / "meta.json").is_file() and _read(path) is not None):
            meta = {"task": task.name, "fingerprint": task.fingerprint, "split": split, "side": side,
                    "max_aspect": MAX_ASPECT, "resize": RESIZE_MODE, "version": CACHE_VERSION}
            _build(data, path, side, f"{task.name}/{split}", progress, meta)
    finally:
        held.release()
    out = _read(path)
    if out is None:
        raise PaintRayError(f"train cache entry {path} could not be read back after writing it")
    return out


def train_split(task: Task, recipe, image_size: int):
    """What a fine-tuning job trains on: full-view images for the reference crop ('rrc'), else the split
    prepared at the input size (the centre crop the 'shift' augmentation moves around)."""
    if recipe.augment == "rrc":
        return full_view(task, "train", image_size)
    from .eval import prepare_task
    return prepare_task(task, "train", image_size)
