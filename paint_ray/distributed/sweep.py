"""Spreading sweep cells over evaluator actors and collecting them as they finish (ray.wait, no barrier).

Every actor holds θ0, the heads and the eval splits of each model in the sweep (splits travel through the
object store once, not once per actor); each θ1 lives on one actor, and the cells of that θ1 go there.
Each finished unit (one patched model, all its tasks) is appended to the results store at once, so a
killed driver loses only the units in flight.
"""
from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import ray
from tqdm.auto import tqdm

from ..evaluator import ZERO_SHOT, Cell


@dataclass
class ModelPayload:
    """What the driver can ship for one model. Large values are ObjectRefs, put once."""
    model_id: str
    model_cfg: dict
    preprocess_cfg: dict
    visual_state: object                                        # ObjectRef of {name: ndarray}
    heads: dict[str, np.ndarray] = field(default_factory=dict)
    splits: dict[tuple[str, str], tuple] = field(default_factory=dict)     # -> (images ref, labels ref)
    weights: dict[str, object] = field(default_factory=dict)   # θ1 key -> ObjectRef of {name: ndarray}
    starts: dict[str, object] = field(default_factory=dict)    # θ1 key -> ObjectRef of its α = 0 point


def _owner(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


def stage(handles: Sequence, payloads: Iterable[ModelPayload]) -> dict[tuple[str, str], int]:
    """Give every actor what it lacks; returns owner index per (model, θ1 key). Nothing held is resent."""
    inventories = ray.get([h.inventory.remote() for h in handles])
    owners: dict[tuple[str, str], int] = {}
    calls = []
    for p in payloads:
        for i, (h, inv) in enumerate(zip(handles, inventories)):
            held = inv["models"].get(p.model_id)
            if held is None:
                calls.append(h.add_model.remote(p.model_id, p.model_cfg, p.preprocess_cfg, p.visual_state))
                held = {"weights": [], "heads": [], "splits": []}
            calls += [h.add_head.remote(p.model_id, t, head) for t, head in p.heads.items() if t not in held["heads"]]
            calls += [h.add_split.remote(p.model_id, t, s, *refs) for (t, s), refs in p.splits.items()
                      if f"{t}/{s}" not in held["splits"]]
        for key, ref in p.weights.items():
            holders = [i for i, inv in enumerate(inventories)
                       if key in inv["models"].get(p.model_id, {}).get("weights", [])]
            owner = holders[0] if holders else _owner(f"{p.model_id}/{key}", len(handles))
            if not holders:
                calls.append(handles[owner].add_weights.remote(p.model_id, key, ref, p.starts.get(key)))
            owners[(p.model_id, key)] = owner
    ray.get(calls)
    return owners


def units_of(cells_by_model: dict[str, list[Cell]], owners: dict[tuple[str, str], int],
             n: int, with_start: frozenset = frozenset()) -> list[tuple[int, str, list[Cell]]]:
    """Group cells into (actor, model, cells of one (θ1, α)). α = 0 of a model goes to one fixed actor,
    except for θ1s in `with_start` ((model, key) pairs whose α = 0 is their own start point)."""
    groups: dict[tuple[int, str, str, float], list[Cell]] = defaultdict(list)
    for model_id, cells in cells_by_model.items():
        for c in cells:
            shared_zero = c.weights == ZERO_SHOT or (c.alpha == 0.0 and (model_id, c.weights) not in with_start)
            actor = _owner(model_id, n) if shared_zero else owners[(model_id, c.weights)]
            groups[(actor, model_id, ZERO_SHOT if shared_zero else c.weights, c.alpha)].append(c)
    # α = 0 first: its rows are reused by every θ1 of the model
    order = sorted(groups, key=lambda k: (k[3] != 0.0, k[1], k[2], k[3]))
    return [(k[0], k[1], groups[k]) for k in order]


def run_units(handles: Sequence, units: list[tuple[int, str, list[Cell]]],
              on_rows: Callable[[str, list[dict]], None], max_in_flight: int = 2, progress: bool = True) -> int:
    """Submit units keeping each actor at most `max_in_flight` deep; hand each finished unit's rows to
    `on_rows(model_id, rows)` as soon as it returns. Returns the number of cells evaluated."""
    queues: dict[int, list] = defaultdict(list)
    for u in units:
        queues[u[0]].append(u)
    in_flight: dict = {}
    done = 0
    bar = tqdm(total=sum(len(u[2]) for u in units), desc="sweeping cells", disable=not progress, leave=False)

    def submit(actor: int) -> None:
        if queues[actor] and sum(1 for a, _, _ in in_flight.values() if a == actor) < max_in_flight:
            _, model_id, cells = queues[actor].pop(0)
            ref = handles[actor].evaluate.remote(model_id, [(c.weights, c.alpha, c.task, c.split) for c in cells])
            in_flight[ref] = (actor, model_id, len(cells))

    for actor in list(queues):
        for _ in range(max_in_flight):
            submit(actor)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        actor, model_id, n = in_flight.pop(ready[0])
        on_rows(model_id, ray.get(ready[0]))
        done += n
        bar.update(n)
        submit(actor)
    bar.close()
    return done
