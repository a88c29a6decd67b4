"""The pipeline's two backends share this small interface: fine-tune jobs, evaluate cells, measure drift.

- `backends.local.LocalBackend`: everything in this process (what `paint-ray patch` runs).
- `distributed.backend.RayBackend`: Tune trials and named evaluator actors (the studies, `live`).

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights, training, evaluation, config
"""
from __future__ import annotations

from typing import Protocol

from ..evaluation.weight_set import OnRows, WeightSet, Work
from ..training.job import FinetuneJob, TrialResult


class Backend(Protocol):
    """What the pipeline needs from where it runs. Rows carry weights/alpha/task/split/accuracy/n/seconds.
    `storage` is where weight files travel between nodes (None: this node's cache is all there is)."""

    storage: str | None

    def start(self) -> None: ...
    def add_model(self, loaded) -> None: ...
    def eval_identity(self) -> dict[str, str]: ...          # {"precision": "bf16", "device": "cpu"}
    def finetune(self, jobs: list[FinetuneJob], progress: bool = True) -> list[TrialResult]: ...
    def evaluate(self, work: Work, on_rows: OnRows, progress: bool = True) -> None: ...
    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict: ...
    def close(self) -> None: ...
