"""uint8 images -> normalised model input, on whatever device the images already are.

Eval splits are stored once as uint8 N x 3 x S x S; this is the only per-batch preprocessing (the
reference code decodes and resizes every JPEG again for every alpha).
"""
from __future__ import annotations

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def mean_std(visual: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(visual, "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (zero fill): cheap augmentation for small images."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs.tolist())])


def to_model_input(images: torch.Tensor, visual: torch.nn.Module, augment_shift: int = 0,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 N x 3 x H x W -> normalised float input for `visual` (optionally randomly shifted)."""
    images = random_shift(images, augment_shift, generator)
    mean, std = mean_std(visual)
    mean_t = torch.tensor(mean, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    return (images.to(dtype) / 255.0 - mean_t) / std_t
