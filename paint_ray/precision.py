"""Evaluation precision: bf16 autocast where the device computes bf16 natively, fp32 elsewhere.

On CUDA and on CPUs with AVX512-BF16 or AMX, bf16 matmuls run 2-3x faster than fp32 (toy-m on a 2-core
AVX512-BF16 CPU: 5,544 vs 1,859 img/s); on other CPUs bf16 is emulated and slower, so they stay fp32.
Accuracies move by tenths of a point (at most 0.2 on `paint-ray patch`; 0.8 on the sweep benchmark's
random-weight model, whose near-tied logits flip more easily). `PAINT_RAY_EVAL_PRECISION=fp32|bf16` overrides.
Training keeps fp32 on the CPU: autocast's backward gained nothing there (0.202 vs 0.218 s per toy-m step).
"""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from functools import cache

import torch

from .errors import PaintRayError

PRECISIONS = ("bf16", "fp32")


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


def inference_autocast(device: torch.device | str) -> AbstractContextManager:
    """The autocast context for evaluation forwards on `device`."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=eval_precision(device) == "bf16")
