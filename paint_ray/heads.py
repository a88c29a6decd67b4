"""Zero-shot classification heads from the text tower, exactly as PAINT builds them.

For each class: embed every prompt, L2-normalise each embedding, average, renormalise. Stack the class
vectors, multiply by logit_scale.exp(); the bias is zero, so a head is just a C x D matrix.
"""
from __future__ import annotations

import torch

from .tasks import Task


@torch.no_grad()
def zero_shot_head(model: torch.nn.Module, tokenizer, task: Task, device: torch.device | str = "cpu") -> torch.Tensor:
    """C x D head for `task` (logit scale folded in), on `device`."""
    model = model.to(device).eval()
    rows = []
    for classname in task.classnames:
        tokens = tokenizer(task.prompts(classname)).to(device)
        emb = model.encode_text(tokens).float()
        emb = emb / emb.norm(dim=-1, keepdim=True)
        mean = emb.mean(dim=0)
        rows.append(mean / mean.norm())
    return torch.stack(rows) * model.logit_scale.exp().float()
