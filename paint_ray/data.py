"""Splits preprocessed once into uint8 tensors at the model's resolution (the evaluation currency).

Normalisation happens per batch on the device (models/normalize.py); nothing is decoded twice.

May import: errors, tasks
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .tasks import ArraySplit


@dataclass(frozen=True)
class PreparedSplit:
    images: torch.Tensor   # uint8, N x 3 x S x S
    labels: torch.Tensor   # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "PreparedSplit":
        return PreparedSplit(self.images.to(device), self.labels.to(device))


def resize_center_crop(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """Bicubic resize of the shorter side to `size`, centre crop: open_clip's eval transform, kept uint8."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image = image.convert("RGB")
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)))


def prepare(data, image_size: int) -> PreparedSplit:
    """Any split (ArraySplit or a dataset of (image, label)) -> PreparedSplit at `image_size`."""
    if isinstance(data, ArraySplit) and data.images.shape[1:3] == (image_size, image_size):
        images = data.images
        labels = data.labels
    else:
        items = [data[i] for i in range(len(data))]
        images = np.stack([resize_center_crop(img, image_size) for img, _ in items]) if items else \
            np.zeros((0, image_size, image_size, 3), np.uint8)
        labels = np.array([y for _, y in items], dtype=np.int64)
    return PreparedSplit(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))),
                         torch.from_numpy(np.asarray(labels, dtype=np.int64)))


def image_size_of(visual: torch.nn.Module) -> int:
    size = visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)
