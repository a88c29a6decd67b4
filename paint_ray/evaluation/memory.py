"""What an evaluator may hold on its device: parsing `--eval-memory`, the default, the minimum.

The budget counts every byte an evaluator host keeps on its device: each model's θ0 and its live θα, the
θ1s (and sequential start points) it holds, its heads, and the eval images and labels it keeps resident
(uint8, N x 3 x S x S). Eval data beyond it streams from the node's cache; θ1s beyond it are evicted
least recently used (evaluation/residency.py). The default is measured once the models are loaded: what
is held then plus a share of what the device still has free (half a GPU's free memory: the other half is
for activations; a quarter of the host's available RAM, split among the node's evaluators, on CPUs).
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

from ..errors import PaintRayError

if TYPE_CHECKING:
    import torch

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
         "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}
GPU_FRACTION = 0.5      # of the free device memory: the rest is for θ0, θ1s, θα and activations
CPU_FRACTION = 0.25     # of the available host RAM: other evaluators, Tune trials and the page cache share it
EVAL_BATCH = 512


def parse_bytes(text: str | int | float, flag: str = "--eval-memory") -> int:
    """'24GiB', '500MB', '1.5g' or a plain byte count -> bytes; a one-line error otherwise."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in UNITS:
            raise PaintRayError(f"{flag} {str(text)!r} is not a size; give e.g. 16GiB, 500MB or a byte count")
        value, unit = float(m.group(1)), m.group(2).lower()
    size = value * UNITS[unit]
    if not math.isfinite(size) or size < 1:
        raise PaintRayError(f"{flag} {text!r} must be a positive size, e.g. 16GiB")
    return int(size)


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def image_bytes(n: int, image_size: int) -> int:
    """Bytes of n eval images (uint8, 3 channels) and their int64 labels at `image_size` px."""
    return n * (3 * image_size * image_size + 8)


def min_budget(image_size: int, batch: int = EVAL_BATCH) -> int:
    """The least an evaluator can work with: one eval batch resident while it streams the rest."""
    return image_bytes(batch, image_size)


def check_budget(budget: int, image_size: int, batch: int = EVAL_BATCH, flag: str = "--eval-memory") -> None:
    need = min_budget(image_size, batch)
    if budget < need:
        raise PaintRayError(f"{flag} {format_bytes(budget)} is below one eval batch ({batch} images at "
                            f"{image_size} px = {format_bytes(need)}); give at least {format_bytes(need)}")


def available_host_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else the physical memory size."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget(device: str | torch.device, held: int = 0, peers: int = 1) -> int:
    """`held` bytes already on the device plus a safe share of what it has free now: GPU memory on CUDA,
    host RAM on CPUs (divided among the `peers` evaluators of the node)."""
    import torch
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(held + free * GPU_FRACTION)
    return int(held + available_host_bytes() * CPU_FRACTION / max(1, peers))


def tensor_bytes(tensors) -> int:
    """Bytes of a list (or dict values) of tensors."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return sum(t.nelement() * t.element_size() for t in values)


def image_size_of_spec(spec: str) -> int | None:
    """A model's input resolution from its open_clip config, without loading weights (None if unknown)."""
    import open_clip

    import paint_ray.models.registry  # noqa: F401  (registers the embedded configs)
    arch = spec.strip()
    if arch.startswith(("hf-hub:", "local-dir:")) or "/" in arch.split(":", 1)[0]:
        return None
    cfg = open_clip.get_model_config(arch.split(":", 1)[0])
    if not cfg:
        return None
    size = cfg.get("vision_cfg", {}).get("image_size")
    return int(size[0] if isinstance(size, list | tuple) else size) if size else None
