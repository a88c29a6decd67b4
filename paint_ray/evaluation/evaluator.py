"""The sweep engine: one model's θ0, its θ1s, zero-shot heads and prepared eval splits on ONE device.

A cell is (weights, α, eval task, split, schedule). Cells are grouped by (weights, α, schedule) so each
patched model is formed once, in place, and then evaluated on every task it is asked for. A schedule (a key
of weights/schedule.py; '' for the global α) gives each image-tower block its own coefficient: the same one
foreach lerp with one weight per tensor. α = 0 is the same model whatever the
fine-tuned weights, so it is evaluated once; α = 1 is evaluated once per θ1. θ1s are held by a
`WeightCache` (residency.py), on the device while the host's budget has room. Counts stay on the device
until a cell is done: one host read per cell, none per batch. The Ray actor (distributed/evaluators.py)
wraps an `EvaluatorHost` (host.py) of these; everything here is plain torch.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import groupby

import torch

from ..data import PreparedSplit
from ..devices import eval_precision, resolve
from ..models.heads import predictions
from ..models.normalize import to_model_input
from ..tasks.answer_groups import Groups, as_groups
from ..weights.interpolate import interpolate_, tensors_of
from ..weights.schedule import GLOBAL, groups_of, tensor_weights
from .memory import tensor_bytes
from .residency import WeightCache
from .streaming import batches

ZERO_SHOT = "zeroshot"


@dataclass(frozen=True, order=True)
class Cell:
    weights: str      # key of a fine-tuned θ1 given to add_weights (ZERO_SHOT for θ0)
    alpha: float
    task: str
    split: str
    schedule: str = GLOBAL    # per-block coefficients (weights/schedule.py); '' for the global α

    def canonical(self, has_start: bool = False) -> "Cell":
        """α = 0 is θ0 for every θ1 that starts at θ0: one evaluation serves them all."""
        if self.alpha == 0.0 and not has_start and self.schedule == GLOBAL:
            return Cell(ZERO_SHOT, 0.0, self.task, self.split)
        return self

    @property
    def model(self) -> tuple[str, float, str]:
        """What forms the patched model: cells sharing it are evaluated on one forming."""
        return (self.weights, self.alpha, self.schedule)


class Evaluator:
    def __init__(self, visual: torch.nn.Module, device: torch.device | str = "cpu", batch_size: int = 512,
                 weights: WeightCache | None = None, model_id: str = ""):
        self.device = resolve(device)
        self.visual = copy.deepcopy(visual).to(self.device).eval().requires_grad_(False)
        self.names = [k for k, v in self.visual.state_dict().items() if v.is_floating_point()]
        self.live = tensors_of(self.visual, self.names)
        self.theta0 = [t.detach().clone() for t in self.live]
        self.batch_size = batch_size
        self.precision = eval_precision(self.device)
        # θ1s (shared with the host's other models when it passes its cache): unbounded when alone
        self.cache = weights if weights is not None else WeightCache(self.device, lambda: 1 << 62)
        self.model_id = model_id
        self.heads: dict[str, torch.Tensor] = {}
        self.groups: dict[str, torch.Tensor | None] = {}   # multiple-choice tasks' answer groups
        self.splits: dict[tuple[str, str], PreparedSplit] = {}
        # content keys of what is held under each name: a name whose key changes is replaced, with its memo
        self.head_keys: dict[str, str] = {}
        self.split_keys: dict[tuple[str, str], str] = {}
        self.resident: dict[tuple[str, str], bool] = {}
        self.memo: dict[Cell, dict] = {}
        self.starts: set[str] = set()    # θ1 keys whose α = 0 is not θ0 (sequential)
        self.current: tuple[str, float, str] | None = (ZERO_SHOT, 0.0, GLOBAL)
        self._groups: list[int] | None = None      # each live tensor's schedule group, found on first use
        self.loads = 0            # weights, heads and splits transferred in: a reused actor adds none

    @property
    def fixed_bytes(self) -> int:
        """θ0, the live θα and the heads: what this model holds on the device whatever it evaluates."""
        return tensor_bytes(self.theta0) + tensor_bytes(self.live) + tensor_bytes(self.heads)

    @property
    def weights(self) -> list[str]:
        return self.cache.keys(self.model_id)

    # ---- loading (each counted once) ---------------------------------------------------------
    def add_weights(self, key: str, state: Mapping[str, torch.Tensor],
                    start: Mapping[str, torch.Tensor] | None = None, files=None, meta: dict | None = None) -> None:
        """Register θ1 under `key`; with `start`, α interpolates from `start` instead of θ0. `files` (θ1's and
        the start's paths in the node's cache) let the cache drop it from memory and read it again."""
        self.cache.put(self.model_id, key, self.names, [t.dtype for t in self.live], dict(state),
                       None if start is None else dict(start), files, meta)
        if start is not None:
            self.starts.add(key)
        else:
            self.starts.discard(key)
        self.memo = {c: r for c, r in self.memo.items() if c.weights != key}
        if self.current and self.current[0] == key:
            self.current = None
        self.loads += 1

    def add_head(self, task: str, head: torch.Tensor, key: str = "", groups: Groups = None) -> None:
        """A task's head; `groups` (one id per head row) makes it multiple-choice (answer_groups.py)."""
        if task in self.heads and self.head_keys.get(task) != key:
            self._forget_task(task)
        self.groups[task] = as_groups(groups, len(head), self.device)
        self.heads[task] = head.to(self.device, torch.float32)
        self.head_keys[task] = key
        self.loads += 1

    def add_split(self, task: str, split: str, data: PreparedSplit, key: str = "", resident: bool = True) -> None:
        """A split (or a shard of one, under its own name). Resident: copied onto the device; otherwise it
        stays where it is (a memory-mapped cache entry) and streams batch by batch (streaming.py)."""
        if (task, split) in self.splits and self.split_keys.get((task, split)) != key:
            self._forget_task(task, split)
        if resident:     # (a caller that wants a memory map in RAM on the CPU copies it first: EvaluatorHost)
            data = data.to(self.device)
        self.splits[(task, split)] = data
        self.split_keys[(task, split)] = key
        self.resident[(task, split)] = resident
        self.loads += 1

    def drop_split(self, task: str, split: str) -> None:
        """Let a split go (its memoised cells go with it)."""
        if (task, split) in self.splits:
            self._forget_task(task, split)
            for d in (self.splits, self.split_keys, self.resident):
                d.pop((task, split), None)

    @property
    def resident_bytes(self) -> int:
        """Bytes of eval data held resident (what counts against an evaluator's budget)."""
        return sum(d.images.nelement() + d.labels.nelement() * 8 for k, d in self.splits.items() if self.resident[k])

    def _forget_task(self, task: str, split: str | None = None) -> None:
        """Drop memoised cells computed with an old head or split of `task`."""
        self.memo = {c: r for c, r in self.memo.items() if not (c.task == task and (split is None or c.split == split))}

    def holds_head(self, task: str, key: str) -> bool:
        return task in self.heads and self.head_keys.get(task) == key

    def holds_split(self, task: str, split: str, key: str) -> bool:
        return (task, split) in self.splits and self.split_keys.get((task, split)) == key

    def has(self, weights: Iterable[str] = (), tasks: Iterable[tuple[str, str]] = ()) -> bool:
        return all(w == ZERO_SHOT or (self.model_id, w) in self.cache for w in weights) and \
            all(t[0] in self.heads and t in self.splits for t in tasks)

    # ---- evaluation -------------------------------------------------------------------------
    def set_model(self, weights: str, alpha: float, schedule: str = GLOBAL) -> None:
        """Form θα (or θ under a per-block schedule) in place; skipped when it is already the live model."""
        if self.current == (weights, alpha, schedule):
            return
        theta1, start = (None, None) if weights == ZERO_SHOT else self.cache.get(self.model_id, weights)
        coefficients: float | list[float] = alpha
        if schedule != GLOBAL:       # the row's α is then only the blocks' mean: the schedule decides
            if self._groups is None:
                self._groups = groups_of(self.names)
            coefficients = tensor_weights(self._groups, schedule)
        interpolate_(self.live, start if start is not None else self.theta0, theta1, coefficients)
        self.current = (weights, alpha, schedule)

    @torch.inference_mode()
    def _correct(self, task: str, split: str) -> tuple[torch.Tensor, int]:
        """(correct predictions, on the device; examples): counts, so shards of one split add up exactly."""
        data, head, groups = self.splits[(task, split)], self.heads[task], self.groups.get(task)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for images, labels in batches(data.images, data.labels, self.device, self.batch_size):
            x = to_model_input(images, self.visual)
            correct += (predictions(self.visual, head, x, labels, groups, self.precision) == labels).sum()
        return correct, len(data)

    def evaluate(self, cells: Iterable[Cell]) -> list[dict]:
        """One row per cell: the cell's fields plus accuracy, n and seconds (0 when reused)."""
        cells = list(cells)
        for c in cells:
            if not 0.0 <= c.alpha <= 1.0:
                raise ValueError(f"alpha {c.alpha} outside [0, 1]")
            if not self.has([self._canonical(c).weights], [(c.task, c.split)]):  # α = 0 needs no θ1
                raise KeyError(f"evaluator lacks what cell {c} needs (weights, head or split)")
        todo = sorted({self._canonical(c) for c in cells} - set(self.memo), key=lambda c: (c.model, c.task, c.split))
        for (weights, alpha, schedule), group in groupby(todo, key=lambda c: c.model):
            self.set_model(weights, alpha, schedule)
            for c in group:
                start = time.perf_counter()
                correct, n = self._correct(c.task, c.split)
                correct = int(correct)             # the one host read of the cell
                self.memo[c] = {"accuracy": correct / max(1, n), "correct": correct, "n": n,
                                "seconds": time.perf_counter() - start}
        return [{**asdict(c), **self.memo[self._canonical(c)]} for c in cells]

    def _canonical(self, c: Cell) -> Cell:
        return c.canonical(has_start=c.weights in self.starts)


def probe_features(ev: Evaluator, weights: str, alpha: float, probe: Sequence[tuple[str, str]],
                   limit: int = 256) -> torch.Tensor:
    """Image features (fp32, on the evaluator's device) of the first `limit` images of each probe split under
    θα, for CKA. The rows are moved to the model's device first: a streamed shard lives in host memory."""
    ev.set_model(weights, alpha)
    with torch.inference_mode():
        feats = [ev.visual(to_model_input(ev.splits[key].images[:limit].to(ev.device), ev.visual)).float()
                 for key in probe]
    return torch.cat(feats)


def drift(ev: Evaluator, weights: str, probe: Sequence[tuple[str, str]]) -> dict:
    """CKA between θ0 and θ1 features on the probe set, and the relative weight distance."""
    from .analysis import linear_cka, relative_distance
    f0 = probe_features(ev, ZERO_SHOT, 0.0, probe).cpu()
    f1 = probe_features(ev, weights, 1.0, probe).cpu()
    theta1, _ = ev.cache.get(ev.model_id, weights)
    return {"cka": linear_cka(f0, f1), "weight_distance": relative_distance(ev.theta0, theta1)}
