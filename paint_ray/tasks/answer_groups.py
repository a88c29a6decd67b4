"""Multiple-choice tasks (VQA): every class is a (question, answer) pair in its question's group.

An example's question is an input, like its image, so its prediction is restricted to the answers of
that question: the classes in its label's group. Restricting by the label's group tells the model the
question, never the answer. Evaluation (evaluator.py) and fine-tuning (finetune.py: loss and accuracy)
all score through `restrict`, so the rule lives here once; a task without groups (None) is untouched.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

Groups = torch.Tensor | Sequence[int] | None


def as_groups(groups: Groups, classes: int | None = None, device: torch.device | str | None = None
              ) -> torch.Tensor | None:
    """Group ids as a 1-D int64 tensor (None stays None); `classes` checks there is one id per head row."""
    if groups is None:
        return None
    g = torch.as_tensor(groups, dtype=torch.long)
    if g.dim() != 1:
        raise ValueError(f"answer groups must be one id per class (1-D), got shape {tuple(g.shape)}")
    if classes is not None and len(g) != classes:
        raise ValueError(f"{len(g)} answer groups for a head of {classes} classes; give one group id per class")
    return g if device is None else g.to(device)


def groups_of(task) -> torch.Tensor | None:
    """The task's answer groups as a tensor, or None for an ordinary classification task."""
    return as_groups(getattr(task, "answer_groups", None))


def restrict(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
    """`logits` (B x C) with every class outside the group of each example's label set to -inf."""
    if groups is None:
        return logits
    groups = groups.to(logits.device)
    outside = groups[None, :] != groups[labels.to(logits.device)][:, None]
    return logits.masked_fill(outside, float("-inf"))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None,
                  label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over each example's own group; label smoothing spreads over that group only (over
    every class it would put mass on answers to other questions, an infinite loss once they are -inf)."""
    if groups is None:
        return torch.nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing,
                                                 reduction=reduction)
    masked = restrict(logits, labels, groups)
    logp = masked.log_softmax(-1)
    loss = -logp.gather(1, labels[:, None]).squeeze(1)
    if label_smoothing:
        inside = torch.isfinite(masked)
        uniform = -logp.masked_fill(~inside, 0.0).sum(-1) / inside.sum(-1)
        loss = (1 - label_smoothing) * loss + label_smoothing * uniform
    return {"mean": loss.mean, "sum": loss.sum}.get(reduction, lambda: loss)()
