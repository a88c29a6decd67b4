"""Spreading sweep cells over evaluator actors by where their data lives, and collecting them as they finish
(ray.wait, no barrier).

A split may be cut into shards held by several evaluators (placement.py); a cell (weights, α, task,
split) becomes one sub-cell per shard, sent to the shard's holder. Sub-cells of one (weights, α) on one
actor form a unit: the patched model is formed once there and evaluated on everything it holds. A cell's
row is complete when every shard has answered; its accuracy is the summed correct count over the summed
rows, the same number one evaluator holding the whole split computes. Each finished row is handed back
at once, so a killed driver loses only the units in flight.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import ray
from tqdm.auto import tqdm

from ..evaluator import ZERO_SHOT, Cell
from ..placement import Placement

# (actor, model digest, sub-cells); a sub-cell is a Cell whose split is a shard name
Unit = tuple[int, str, list[Cell]]


def units_of(cells_by_model: dict[str, list[Cell]], idents: dict[tuple[str, str, str], tuple],
             placement: Placement, with_start: frozenset = frozenset()) -> tuple[list[Unit], dict]:
    """Units of sub-cells, α = 0 first (its rows are reused by every θ1 of the model), and for every
    sub-cell the parent cell it adds to: {(actor, model, sub-cell): (model, cell)}.

    `idents[(model, task, split)]` is the split's placement identity (task, split, key, image size)."""
    groups: dict[tuple[int, str, str, float], list[Cell]] = defaultdict(list)
    parent = {}
    for model_id, cells in cells_by_model.items():
        for c in cells:
            shared_zero = c.weights == ZERO_SHOT or (c.alpha == 0.0 and (model_id, c.weights) not in with_start)
            for actor, shard in placement.shards_of(idents[(model_id, c.task, c.split)]):
                sub = Cell(c.weights, c.alpha, c.task, shard.name)
                groups[(actor, model_id, ZERO_SHOT if shared_zero else c.weights, c.alpha)].append(sub)
                parent[(actor, model_id, sub)] = (model_id, c)
    order = sorted(groups, key=lambda k: (k[3] != 0.0, k[1], k[2], k[3], k[0]))
    return [(k[0], k[1], groups[k]) for k in order], parent


class Rows:
    """Sums shard rows into cell rows and hands each cell on once all its shards are in."""

    def __init__(self, parent: dict, on_rows: Callable[[str, list[dict]], None]):
        self.parent, self.on_rows = parent, on_rows
        self.pending: dict[tuple[str, Cell], int] = defaultdict(int)
        for model_cell in parent.values():
            self.pending[model_cell] += 1
        self.sums: dict[tuple[str, Cell], dict] = {}

    def add(self, actor: int, model_id: str, rows: list[dict]) -> None:
        done = []
        for r in rows:
            model_cell = self.parent[(actor, model_id, Cell(r["weights"], r["alpha"], r["task"], r["split"]))]
            acc = self.sums.setdefault(model_cell, {"correct": 0, "n": 0, "seconds": 0.0})
            acc["correct"] += r["correct"]
            acc["n"] += r["n"]
            acc["seconds"] += r["seconds"]
            self.pending[model_cell] -= 1
            if self.pending[model_cell] == 0:
                done.append(model_cell)
        by_model = defaultdict(list)
        for model_cell in done:
            m, c = model_cell
            s = self.sums.pop(model_cell)
            by_model[m].append({"weights": c.weights, "alpha": c.alpha, "task": c.task, "split": c.split,
                                "accuracy": s["correct"] / max(1, s["n"]), **s})
        for m, rows_ in by_model.items():
            self.on_rows(m, rows_)

    def unfinished(self) -> set[tuple[str, Cell]]:
        return {mc for mc, k in self.pending.items() if k > 0}


def run_units(handles: Sequence, units: list[Unit], rows: Rows, max_in_flight: int = 2,
              progress: bool = True) -> list[Unit]:
    """Submit units keeping each actor at most `max_in_flight` deep; finished sub-cells go to `rows` as soon
    as they return. An actor that dies takes only its own units with it: they are returned (unevaluated)
    for the caller to re-stage, and the other actors go on."""
    queues: dict[int, list] = defaultdict(list)
    for u in units:
        queues[u[0]].append(u)
    in_flight: dict = {}
    lost: list = []
    bar = tqdm(total=sum(len(u[2]) for u in units), desc="sweeping cells", disable=not progress, leave=False)

    def submit(actor: int) -> None:
        if queues[actor] and sum(1 for a, _, _ in in_flight.values() if a == actor) < max_in_flight:
            _, model_id, cells = queues[actor].pop(0)
            ref = handles[actor].evaluate.remote(model_id, [(c.weights, c.alpha, c.task, c.split) for c in cells])
            in_flight[ref] = (actor, model_id, cells)

    for actor in list(queues):
        for _ in range(max_in_flight):
            submit(actor)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        actor, model_id, cells = in_flight.pop(ready[0])
        try:
            out = ray.get(ready[0])
        except ray.exceptions.RayActorError:
            lost.append((actor, model_id, cells))
            lost += queues.pop(actor, [])
            continue
        rows.add(actor, model_id, out)
        bar.update(len(cells))
        submit(actor)
    bar.close()
    return lost
