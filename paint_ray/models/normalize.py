"""uint8 images -> normalised model input, on whatever device the images already are.

Eval splits are stored once as uint8 N x 3 x S x S; this is the only per-batch preprocessing (the
reference code decodes and resizes every JPEG again for every alpha).
"""
from __future__ import annotations

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def normalization_of(preprocess_cfg: dict | None) -> dict[str, list[float]]:
    """The mean and std an open_clip preprocess config normalises with (OpenAI's when it names none)."""
    cfg = preprocess_cfg or {}
    return {"mean": [float(v) for v in cfg.get("mean", OPENAI_MEAN)], "std": [float(v) for v in cfg.get("std", OPENAI_STD)]}


def mean_std(visual: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    norm = normalization_of(getattr(visual, "preprocess_cfg", None))
    return tuple(norm["mean"]), tuple(norm["std"])


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None,
                 offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Translate each image by up to max_shift pixels (zero fill): cheap augmentation for small images.

    `offsets` (N x 2 in [0, 2·max_shift]) are drawn on `generator` unless given (a CPU generator, so a run
    resumes with it); the shift itself is one gather on the images' device, not a loop over images.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    if offsets is None:
        offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    offs = offsets.to(x.device, non_blocking=True)
    rows = (offs[:, :1] + torch.arange(h, device=x.device))[:, None, :, None]      # n x 1 x h x 1
    cols = (offs[:, 1:] + torch.arange(w, device=x.device))[:, None, None, :]      # n x 1 x 1 x w
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _mean_std_tensors(visual: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """mean and std as 1 x 3 x 1 x 1 tensors on `device`, made once per (values, device, dtype): building them
    per batch is a host-to-device copy and a sync in the hot loop."""
    mean, std = mean_std(visual)
    key = (mean, std, str(device), dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = (torch.tensor(mean, dtype=dtype).view(1, 3, 1, 1).to(device),
                           torch.tensor(std, dtype=dtype).view(1, 3, 1, 1).to(device))
    return _CONSTANTS[key]


def to_model_input(images: torch.Tensor, visual: torch.nn.Module, augment_shift: int = 0,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 N x 3 x H x W -> normalised float input for `visual` (optionally randomly shifted)."""
    images = random_shift(images, augment_shift, generator)
    mean, std = _mean_std_tensors(visual, images.device, dtype)
    return (images.to(dtype) / 255.0 - mean) / std
