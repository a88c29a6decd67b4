"""Per-block coefficient schedules: one interpolation coefficient per image-tower block instead of one α.

θ = θ0 + c_g·(θ1 − θ0) for every tensor of group g, the groups being, in depth order,

    embeddings (conv1, class and positional embeddings, ln_pre) · block 0 · … · block L−1 · head (ln_post, proj)

A schedule is given per block (L coefficients); the tensors outside the blocks follow the stated rule: the
embeddings take block 0's coefficient and the head (ln_post, proj) block L−1's, the blocks they feed and
follow. (LiNeS gives every tensor outside the blocks its α, the first block's; with an increasing schedule
that would hold the projection, the tower's last layer, at the smallest coefficient.) Two families:

- `linear(first, last)`: c_l = first + (last − first)·l/(L−1), LiNeS's α + β·l/(L−1) with α = first and
  β = last − first (its code: `alpha + beta * (layer / (num_blocks - 1))`); both ends in [0, 1], so every
  coefficient is too;
- a free vector: any L coefficients in [0, 1].

A schedule's identity is its `key`: the L + 2 group coefficients (rounded to 6 decimals) as text, i.e.
what the weights are, whatever family proposed it. A schedule whose groups are all equal is the global α
(key ''): it is that α's model bit for bit and shares its result rows.

May import: errors, identity, paths, storage, devices, tasks, data, models
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import PaintRayError

BLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.")
EMBEDDINGS = ("conv1.", "class_embedding", "positional_embedding", "ln_pre.")
GLOBAL = ""              # the schedule key of a global α (every tensor at the row's α)
DECIMALS = 6


def _round(c: float) -> float:
    return round(float(c), DECIMALS) + 0.0        # + 0.0: no '-0' in a key


def blocks_of(names: Sequence[str]) -> int:
    """The number of transformer blocks of an image tower, from its tensor names; 0 when it has none."""
    found = {int(m.group(1)) for m in map(BLOCK.match, names) if m}
    return max(found) + 1 if found else 0


def groups_of(names: Sequence[str]) -> list[int]:
    """Each tensor's group: 0 for the embeddings, l + 1 for block l, L + 1 for the head (everything after the
    blocks: ln_post, proj, an attention pool). A tower without transformer blocks has no schedule."""
    n = blocks_of(names)
    if n == 0:
        raise PaintRayError("this image tower has no transformer blocks (transformer.resblocks.N); per-block "
                            "schedules need a ViT image tower")
    out = []
    for name in names:
        m = BLOCK.match(name)
        out.append(int(m.group(1)) + 1 if m else 0 if name.startswith(EMBEDDINGS) else n + 1)
    return out


@dataclass(frozen=True)
class Schedule:
    """One coefficient per block, in depth order (block 0 is next to the input)."""
    blocks: tuple[float, ...]

    def __post_init__(self):
        values = tuple(_round(c) for c in self.blocks)
        bad = [c for c in values if not (math.isfinite(c) and 0.0 <= c <= 1.0)]
        if not values or bad:
            raise PaintRayError(f"schedule coefficient {bad[0]!r} is outside [0, 1]" if bad else
                                "a schedule needs at least one coefficient")
        object.__setattr__(self, "blocks", values)

    @classmethod
    def linear(cls, first: float, last: float, n_blocks: int) -> "Schedule":
        """LiNeS's depth schedule: `first` at block 0 rising (or falling) linearly to `last` at block L−1."""
        if n_blocks == 1:
            return cls((first,))
        return cls(tuple(first + (last - first) * l / (n_blocks - 1) for l in range(n_blocks)))

    @property
    def groups(self) -> tuple[float, ...]:
        """The L + 2 group coefficients: the embeddings', each block's, the head's."""
        return (self.blocks[0], *self.blocks, self.blocks[-1])

    @property
    def uniform(self) -> bool:
        return len(set(self.groups)) == 1

    @property
    def key(self) -> str:
        """'' for a global α, else the group coefficients as text (what the result rows are keyed by)."""
        return GLOBAL if self.uniform else ",".join(f"{c:g}" for c in self.groups)

    @property
    def alpha(self) -> float:
        """The row's α: the global α of a uniform schedule, else the blocks' mean (for reading only)."""
        return _round(sum(self.blocks) / len(self.blocks))

    def describe(self) -> str:
        return "blocks " + ", ".join(f"{c:.3g}" for c in self.blocks)


def parse_groups(key: str) -> tuple[float, ...]:
    """A schedule key back to its group coefficients."""
    try:
        return tuple(float(v) for v in key.split(","))
    except ValueError:
        raise PaintRayError(f"schedule key {key[:80]!r} is not a comma list of coefficients") from None


def parse_schedule(text: str, n_blocks: int, model: str = "the model") -> Schedule:
    """'0.1,0.3,0.6' (one coefficient per block) as a schedule of a tower with `n_blocks` blocks."""
    try:
        values = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise PaintRayError(f"--schedule {str(text)[:80]!r} is not linear, free or a comma list of "
                            f"coefficients, one per image-tower block") from None
    if len(values) != n_blocks:
        raise PaintRayError(f"--schedule {str(text)[:80]!r} has {len(values)} coefficients; {model}'s image "
                            f"tower has {n_blocks} blocks: give {n_blocks}, block 0 (next to the input) first")
    return Schedule(tuple(values))


def tensor_weights(groups: Sequence[int], key: str) -> list[float]:
    """Each tensor's interpolation weight under the schedule `key` (`groups` from `groups_of`)."""
    coefs = parse_groups(key)
    if len(coefs) != max(groups) + 1:
        raise PaintRayError(f"schedule {key[:80]!r} has {len(coefs)} group coefficients; this tower has "
                            f"{max(groups) + 1} (embeddings, {max(groups) - 1} blocks, head)")
    return [coefs[g] for g in groups]


def schedule_state(start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor],
                   schedule: Schedule) -> dict[str, torch.Tensor]:
    """θ under `schedule` as a new state dict over every tensor of `end` (the patched folder's weights),
    computed with the evaluator's kernel so the folder holds the weights its rows were measured on."""
    from .interpolate import interpolate_
    names = list(end)
    missing = [n for n in names if n not in start]
    if missing:
        raise PaintRayError(f"weights to interpolate lack tensor {missing[0]!r} of the start point")
    weights = [schedule.groups[g] for g in groups_of(names)]
    out = [start[n].detach().clone().to(end[n].dtype) for n in names]
    interpolate_(out, [start[n].to(end[n].dtype) for n in names], [end[n] for n in names], weights)
    return dict(zip(names, out))
