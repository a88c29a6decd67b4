"""Spreading sweep cells over evaluator actors and collecting them as they finish (ray.wait, no barrier).

Every actor holds θ0, the heads and the eval splits of each model in the sweep (staged by
distributed/backend.py); each weight set lives on one actor, and the cells of that set go there.
Each finished unit (one patched model at one α, all its tasks) is handed back at once, so a killed
driver loses only the units in flight.
"""
from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Sequence

import ray
from tqdm.auto import tqdm

from ..evaluator import ZERO_SHOT, Cell


def owner_of(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


def units_of(cells_by_model: dict[str, list[Cell]], owners: dict[tuple[str, str], int],
             n: int, with_start: frozenset = frozenset()) -> list[tuple[int, str, list[Cell]]]:
    """Group cells into (actor, model, cells of one (θ1, α)). α = 0 of a model goes to one fixed actor,
    except for θ1s in `with_start` ((model, key) pairs whose α = 0 is their own start point)."""
    groups: dict[tuple[int, str, str, float], list[Cell]] = defaultdict(list)
    for model_id, cells in cells_by_model.items():
        for c in cells:
            shared_zero = c.weights == ZERO_SHOT or (c.alpha == 0.0 and (model_id, c.weights) not in with_start)
            actor = owner_of(model_id, n) if shared_zero else owners[(model_id, c.weights)]
            groups[(actor, model_id, ZERO_SHOT if shared_zero else c.weights, c.alpha)].append(c)
    # α = 0 first: its rows are reused by every θ1 of the model
    order = sorted(groups, key=lambda k: (k[3] != 0.0, k[1], k[2], k[3]))
    return [(k[0], k[1], groups[k]) for k in order]


def run_units(handles: Sequence, units: list[tuple[int, str, list[Cell]]],
              on_rows: Callable[[str, list[dict]], None], max_in_flight: int = 2,
              progress: bool = True) -> list[tuple[int, str, list[Cell]]]:
    """Submit units keeping each actor at most `max_in_flight` deep; hand each finished unit's rows to
    `on_rows(model_id, rows)` as soon as it returns. An actor that dies takes only its own units with it:
    they are returned (unevaluated) for the caller to re-stage, and the other actors go on."""
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
            rows = ray.get(ready[0])
        except ray.exceptions.RayActorError:
            lost.append((actor, model_id, cells))
            lost += queues.pop(actor, [])
            continue
        on_rows(model_id, rows)
        bar.update(len(cells))
        submit(actor)
    bar.close()
    return lost
