"""Content-addressed caches under PAINT_RAY_HOME: zero-shot heads and fine-tuned image encoders.

Keys hash everything that determines the content (model identity, task fingerprint, templates, recipe),
so a second run reuses them and a changed recipe never returns a stale result.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .heads import zero_shot_head
from .models.checkpoints import load_tensors, save_tensors
from .models.registry import LoadedModel
from .paths import home
from .tasks import Task


def digest(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def head_path(model: LoadedModel, task: Task) -> Path:
    key = digest([task.classnames, task.templates])
    return home() / "heads" / model.key / f"{task.name}-{key}.safetensors"


def cached_head(model: LoadedModel, task: Task, device: str = "cpu") -> torch.Tensor:
    """The task's zero-shot head for this model: computed once, then read from disk."""
    path = head_path(model, task)
    if path.is_file():
        return load_tensors(path)["head"]
    head = zero_shot_head(model.model, model.tokenizer, task, device).cpu()
    save_tensors({"head": head}, path, metadata={"task": task.name, "model": model.spec})
    return head


def finetuned_path(model: LoadedModel, tasks: list[Task], recipe: dict, mode: str = "single") -> Path:
    key = digest([[t.name, t.fingerprint] for t in tasks] + [recipe, mode])
    return home() / "finetuned" / model.key / "+".join(t.name for t in tasks) / f"{key}.safetensors"
