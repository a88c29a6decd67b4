"""Weights to sweep: θα = (1 − α)·start + α·θ1 for a model, keyed by content; the cells asked of them.

A weight set names its files (θ1 and, for a sequential set, the start point) by their weights-store
names, relative to PAINT_RAY_HOME (storage.py): every node reads them from its own cache or fetches
them from the study's storage under the same name. Its identity is its key, never a name or a path.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..identity import digest
from ..models.registry import ModelRef
from .inventory import HeldWeights


def set_key(model_digest: str, theta1_key: str, start_key: str | None) -> str:
    """The content key of a weight set: the model, its θ1 and where its α = 0 starts."""
    return digest([model_digest, theta1_key, start_key])


@dataclass(frozen=True)
class WeightSet:
    """Weights to sweep over α: θα = (1 − α)·start + α·θ1, start being θ0 unless given."""
    model: ModelRef
    theta1: str                          # storage name of θ1 ('finetuned/<job key>.safetensors')
    theta1_key: str
    patch_tasks: str                     # 'a' or 'a+b'
    mode: str                            # single, joint, sequential, parallel
    eval_tasks: tuple[str, ...]
    start: str | None = None             # storage name of the start point (sequential)
    start_key: str | None = None
    recipe: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return set_key(self.model.digest, self.theta1_key, self.start_key)

    @property
    def trial(self) -> str:
        """A readable label (the key decides identity)."""
        return f"{self.patch_tasks}-{self.key[:8]}"

    @classmethod
    def from_held(cls, model: ModelRef, held: HeldWeights, eval_tasks: tuple[str, ...]) -> "WeightSet":
        """The weight set an evaluator holds, as the pipeline sweeps it (paint_ray.live)."""
        return cls(model, held.theta1_name, held.theta1_key, held.patch_tasks, held.mode, tuple(eval_tasks),
                   held.start_name, held.start_key)


# (α, task, split) cells to evaluate per weight set
Work = dict[WeightSet, list[tuple[float, str, str]]]
OnRows = Callable[[WeightSet, list[dict]], None]
