"""The driver's side of a sweep, written once for both backends: place the data, send names, cut work into units.

Evaluator hosts (host.py) run wherever the backend puts them: in this process (backends/local.py) or as Ray
actors (distributed/). `Evaluators` is all this module needs of them: start a method on host i, wait for
what was started (with a bound, and a one-line error naming what was waited for).

- `Sweeper.stage`: every host loads the model by spec, heads by key, its shards of the splits the cells
  need (placement.py: by work), and every weight set, by name, whose tasks it holds data of. Nothing held
  is sent again.
- `units_of`: a split may be cut into shards held by several hosts; a cell (weights, α, task, split)
  becomes one sub-cell per shard, sent to the shard's holder. Sub-cells of one (weights, α) on one host
  form a unit: the patched model is formed once there and evaluated on everything it holds.
- `Rows`: a cell's row is complete when every shard has answered; its accuracy is the summed correct
  count over the summed rows, the same number one host holding the whole split computes.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from ..models.registry import ModelRef
from ..storage import publish
from .evaluator import ZERO_SHOT, Cell
from .inventory import Inventory
from .placement import Holding, Placement, Shard, SplitRef, plan
from .weight_set import WeightSet, Work

# (host, model digest, sub-cells); a sub-cell is a Cell whose split is a shard name
Unit = tuple[int, str, list[Cell]]


class Evaluators(Protocol):
    """A study's evaluator hosts, wherever they run."""

    def __len__(self) -> int: ...
    def call(self, i: int, method: str, *args) -> Any: ...          # start `method` on host i
    def gather(self, pending: list, what: str) -> list: ...         # wait (bounded) for what was started


