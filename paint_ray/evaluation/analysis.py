"""How far fine-tuning moved the model: linear CKA of image features and relative weight distance."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA (Kornblith et al. 2019) between two feature matrices over the same n examples."""
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    hsic = (x.T @ y).norm() ** 2
    return float(hsic / ((x.T @ x).norm() * (y.T @ y).norm()))


def relative_distance(theta0: Sequence[torch.Tensor], theta1: Sequence[torch.Tensor]) -> float:
    """‖θ1 − θ0‖ / ‖θ0‖ over all tensors together."""
    diff = sum(float((b.double() - a.double()).pow(2).sum()) for a, b in zip(theta0, theta1))
    base = sum(float(a.double().pow(2).sum()) for a in theta0)
    return (diff / base) ** 0.5
