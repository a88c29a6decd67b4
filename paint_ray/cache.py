"""Content-addressed zero-shot heads under PAINT_RAY_HOME (fine-tuned θ1s: backends.FinetuneJob.path).

A head's key is the digest of the model's weights and of the task's prompts, so a changed checkpoint or
prompt list never returns a stale head; a cached file that cannot be read is set aside and recomputed.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import PaintRayError
from .heads import zero_shot_head
from .identity import digest, task_key
from .models.checkpoints import load_tensors, save_tensors
from .paths import home
from .tasks import Task


def head_path(model, task: Task) -> Path:
    return home() / "heads" / f"{task.name}-{digest([model.digest, task_key(task)])}.safetensors"


def read_or_set_aside(path: Path) -> dict[str, torch.Tensor] | None:
    """A cached tensor file, or None (after moving it aside with a one-line warning) when it is corrupt."""
    if not path.is_file():
        return None
    try:
        return load_tensors(path)
    except PaintRayError:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        print(f"paint-ray: warning: cached {path.parent.name}/{path.name} is corrupt; set aside as {aside.name} "
              f"and recomputed")
        return None


def cached_head(model, task: Task, device: str = "cpu") -> torch.Tensor:
    """The task's zero-shot head for this model: computed once, then read from disk."""
    path = head_path(model, task)
    found = read_or_set_aside(path)
    if found is not None and "head" in found:
        return found["head"]
    head = zero_shot_head(model.model, model.tokenizer, task, device).cpu()
    save_tensors({"head": head}, path, metadata={"task": task.name, "model": model.spec})
    return head
