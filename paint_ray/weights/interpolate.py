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
                 alpha: float | Sequence[float]) -> None:
    """Set target := lerp(θ0, θ1, α) in place. α = 0 copies θ0 and α = 1 copies θ1 exactly. `alpha` may be
    one weight per tensor (a per-block schedule, weights/schedule.py): still one foreach launch, and lerp
    is exact at 0 and 1, so a tensor at 0 or 1 is θ0's or θ1's bit for bit."""
    if not isinstance(alpha, (int, float)):
        weights = [float(a) for a in alpha]
        if len(weights) != len(target):
            raise ValueError(f"{len(weights)} interpolation weights for {len(target)} tensors")
        torch._foreach_copy_(target, theta0)
        if theta1 is not None and any(weights):
            torch._foreach_lerp_(target, theta1, weights)
    elif theta1 is None or alpha == 0.0:
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


def lerp_state(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """θα as a new state dict: lerp(start, end, α) over every tensor of `end` (used off the hot path:
    sequential start points and the patched model saved for MLflow)."""
    names = list(end)
    missing = [n for n in names if n not in start]
    if missing:
        from ..errors import PaintRayError
        raise PaintRayError(f"weights to interpolate lack tensor {missing[0]!r} of the start point")
    out = [start[n].detach().clone().to(end[n].dtype) for n in names]
    interpolate_(out, [start[n].to(end[n].dtype) for n in names], [end[n] for n in names], alpha)
    return dict(zip(names, out))


def load_floating_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "weights") -> None:
    """Copy `state` into `module`: every floating-point tensor must be there and nothing else may be
    (integer buffers such as position ids are not weights and may be absent). Errors name the tensor."""
    from ..errors import PaintRayError
    own = module.state_dict()
    floating = {k for k, v in own.items() if v.is_floating_point()}
    missing = sorted(floating - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = f"lack tensor {missing[0]!r}" if missing else f"have unexpected tensor {unexpected[0]!r}"
        raise PaintRayError(f"{what} do not fit this image encoder: they {detail} "
                            f"({len(missing)} missing, {len(unexpected)} unexpected)")
    module.load_state_dict(state, strict=False)
