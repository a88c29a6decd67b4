"""Zero-shot classification heads from the text tower, exactly as PAINT builds them, and logits under a head.

For each class: embed every prompt, L2-normalise each embedding, average, renormalise. Stack the class
vectors, multiply by logit_scale.exp(); the bias is zero, so a head is just a C x D matrix. `batch_logits`
and `count_correct` are the one way a batch is scored: the evaluator, fine-tuning's validation and a
patched model loaded back all go through them, so they agree to the count.
"""
from __future__ import annotations

import contextlib

import torch

from ..devices import inference_autocast
from ..tasks import Task
from ..tasks.answer_groups import restrict


@torch.no_grad()
def zero_shot_head(model: torch.nn.Module, tokenizer, task: Task, device: torch.device | str = "cpu",
                   batch_size: int = 1024) -> torch.Tensor:
    """C x D head for `task` (logit scale folded in), on `device`.

    Prompts of all classes are encoded in batches of `batch_size`, not one class at a time: a multiple-choice
    task (VQA) has a class per question-answer pair, tens of thousands of them with one prompt each.
    """
    home = model.logit_scale.device
    was_training = model.training
    model.to(device).eval()          # the text tower is encoded where the caller says; the model goes back after
    try:
        prompts = [p for classname in task.classnames for p in task.prompts(classname)]
        embs = []
        for start in range(0, len(prompts), batch_size):
            emb = model.encode_text(tokenizer(prompts[start:start + batch_size]).to(device)).float()
            embs.append(emb / emb.norm(dim=-1, keepdim=True))
        mean = torch.cat(embs).view(len(task.classnames), len(task.templates), -1).mean(dim=1)
        return mean / mean.norm(dim=-1, keepdim=True) * model.logit_scale.exp().float()
    finally:
        model.to(home).train(was_training)


def batch_logits(visual: torch.nn.Module, head: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Logits of a normalised batch: L2-normalised image features times the (scaled) head.

    The tower runs under whatever autocast the caller entered; the normalisation and the head matmul always
    run in fp32 (in bf16, ImageNet's 1,000 logits of a near tie would swap)."""
    features = visual(x)
    with _fp32(x.device.type):
        features = features.float()
        features = features / features.norm(dim=-1, keepdim=True)
        return features @ head.float().T


def _fp32(kind: str):
    """Autocast off (where autocast exists: the meta device, used to check placement, has none)."""
    return torch.autocast(kind, enabled=False) if kind in ("cuda", "cpu") else contextlib.nullcontext()


def predictions(visual: torch.nn.Module, head: torch.Tensor, x: torch.Tensor, labels: torch.Tensor | None = None,
                groups: torch.Tensor | None = None, precision: str = "fp32") -> torch.Tensor:
    """Predicted classes of a normalised batch, the tower at `precision` ('bf16' autocast or 'fp32'); for a
    multiple-choice task (`groups`), each example among its own question's answers (its label's group)."""
    with inference_autocast(x.device, precision):
        logits = batch_logits(visual, head, x)
    return restrict(logits, labels, groups).argmax(-1)
