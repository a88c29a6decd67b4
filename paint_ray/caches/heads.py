"""Zero-shot heads by content under PAINT_RAY_HOME: encoded once per model and prompts, then read from disk.

A head's key is the digest of the model's weights and of the task's prompts (`Task.prompt_key`), so a
changed checkpoint or prompt list never returns a stale head, and a task whose data changes keeps its head.
A cached file that cannot be read is set aside and recomputed.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..models.heads import zero_shot_head
from ..identity import digest
from ..models.checkpoints import save_tensors
from ..paths import home
from ..tasks import Task
from ..storage import exists, fetch, publish, relative_name
from .entry import read_or_set_aside


VERSION = "2"


def head_key(model_digest: str, task: Task) -> str:
    """The content key of a task's head for a model: the model's weights and the task's prompts."""
    return digest(["head", VERSION, model_digest, task.prompt_key])


def head_path(model, task: Task) -> Path:
    return home() / "heads" / f"{task.name}-{head_key(model.digest, task)}.safetensors"


def cached_head(model, task: Task, device: torch.device | str = "cpu", storage: str | None = None) -> torch.Tensor:
    """The task's zero-shot head for this model (on the CPU): from this node's cache, else from the study's
    `storage`, else encoded on `device` (where the GPUs are, on a cluster) and published there."""
    path = head_path(model, task)
    found = read_or_set_aside(path)
    if found is None and storage:
        name = relative_name(path)
        if exists(name, storage):
            found = read_or_set_aside(fetch(name, storage))
    if found is not None and "head" in found:
        return found["head"]
    head = zero_shot_head(model.model, model.tokenizer, task, device).cpu()
    save_tensors({"head": head}, path, metadata={"task": task.name, "model": model.spec})
    if storage:
        publish(path, storage)
    return head
