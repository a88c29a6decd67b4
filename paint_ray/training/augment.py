"""The reference recipe's training augmentation, batched on the device: RandomResizedCrop(scale 0.9–1.0,
ratio 3/4–4/3, bicubic) as PAINT's code applies it to every training image.

Crop boxes are drawn exactly as torchvision's `RandomResizedCrop.get_params` draws them (same calls, same
order, so the same RNG state gives the same box), on each image's own height and width. Each box is then
resampled to the model's input size with antialiased bicubic interpolation, torchvision's `resized_crop` on
tensors: as the separable filter it is, two matrix products per image whose rows are exactly the filter
taps torch computes (`resize_weights`). A whole batch is one batched product on the device, and the host
sends one padded uint8 buffer of the cropped bytes (`CropBatch`), not one copy and one kernel per image.
It equals torchvision's result up to float rounding (a grey level at most, in a few pixels of a thousand).
Images come from the train cache (caches/train.py) at their full field of view: nothing is decoded per step.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

SCALE = (0.9, 1.0)           # the reference's RandomResizedCrop(scale=(0.9, 1.0))
RATIO = (3 / 4, 4 / 3)       # torchvision's default ratio


def crop_params(height: int, width: int, generator: torch.Generator | None = None,
                scale: tuple[float, float] = SCALE, ratio: tuple[float, float] = RATIO) -> tuple[int, int, int, int]:
    """(top, left, h, w) of one crop: torchvision's RandomResizedCrop.get_params, call for call.

    Up to 10 tries of an area fraction uniform in `scale` and a log-uniform aspect ratio in `ratio`; when no
    try fits, the centre crop of the whole image clamped to the ratio bounds.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return int(i), int(j), h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@functools.lru_cache(maxsize=4096)
def resize_weights(in_size: int, out_size: int) -> torch.Tensor:
    """out_size x in_size matrix of antialiased bicubic taps (a = -0.5, PIL's and torch's antialias filter):
    row i holds the normalised weights torch's `interpolate(..., antialias=True)` gives output pixel i.
    Cached: crop sides repeat from step to step, and building one costs more than applying it on a CPU.
    Callers copy it or read it; never write into it."""
    scale = in_size / out_size
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    centres = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    lo = (centres - support + 0.5).floor().clamp(min=0)                 # int(center - support + 0.5), >= 0
    hi = (centres + support + 0.5).floor().clamp(max=in_size)
    j = torch.arange(in_size, dtype=torch.float64)
    x = ((j[None, :] - centres[:, None] + 0.5) * inv).abs()
    a = -0.5
    w = torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    torch.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, torch.zeros_like(x)))
    w = torch.where((j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None]), w, torch.zeros_like(w))
    return (w / w.sum(1, keepdim=True)).float()


def _resample(crop: torch.Tensor, size: int) -> torch.Tensor:
    """1 x 3 x h x w -> 1 x 3 x size x size float32: the antialiased bicubic resize as two matrix products."""
    wy = resize_weights(crop.shape[-2], size).to(crop.device)
    wx = resize_weights(crop.shape[-1], size).to(crop.device)
    return wy @ crop.float() @ wx.T


def resized_crop(image: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """One 3 x H x W image (any dtype, any device) cropped to `box` and resized to size x size: float32 in the
    image's value range, bicubic with antialiasing, rounded and clamped to 0..255 as a uint8 result would be."""
    top, left, h, w = box
    return _resample(image[None, :, top:top + h, left:left + w], size).round_().clamp_(0, 255)[0]


class CropBatch:
    """One batch of crops as the host prepares it: the cropped bytes in one zero-padded uint8 tensor
    (N x 3 x Hmax x Wmax) and each crop's resize matrices padded alike (zero weight on the padding)."""

    def __init__(self, images: Sequence[torch.Tensor], size: int, generator: torch.Generator | None = None):
        boxes = [crop_params(int(im.shape[1]), int(im.shape[2]), generator) for im in images]
        hmax = max((b[2] for b in boxes), default=1)
        wmax = max((b[3] for b in boxes), default=1)
        self.pixels = torch.zeros((len(images), 3, hmax, wmax), dtype=torch.uint8)
        self.wy = torch.zeros((len(images), size, hmax))
        self.wx = torch.zeros((len(images), size, wmax))
        for k, (image, (top, left, h, w)) in enumerate(zip(images, boxes)):
            self.pixels[k, :, :h, :w] = image[:, top:top + h, left:left + w]
            self.wy[k, :, :h] = resize_weights(h, size)
            self.wx[k, :, :w] = resize_weights(w, size)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "CropBatch":
        """The batch on `device` (from pinned memory when `non_blocking`, so the copy overlaps compute)."""
        out = object.__new__(CropBatch)
        for name in ("pixels", "wy", "wx"):
            t = getattr(self, name)
            setattr(out, name, (t.pin_memory() if non_blocking else t).to(device, non_blocking=non_blocking))
        return out

    def resample(self) -> torch.Tensor:
        """N x 3 x size x size float32 0..255, on the batch's device: one batched product for all crops."""
        x = torch.matmul(self.wy[:, None], self.pixels.float())            # N x 3 x size x Wmax
        return torch.matmul(x, self.wx[:, None].transpose(-1, -2)).round_().clamp_(0, 255)


def random_resized_crops(images: Sequence[torch.Tensor], size: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """A batch (N x 3 x size x size, float32 0..255 on `device`) of one random crop per uint8 3 x H x W image."""
    return CropBatch(images, size, generator).to(device).resample()
