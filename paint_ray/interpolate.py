"""θα = (1 − α)·θ0 + α·θ1, and the multi-task θ0 + Σ cᵢ(θᵢ − θ0), formed in place on the device.

Parameters are overwritten with foreach kernels (one launch for the whole encoder), so forming a
patched model costs one pass over the weights: no state-dict rebuild, no file, no reload.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def tensors_of(module: torch.nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    """The module's live tensors (parameters and buffers) in the order of `names`."""
    live = dict(module.named_parameters())
    live.update(dict(module.named_buffers()))
    return [live[n] for n in names]


@torch.no_grad()
def interpolate_(target: list[torch.Tensor], theta0: list[torch.Tensor], theta1: list[torch.Tensor] | None,
                 alpha: float) -> None:
    """Set target := lerp(θ0, θ1, α) in place. α = 0 copies θ0 and α = 1 copies θ1 exactly."""
    if theta1 is None or alpha == 0.0:
        torch._foreach_copy_(target, theta0)
    elif alpha == 1.0:
        torch._foreach_copy_(target, theta1)
    else:
        torch._foreach_copy_(target, theta0)
        torch._foreach_lerp_(target, theta1, float(alpha))


@torch.no_grad()
def add_task_vectors_(target: list[torch.Tensor], theta0: list[torch.Tensor],
                      vectors: Sequence[list[torch.Tensor]], coefficients: Sequence[float]) -> None:
    """Set target := θ0 + Σ cᵢ·τᵢ in place, for task vectors τᵢ (already θᵢ − θ0, or merged ones)."""
    torch._foreach_copy_(target, theta0)
    for tau, c in zip(vectors, coefficients):
        if c != 0.0:
            torch._foreach_add_(target, tau, alpha=float(c))
