"""The reference recipe's training augmentation, batched on the device: RandomResizedCrop(scale 0.9–1.0,
ratio 3/4–4/3, bicubic) as PAINT's code applies it to every training image.

Crop boxes are drawn exactly as torchvision's `RandomResizedCrop.get_params` draws them (same calls, same
order, so the same RNG state gives the same box), on each image's own height and width. Each box is then
resampled to the model's input size with antialiased bicubic interpolation, the operation torchvision's
`resized_crop` runs on tensors. Images come from the train cache (train_cache.py) at their full field of
view, so nothing is decoded per step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

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


def _resample(crop: torch.Tensor, size: int) -> torch.Tensor:
    """1 x 3 x h x w -> 1 x 3 x size x size float32, antialiased bicubic (torchvision's resize on float tensors)."""
    return F.interpolate(crop.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)


def resized_crop(image: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """One 3 x H x W image (any dtype, any device) cropped to `box` and resized to size x size: float32 in the
    image's value range, bicubic with antialiasing, rounded and clamped to 0..255 as a uint8 result would be."""
    top, left, h, w = box
    return _resample(image[None, :, top:top + h, left:left + w], size).round_().clamp_(0, 255)[0]


def random_resized_crops(images: Sequence[torch.Tensor], size: int, generator: torch.Generator | None = None,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """A batch (N x 3 x size x size, float32 0..255 on `device`) of one random crop per uint8 3 x H x W image.

    Boxes are drawn on the CPU generator (cheap, and resumable with it); each crop is copied to the device as
    uint8 and resampled there, so the host moves only the cropped bytes.
    """
    device = torch.device(device)
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    for k, image in enumerate(images):
        top, left, h, w = crop_params(int(image.shape[1]), int(image.shape[2]), generator)
        out[k] = _resample(image[None, :, top:top + h, left:left + w].to(device, non_blocking=True), size)[0]
    return out.round_().clamp_(0, 255)      # once per batch: what resized_crop does per image
