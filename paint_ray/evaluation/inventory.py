"""What an evaluator host holds, as typed data with the questions asked of it (no dicts of strings).

`EvaluatorHost.inventory()` returns one; the Ray backend, `paint_ray.live` and `--plan`'s reports read it.
Everything is keyed by content: models by weight digest, heads and splits by task key, weight sets by key.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..models.registry import ModelRef


@dataclass(frozen=True)
class HeldShard:
    """Rows [start, stop) of one split, held for `model` under `name` ('val' or 'val@0:512')."""
    model: str
    task: str
    split: str
    key: str
    image_size: int
    start: int
    stop: int
    total: int
    name: str
    resident: bool


@dataclass(frozen=True)
class HeldWeights:
    """A weight set as held: its identity and the names its files travel under."""
    key: str
    theta1_key: str
    patch_tasks: str
    mode: str
    theta1_name: str
    start_key: str | None = None
    start_name: str | None = None
    storage: str | None = None
    on_device: bool = False


@dataclass(frozen=True)
class HeldModel:
    ref: ModelRef
    weights: dict[str, HeldWeights] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)            # task -> task key
    splits: dict[str, str] = field(default_factory=dict)           # 'task/split name' -> task key


@dataclass(frozen=True)
class Inventory:
    """One host: where it runs, its budget and what fills it, what it holds, how long it has been idle."""
    device: str
    node_id: str
    budget: int
    weight_bytes: int          # θ0s, live θα, heads and the θ1s on the device
    resident_bytes: int        # eval data on the device
    streamed_bytes: int        # eval data it streams from the node's cache
    loads: int                 # weights, heads and splits taken in (a reused host adds none)
    idle_s: float
    models: dict[str, HeldModel] = field(default_factory=dict)
    shards: tuple[HeldShard, ...] = ()
    moves: dict[str, int] = field(default_factory=dict)            # θ1 evictions and reloads

    def holds_model(self, model: str) -> bool:
        return model in self.models

    def holds_head(self, model: str, task: str, key: str) -> bool:
        return model in self.models and self.models[model].heads.get(task) == key

    def holds_weights(self, model: str, key: str) -> bool:
        return model in self.models and key in self.models[model].weights

    def weights(self, model: str) -> dict[str, HeldWeights]:
        return dict(self.models[model].weights) if model in self.models else {}

    def heads(self, model: str) -> dict[str, str]:
        return dict(self.models[model].heads) if model in self.models else {}

    def shard_names(self, model: str) -> set[tuple[str, str]]:
        """(task, shard name) of every shard held for `model`."""
        return {(s.task, s.name) for s in self.shards if s.model == model}

    @property
    def used_bytes(self) -> int:
        return self.weight_bytes + self.resident_bytes
