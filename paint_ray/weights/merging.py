"""Multi-task combiners of task vectors τᵢ = θᵢ − θ0: one generalised merge, a few named presets.

`merge_task_vectors` returns one merged vector v; the caller forms θ0 + v (`as_theta`) and interpolates it
like any fine-tuned θ1, so the merged model is θ0 + α·v. Every preset is the same pipeline with different
options (as in mergekit's generalized task arithmetic):

    trim (top-`density` magnitudes per tensor) -> weight by cᵢ -> elect sign by mass -> sum or mean

- average:         mean of τᵢ.
- task_arithmetic: Σ cᵢ τᵢ.
- ties:            TIES-merging (Yadav et al. 2023): trim, elect, disjoint mean.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import PaintRayError, unknown

Vector = list[torch.Tensor]

# name -> options of `_merge`. trim: keep the top-`density` entries; elect: sign election by mass;
# reduce: "mean" divides by the number of contributing tasks, "sum" does not.
COMBINERS: dict[str, dict] = {
    "average": {"trim": False, "elect": False, "reduce": "mean", "min_tasks": 2},
    "task_arithmetic": {"trim": False, "elect": False, "reduce": "sum", "min_tasks": 1},
    "ties": {"trim": True, "elect": True, "reduce": "mean", "min_tasks": 2},
}


def task_vectors(theta0: Vector, thetas: Sequence[Vector]) -> list[Vector]:
    """τᵢ = θᵢ − θ0 for each fine-tuned θᵢ (tensors in the same order as θ0)."""
    for i, theta in enumerate(thetas):
        _check_like(theta0, theta, f"θ{i + 1}")
    return [list(torch._foreach_sub(theta, theta0)) for theta in thetas]


def as_theta(theta0: Vector, vector: Vector) -> Vector:
    """θ0 + v: a merged vector as a 'θ1' for interpolate_ (α then scales the whole merged vector)."""
    return list(torch._foreach_add(theta0, vector))


def merge_task_vectors(vectors: Sequence[Vector], method: str = "average",
                       coefficients: float | Sequence[float] | None = None, density: float = 0.2) -> Vector:
    """One merged task vector from τ₁..τₙ by the named preset.

    coefficients: None (1 for every task), one shared float, or one per task. `density` is the fraction
    of entries each τᵢ keeps per tensor (used by presets that trim).
    """
    if method not in COMBINERS:
        raise unknown("merge method", method, COMBINERS)
    opts = COMBINERS[method]
    n = len(vectors)
    if n < opts["min_tasks"]:
        raise PaintRayError(f"merge method {method!r} needs at least {opts['min_tasks']} tasks, got {n}")
    if not 0.0 < density <= 1.0:
        raise PaintRayError(f"density {density!r} must be in (0, 1] (the fraction of entries kept)")
    coefs = _coefficients(coefficients, n)
    for i, tau in enumerate(vectors[1:], start=2):
        _check_like(vectors[0], tau, f"task vector {i}")
    return [_merge([tau[j] for tau in vectors], coefs, density if opts["trim"] else 1.0,
                   opts["elect"], opts["reduce"]) for j in range(len(vectors[0]))]


@torch.no_grad()
def _merge(deltas: list[torch.Tensor], coefs: list[float], density: float, elect: bool,
           reduce: str) -> torch.Tensor:
    """Merge one tensor position across tasks."""
    if density < 1.0:
        deltas = [_trim(d, density) for d in deltas]
    # Weight before electing (as mergekit does): a shared positive c leaves the election unchanged, a
    # per-task cᵢ makes a task count cᵢ times in the mass; with a shared c, ties = c · disjoint mean.
    weighted = torch.stack([d * c for d, c in zip(deltas, coefs)])
    if not elect:
        out = weighted.sum(0)
        return out / len(deltas) if reduce == "mean" else out
    # Elected sign: the sign of the total mass; a zero total counts as + (mergekit's `>= 0`).
    elected = weighted.sum(0).ge(0).to(weighted.dtype) * 2 - 1
    agree = weighted.sign() == elected  # zero (trimmed) entries have sign 0, so never agree
    out = (weighted * agree).sum(0)
    if reduce == "sum":
        return out
    # Disjoint mean: over the tasks that agree at that entry only; 0 where none does.
    return out / agree.sum(0).clamp(min=1).to(weighted.dtype)


def _trim(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the top-`density` fraction of entries by magnitude, zero the rest.

    Per tensor over all its entries (mergekit's `sparsify.magnitude`), not over the whole flattened task
    vector as the TIES reference code does: the same fraction of every layer survives, so small layers are
    not wiped out by large ones. k = int(density·numel) like mergekit, but at least 1 (a 1-entry tensor at
    density 0.2 keeps its entry rather than failing); ties at the threshold are broken by topk, so exactly
    k entries survive.
    """
    k = max(1, int(density * delta.numel()))
    if k >= delta.numel():
        return delta
    flat = delta.reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat.abs().float(), k).indices] = True
    return (flat * keep).reshape(delta.shape)


def _coefficients(coefficients: float | Sequence[float] | None, n: int) -> list[float]:
    if coefficients is None:
        return [1.0] * n
    if isinstance(coefficients, (int, float)):
        return [float(coefficients)] * n
    coefs = [float(c) for c in coefficients]
    if len(coefs) != n:
        raise PaintRayError(f"{len(coefs)} coefficients for {n} tasks; give one shared coefficient or {n}")
    return coefs


def _check_like(ref: Vector, other: Vector, what: str) -> None:
    if len(other) != len(ref):
        raise PaintRayError(f"{what} has {len(other)} tensors, expected {len(ref)}")
    for j, (a, b) in enumerate(zip(ref, other)):
        if a.shape != b.shape:
            raise PaintRayError(f"{what} tensor {j} has shape {tuple(b.shape)}, expected {tuple(a.shape)}")
