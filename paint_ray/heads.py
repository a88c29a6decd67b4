"""Zero-shot classification heads from the text tower, exactly as PAINT builds them.

For each class: embed every prompt, L2-normalise each embedding, average, renormalise. Stack the class
vectors, multiply by logit_scale.exp(); the bias is zero, so a head is just a C x D matrix.
"""
from __future__ import annotations

import torch

from .tasks import Task


@torch.no_grad()
def zero_shot_head(model: torch.nn.Module, tokenizer, task: Task, device: torch.device | str = "cpu",
                   batch_size: int = 1024) -> torch.Tensor:
    """C x D head for `task` (logit scale folded in), on `device`.

    Prompts of all classes are encoded in batches of `batch_size`, not one class at a time: a multiple-choice
    task (VQA) has a class per question-answer pair, tens of thousands of them with one prompt each.
    """
    model = model.to(device).eval()
    prompts = [p for classname in task.classnames for p in task.prompts(classname)]
    embs = []
    for start in range(0, len(prompts), batch_size):
        emb = model.encode_text(tokenizer(prompts[start:start + batch_size]).to(device)).float()
        embs.append(emb / emb.norm(dim=-1, keepdim=True))
    mean = torch.cat(embs).view(len(task.classnames), len(task.templates), -1).mean(dim=1)
    return mean / mean.norm(dim=-1, keepdim=True) * model.logit_scale.exp().float()
