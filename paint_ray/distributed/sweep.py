"""Sweep units collected from the evaluator actors as they finish (ray.wait, no barrier).

Units and the summing of shard rows are the backends' shared code (evaluation/sweep.py). Each actor is
kept at most `max_in_flight` units deep; each finished row is handed back at once, so a killed driver
loses only the units in flight, and an actor that dies takes only its own units with it.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import ray
from tqdm.auto import tqdm

from ..errors import PaintRayError
from ..evaluation.sweep import Rows, Unit
from .waits import WAIT_S


def run_units(handles: Sequence, units: list[Unit], rows: Rows, max_in_flight: int = 2,
              progress: bool = True, study: str = "", timeout: float = WAIT_S) -> list[Unit]:
    """Submit units keeping each actor at most `max_in_flight` deep; finished sub-cells go to `rows` as soon
    as they return. Units of an actor that dies are returned (unevaluated) for the caller to re-stage. No
    answer from any actor for `timeout` seconds is a one-line error."""
    queues: dict[int, list] = defaultdict(list)
    for u in units:
        queues[u[0]].append(u)
    in_flight: dict = {}
    lost: list = []
    bar = tqdm(total=sum(len(u[2]) for u in units), desc="sweeping cells", disable=not progress, leave=False)

    def submit(actor: int) -> None:
        if queues[actor] and sum(1 for a, _, _ in in_flight.values() if a == actor) < max_in_flight:
            _, model_id, cells = queues[actor].pop(0)
            ref = handles[actor].evaluate.remote(model_id, [(c.weights, c.alpha, c.task, c.split, c.schedule)
                                                            for c in cells])
            in_flight[ref] = (actor, model_id, cells)

    for actor in list(queues):
        for _ in range(max_in_flight):
            submit(actor)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=timeout)
        if not ready:
            raise PaintRayError(f"no sweep unit of study {study} finished in {timeout:.0f} s ({len(in_flight)} in "
                                f"flight); every finished cell is stored and a rerun resumes")
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
