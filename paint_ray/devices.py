"""Devices and numeric precision, decided once here and asked of tensors, never by comparing device objects.

- `resolve(device)`: 'cuda' becomes 'cuda:<current index>' (a tensor on the GPU reports `cuda:0`, and
  `torch.device('cuda') == torch.device('cuda:0')` is False: code that compares device objects breaks on
  first contact with a GPU). Decisions ask the tensor instead: `t.is_cuda`, `t.device.type`.
- Evaluation precision: bf16 autocast where the device computes bf16 natively (CUDA, CPUs with AVX512-BF16
  or AMX: toy-m 5,544 vs 1,859 img/s on a 2-core AVX512-BF16 CPU), fp32 elsewhere, where bf16 is emulated
  and slower. `PAINT_RAY_EVAL_PRECISION=fp32|bf16` overrides. Evaluation is deterministic in either: the
  same batches through the same kernels give the same counts, so a recompute or a patched model loaded
  back reproduces its rows exactly.
- Fine-tuning precision (a recipe's `precision`, part of the θ1 key): 'fp32' (strict fp32 matmuls), 'tf32'
  (fp32 storage, TF32 tensor-core matmuls on Ampere and newer GPUs; exactly fp32 on CPUs) and 'bf16'
  (autocast). Fine-tuning stays fp32 on CPUs: autocast's backward gained nothing there (0.202 vs 0.218 s
  per toy-m step).

May import: errors
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache

import torch

from .errors import PaintRayError

PRECISIONS = ("bf16", "fp32")               # evaluation
TRAIN_PRECISIONS = ("fp32", "tf32", "bf16")  # fine-tuning


def resolve(device: torch.device | str | None = None) -> torch.device:
    """A concrete device: None means the GPU when one is visible, else the CPU; 'cuda' gets its index."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@cache
def cpu_has_native_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def eval_precision(device: torch.device | str) -> str:
    """'bf16' or 'fp32' for inference on `device` (the environment variable wins when set)."""
    chosen = os.environ.get("PAINT_RAY_EVAL_PRECISION", "").strip().lower()
    if chosen:
        if chosen not in PRECISIONS:
            raise PaintRayError(f"PAINT_RAY_EVAL_PRECISION={chosen!r} is not one of {', '.join(PRECISIONS)}")
        return chosen
    kind = torch.device(device).type
    return "bf16" if kind == "cuda" or (kind == "cpu" and cpu_has_native_bf16()) else "fp32"


def inference_autocast(device: torch.device | str, precision: str | None = None) -> AbstractContextManager:
    """The autocast context for evaluation forwards on `device` (at `precision`, default the device's)."""
    kind = torch.device(device).type
    if kind not in ("cuda", "cpu"):      # e.g. the meta device, which placement tests run on: no autocast there
        return nullcontext()
    precision = precision or eval_precision(device)
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")


@contextmanager
def train_precision(device: torch.device | str, precision: str) -> Iterator[Callable[[], AbstractContextManager]]:
    """Within the block, fp32 matmuls run as the recipe's precision asks (TF32 only for 'tf32' on CUDA);
    yields a factory of the autocast context each forward enters (bf16 autocast for 'bf16')."""
    if precision not in TRAIN_PRECISIONS:
        raise PaintRayError(f"fine-tuning precision {precision!r} is not one of {', '.join(TRAIN_PRECISIONS)}")
    kind = torch.device(device).type
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision == "tf32" and kind == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield lambda: torch.autocast(kind, dtype=torch.bfloat16, enabled=precision == "bf16")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