class InProcess:
    """Hosts in this process: a call runs at once, gathering returns its results."""

    def __init__(self, hosts: Sequence):
        self.hosts = list(hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def call(self, i: int, method: str, *args):
        return getattr(self.hosts[i], method)(*args)

    def gather(self, pending: list, what: str) -> list:
        return list(pending)


class Sweeper:
    """Staging and unit planning over `evaluators`, for one study (its data root and weight storage)."""

    def __init__(self, evaluators: Evaluators, data_root: str | None, storage: str | None):
        self.evaluators, self.data_root, self.storage = evaluators, data_root, storage
        self.placement: Placement | None = None
        self._rows: dict[tuple, int] = {}         # placement identity of a split -> its rows
        self._published: set[str] = set()         # names whose files are in the storage
        self._keys: dict[str, str] = {}           # task name -> task key

    def task_keys(self, tasks) -> dict[str, str]:
        """The content key of each task, as this process sees its data (the hosts check theirs against it)."""
        from ..caches.eval import task_key
        from ..tasks import get_task
        for t in tasks:
            if t not in self._keys:
                self._keys[t] = task_key(get_task(t, self.data_root))
        return {t: self._keys[t] for t in tasks}

    def inventories(self) -> list[Inventory]:
        ev = self.evaluators
        return ev.gather([ev.call(i, "inventory") for i in range(len(ev))], "the evaluators' inventories")

    def _placement(self, inventories: list[Inventory]) -> Placement:
        """What the hosts hold now (a re-created host holds nothing), as a placement to extend."""
        placement = Placement([max(0, inv.budget - inv.weight_bytes) for inv in inventories],
                              work=self.placement.work if self.placement else {})
        for i, inv in enumerate(inventories):
            seen = set()
            for sh in inv.shards:
                shard = Shard(sh.task, sh.split, sh.key, sh.image_size, sh.start, sh.stop, sh.total)
                if shard not in seen:
                    seen.add(shard)
                    placement.held[i].append(Holding(shard, sh.resident))
        return placement

    def _sizes(self, idents: list[tuple[str, str, str, int]]) -> list[SplitRef]:
        """Rows per split, asked of the hosts (from the node's cache entry or the dataset's index: nothing
        is decoded to count)."""
        ev = self.evaluators
        missing = [i for i in idents if i not in self._rows]
        calls = [ev.call(k % len(ev), "split_size", t, s, key, self.data_root, size)
                 for k, (t, s, key, size) in enumerate(missing)]
        for ident, n in zip(missing, ev.gather(calls, "split sizes")):
            self._rows[ident] = n
        return [SplitRef(*i, self._rows[i]) for i in idents]

    def _names(self, ws: WeightSet) -> tuple[str, str | None]:
        """The names a set's files travel under, published to the storage once when they are here."""
        from ..paths import home
        for name in filter(None, (ws.theta1, ws.start)):
            if self.storage and name not in self._published and (home() / name).is_file():
                publish(home() / name, self.storage)
                self._published.add(name)
        return ws.theta1, ws.start

    def stage(self, model: ModelRef, task_keys: dict[str, str], splits: set[str],
              needs: dict[WeightSet, set[str]]) -> dict[tuple[str, str, str], tuple]:
        """Give the hosts what cells of `model` on `task_keys` × `splits` need. Returns
        {(model, task, split): placement identity}."""
        ev, digest, image_size = self.evaluators, model.digest, model.image_size
        invs = self.inventories()
        ev.gather([ev.call(i, "load_model", digest, model.spec, self.storage) for i, inv in enumerate(invs)
                   if not inv.holds_model(digest)], f"the evaluators loading {model.spec}")
        heads = sorted(task_keys.items())
        missing = [[(t, k) for t, k in heads if not inv.holds_head(digest, t, k)] for inv in invs]
        first = [i for i, m in enumerate(missing) if m][:1]     # one host encodes what no cache has, then the rest read it
        for batch in (first, [i for i, m in enumerate(missing) if m and i not in first]):
            ev.gather([ev.call(i, "load_heads", digest, missing[i], self.data_root, self.storage) for i in batch],
                      f"the evaluators loading the heads of {model.spec}")
        invs = self.inventories()                # budgets are measured once the model is loaded
        idents = {(digest, t, s): (t, s, k, image_size) for t, k in heads for s in sorted(splits)}
        work: dict[tuple, int] = defaultdict(int)
        for ws, its_tasks in needs.items():
            for t in its_tasks:
                for s in splits:
                    work[(t, s, task_keys[t], image_size)] += 1
        self.placement = plan(self._sizes(sorted(set(idents.values()))), [], self._placement(invs), work=dict(work))
        calls, holders = [], defaultdict(set)      # task -> hosts holding a shard of it
        wanted = set(idents.values())
        for i, inv in enumerate(invs):
            have = inv.shard_names(digest)
            for hold in self.placement.held[i]:
                if hold.shard.ident in wanted:
                    holders[hold.shard.task].add(i)
                    if (hold.shard.task, hold.shard.name) not in have:
                        calls.append(ev.call(i, "add_shard", digest, hold.shard.as_dict(), self.data_root,
                                             hold.resident))
        ev.gather(calls, f"the evaluators loading eval data for {model.spec}")
        calls = []
        for ws, its_tasks in needs.items():     # each weight set goes where the data of its tasks is
            for i in sorted(set().union(*(holders.get(t, set()) for t in its_tasks))):
                if not invs[i].holds_weights(digest, ws.key):
                    theta1, start = self._names(ws)
                    meta = {"patch_tasks": ws.patch_tasks, "mode": ws.mode, "theta1_key": ws.theta1_key,
                            "start_key": ws.start_key}
                    calls.append(ev.call(i, "fetch_weights", digest, ws.key, theta1, start, self.storage, meta))
        ev.gather(calls, f"the evaluators fetching weights of {model.spec}")
        return idents

    def plan_units(self, work: Work):
        """Stage every model of `work`, then its cells as units. Returns (units, Rows-parent, {(model, key): ws})."""
        idents, cells_by_model, by_key, with_start = {}, {}, {}, set()
        for digest in sorted({ws.model.digest for ws in work}):
            sets = [ws for ws in work if ws.model.digest == digest]
            tasks = {c[1] for ws in sets for c in work[ws]}
            splits = {c[2] for ws in sets for c in work[ws]}
            idents.update(self.stage(sets[0].model, self.task_keys(sorted(tasks)), splits,
                                     {ws: {c[1] for c in work[ws]} for ws in sets}))
            cells_by_model[digest] = [Cell(ws.key, a, t, s) for ws in sets for a, t, s in work[ws]]
            for ws in sets:
                by_key[(digest, ws.key)] = ws
                if ws.start:
                    with_start.add((digest, ws.key))
        units, parent = units_of(cells_by_model, idents, self.placement, frozenset(with_start))
        return units, parent, by_key

    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict:
        """CKA of θ0 and θ1 features on the first rows of each probe task's val split (wherever they are
        held; features are small and come back here), and ‖θ1 − θ0‖/‖θ0‖."""
        import torch

        from .analysis import linear_cka
        ev, m = self.evaluators, ws.model.digest
        idents = self.stage(ws.model, self.task_keys(probe_tasks), {"val"},
                            {ws: set(probe_tasks)})
        firsts = [self.placement.shards_of(idents[(m, t, "val")])[0] for t in probe_tasks]
        f0 = ev.gather([ev.call(i, "probe_features", m, ZERO_SHOT, 0.0, [(s.task, s.name)]) for i, s in firsts],
                       "zero-shot probe features")
        f1 = ev.gather([ev.call(i, "probe_features", m, ws.key, 1.0, [(s.task, s.name)]) for i, s in firsts],
                       "fine-tuned probe features")
        cka = linear_cka(torch.from_numpy(np.concatenate(f0)), torch.from_numpy(np.concatenate(f1)))
        [distance] = ev.gather([ev.call(firsts[0][0], "weight_distance", m, ws.key)], "the weight distance")
        return {"cka": cka, "weight_distance": distance}


def units_of(cells_by_model: dict[str, list[Cell]], idents: dict[tuple[str, str, str], tuple],
             placement: Placement, with_start: frozenset = frozenset()) -> tuple[list[Unit], dict]:
    """Units of sub-cells, α = 0 first (its rows are reused by every θ1 of the model), each host's units
    grouped by weight set (so a θ1 is on its device for consecutive units), and for every sub-cell the
    parent cell it adds to: {(host, model, sub-cell): (model, cell)}.

    `idents[(model, task, split)]` is the split's placement identity (task, split, key, image size)."""
    groups: dict[tuple[int, str, str, float], list[Cell]] = defaultdict(list)
    parent = {}
    for model_id, cells in cells_by_model.items():
        for c in cells:
            shared_zero = c.weights == ZERO_SHOT or (c.alpha == 0.0 and (model_id, c.weights) not in with_start)
            for host, shard in placement.shards_of(idents[(model_id, c.task, c.split)]):
                sub = Cell(c.weights, c.alpha, c.task, shard.name)
                groups[(host, model_id, ZERO_SHOT if shared_zero else c.weights, c.alpha)].append(sub)
                parent[(host, model_id, sub)] = (model_id, c)
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

    def add(self, host: int, model_id: str, rows: list[dict]) -> None:
        done = []
        for r in rows:
            model_cell = self.parent[(host, model_id, Cell(r["weights"], r["alpha"], r["task"], r["split"]))]
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


def rows_back(by_key: dict, on_rows) -> Callable[[str, list[dict]], None]:
    """Hand finished rows to `on_rows(weight set, rows)`, split by weight set."""
    def back(model_id: str, rows: list[dict]) -> None:
        for key in {r["weights"] for r in rows}:
            on_rows(by_key[(model_id, key)], [r for r in rows if r["weights"] == key])
    return back
