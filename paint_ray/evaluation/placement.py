"""Where eval data lives: splits placed on evaluators by the work they bring, each held once; weights go to
the data.

A split's work is its bytes times the weight sets evaluated on it (ImageNet is evaluated under every θ1 of
a study, a patch task under its own few), so evaluators that hold equal work finish together. A split with
more work than an evaluator's share is cut by rows into shards at multiples of the eval batch, so every
batch an evaluator forms is a batch the unsharded split would have formed: rows (correct counts summed
over shards) are the same whatever the placement. Shards are placed most work first on the evaluator with
the least work (LPT); a shard stays resident where it fits the evaluator's data room and streams from the
node's memory-mapped eval cache where none has room. Plain Python: both backends and `--plan` use it.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .memory import EVAL_BATCH, format_bytes, image_bytes


@dataclass(frozen=True, order=True)
class SplitRef:
    """One eval split at one resolution, identified by its task's content key."""
    task: str
    split: str
    key: str
    image_size: int
    n: int

    @property
    def bytes(self) -> int:
        return image_bytes(self.n, self.image_size)

    @property
    def ident(self) -> tuple[str, str, str, int]:
        return (self.task, self.split, self.key, self.image_size)


@dataclass(frozen=True, order=True)
class Shard:
    """Rows [start, stop) of a split; `name` is what evaluators hold it under (a split name or 'split@a:b')."""
    task: str
    split: str
    key: str
    image_size: int
    start: int
    stop: int
    total: int

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.stop == self.total

    @property
    def name(self) -> str:
        return self.split if self.whole else f"{self.split}@{self.start}:{self.stop}"

    @property
    def bytes(self) -> int:
        return image_bytes(self.stop - self.start, self.image_size)

    @property
    def ident(self) -> tuple[str, str, str, int]:
        return (self.task, self.split, self.key, self.image_size)

    def as_dict(self) -> dict:
        return {"task": self.task, "split": self.split, "key": self.key, "image_size": self.image_size,
                "start": self.start, "stop": self.stop, "total": self.total}


@dataclass
class Holding:
    shard: Shard
    resident: bool


@dataclass
class Placement:
    """Per evaluator: its room for eval data and the shards it holds (resident or streamed); per split, the
    weight sets evaluated on it (its work is its bytes times that)."""
    budgets: list[int]
    held: list[list[Holding]] = field(default_factory=list)
    work: dict[tuple, int] = field(default_factory=dict)

    def __post_init__(self):
        if not self.held:
            self.held = [[] for _ in self.budgets]

    def cost(self, i: int) -> int:
        """Evaluator i's work: bytes it evaluates, each shard once per weight set evaluated on it."""
        return sum(h.shard.bytes * self.work.get(h.shard.ident, 1) for h in self.held[i])

    def balance(self) -> float:
        """Max ÷ mean work over the evaluators (1.0: they finish together)."""
        costs = [self.cost(i) for i in range(len(self.held))]
        return max(costs) / (sum(costs) / len(costs)) if costs and sum(costs) else 1.0

    def resident_bytes(self, i: int) -> int:
        return sum(h.shard.bytes for h in self.held[i] if h.resident)

    def streamed_bytes(self, i: int) -> int:
        return sum(h.shard.bytes for h in self.held[i] if not h.resident)

    def load(self, i: int) -> int:
        return self.resident_bytes(i) + self.streamed_bytes(i)

    def shards_of(self, ident: tuple[str, str, str, int]) -> list[tuple[int, Shard]]:
        """Every (evaluator, shard) of one split, in row order."""
        found = [(i, h.shard) for i, hs in enumerate(self.held) for h in hs if h.shard.ident == ident]
        return sorted(found, key=lambda x: x[1].start)

    def placed(self, ident: tuple[str, str, str, int]) -> bool:
        shards = self.shards_of(ident)
        return bool(shards) and shards[0][1].start == 0 and shards[-1][1].stop == shards[-1][1].total and all(
            a[1].stop == b[1].start for a, b in zip(shards, shards[1:]))

    def describe(self, names: Sequence[str] | None = None) -> str:
        lines = []
        for i, hs in enumerate(self.held):
            name = names[i] if names else f"evaluator {i}"
            res = [h.shard for h in hs if h.resident]
            stream = [h.shard for h in hs if not h.resident]
            lines.append(f"{name}: room for data {format_bytes(self.budgets[i])}, resident "
                         f"{format_bytes(self.resident_bytes(i))} in {len(res)} shard(s), streamed "
                         f"{format_bytes(self.streamed_bytes(i))} in {len(stream)}")
            for h in sorted(hs, key=lambda h: (h.shard.task, h.shard.split, h.shard.start)):
                s = h.shard
                lines.append(f"    {s.task}/{s.name} @{s.image_size}px  {s.stop - s.start:>7,} images  "
                             f"{format_bytes(s.bytes):>10}  {'resident' if h.resident else 'streamed'}")
        return "\n".join(lines)


def chunk_rows(split: SplitRef, limit: int, batch: int = EVAL_BATCH) -> list[tuple[int, int]]:
    """Row ranges of at most `limit` bytes each, cut at multiples of `batch` (a split that fits is one range)."""
    if split.bytes <= limit or split.n <= batch:
        return [(0, split.n)]
    per_row = image_bytes(1, split.image_size)
    rows = max(batch, (limit // per_row) // batch * batch)
    return [(a, min(a + rows, split.n)) for a in range(0, split.n, rows)]


def plan(splits: Sequence[SplitRef], budgets: Sequence[int], existing: Placement | None = None,
         batch: int = EVAL_BATCH, work: dict[tuple, int] | None = None) -> Placement:
    """Place every split not yet placed in `existing` (kept as it is) on the evaluators with `budgets` (their
    room for eval data); `work[split ident]` is the number of weight sets evaluated on it (default 1)."""
    placement = existing if existing is not None else Placement(list(budgets))
    for ident, k in (work or {}).items():
        placement.work[ident] = max(placement.work.get(ident, 1), int(k))
    new = sorted({s for s in splits if not placement.placed(s.ident)})
    if not new:
        return placement
    n = len(placement.budgets)
    sets = {s.ident: max(1, placement.work.get(s.ident, 1)) for s in new}
    # shards no larger than an even share of the work (for balance) nor than the largest budget (to fit)
    total = sum(s.bytes * sets[s.ident] for s in new) + sum(placement.cost(i) for i in range(n))
    share = max(1, math.ceil(total / n))
    shards = [Shard(s.task, s.split, s.key, s.image_size, a, b, s.n) for s in new
              for a, b in chunk_rows(s, min(max(placement.budgets), max(1, share // sets[s.ident])), batch)]
    for shard in sorted(shards, key=lambda s: (-s.bytes * sets[s.ident], s)):
        roomy = [i for i in range(n) if placement.budgets[i] - placement.resident_bytes(i) >= shard.bytes]
        i = min(roomy or range(n), key=lambda i: (placement.cost(i), i))
        placement.held[i].append(Holding(shard, bool(roomy)))
    return placement
