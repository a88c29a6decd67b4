"""One device's worth of evaluators: several models (θ0 each, by weight digest), their weight sets, heads
and eval splits, each held under a content key, every byte of it inside one budget.

Plain Python: the in-process backend holds one, distributed/evaluators.py makes it a named Ray actor. The
host loads what it holds itself: θ0 by spec (verified by digest), heads from the node's cache or the study's
storage (encoded here, on this device, when neither has them), shards of splits (placement.py) from its
node's eval cache, weight sets by name from the study's storage (storage.py). Only keys and names
arrive from the driver. A task whose key changes is replaced, with the cells memoised on the old one.

The budget (memory.py) covers θ0s, live θαs and heads (fixed while a model is held), the θ1s on the device
(residency.py: least recently used out first) and the resident eval data. Shards are resident while they
fit next to the fixed bytes and room for one weight set; the rest stream. A shard with the same key, rows
and resolution is held once and shared by every model on the host (read-only uint8 tensors).
"""
from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import torch

from ..data import PreparedSplit
from ..devices import eval_precision, resolve
from ..errors import PaintRayError
from ..models.registry import LoadedModel, ModelRef, load_verified
from .evaluator import ZERO_SHOT, Cell, Evaluator, drift
from .inventory import HeldModel, HeldShard, HeldWeights, Inventory
from .memory import CPU_FRACTION, available_host_bytes, default_budget, tensor_bytes
from .residency import WeightCache


class EvaluatorHost:
    def __init__(self, device: str | None = None, threads: int | None = None, budget: int | None = None,
                 peers: int = 1):
        if threads:
            torch.set_num_threads(threads)
        self.device = resolve(device)
        self._budget = int(budget) if budget else None    # None: measured once the first model is loaded
        self.peers = peers                                 # evaluators sharing this node's RAM (CPU budgets)
        self.shards: dict[tuple, tuple[PreparedSplit, bool]] = {}   # (key, split, size, start, stop) -> data
        self.evaluators: dict[str, Evaluator] = {}         # model digest -> its evaluator
        self.loaded: dict[str, LoadedModel] = {}           # model digest -> the whole CLIP (for heads)
        self.refs: dict[str, ModelRef] = {}
        self.shard_of: dict[tuple[str, str, str], HeldShard] = {}     # (model, task, split name) -> its shard
        self.cache = WeightCache(self.device, self._weight_room, self._host_room())
        self.loads = 0
        self.last_used = time.time()

    # ---- the budget -------------------------------------------------------------------------
    @property
    def budget(self) -> int:
        """Bytes this host may hold on its device: given, or measured the first time it is needed after a
        model is loaded (what is held then plus a share of what is still free)."""
        if self._budget is None:
            self._budget = default_budget(self.device, self.fixed_bytes() + self.cache.device_bytes(), self.peers)
        return self._budget

    def set_peers(self, peers: int) -> None:
        """How many evaluators share this node (a CPU budget is split among them); before the budget is set."""
        self.peers = max(1, int(peers))

    def fixed_bytes(self) -> int:
        """θ0s, live θαs and heads of the held models."""
        return sum(ev.fixed_bytes for ev in self.evaluators.values())

    def _reserve(self) -> int:
        """Room kept free of data for one weight set (θ1, and its start point for a sequential set)."""
        sizes = [tensor_bytes(ev.theta0) * (2 if ev.starts else 1) for ev in self.evaluators.values()]
        return max(sizes, default=0)

    def _weight_room(self) -> int:
        return self.budget - self.fixed_bytes() - self.resident_bytes()

    def _host_room(self) -> int:
        """Pinned host memory for θ1s moved off a GPU (none on CPUs, where host memory is the device)."""
        return int(available_host_bytes() * CPU_FRACTION / max(1, self.peers)) if self.device.type == "cuda" else 0

    def identity(self) -> dict[str, str]:
        """The eval precision and device type this host's rows are computed with."""
        return {"precision": eval_precision(self.device), "device": self.device.type}

    # ---- models, heads, weights, data -------------------------------------------------------
    def add_loaded(self, loaded: LoadedModel) -> None:
        """θ0 of a model already loaded in this process (the in-process backend)."""
        self.evaluators[loaded.digest] = Evaluator(loaded.model.visual, self.device, weights=self.cache,
                                                   model_id=loaded.digest)
        self.loaded[loaded.digest] = loaded
        self.refs[loaded.digest] = loaded.ref
        self.loads += 1

    def load_model(self, model_id: str, spec: str, storage: str | None = None) -> None:
        """θ0 of a model loaded on this node by its spec (an embedded model may come from the storage),
        checked against its digest."""
        self.add_loaded(load_verified(spec, model_id, storage=storage))

    def load_heads(self, model_id: str, tasks: list[tuple[str, str]], data_root: str | None,
                   storage: str | None) -> None:
        """Each (task, task key)'s head: from this node's cache or the storage, else encoded on this device
        and published; the task is looked up here, and must have the key the driver computed."""
        from ..caches.heads import cached_head
        ev = self.evaluators[model_id]
        for name, key in tasks:
            if ev.holds_head(name, key):
                continue
            task = self._task(name, key, data_root)
            ev.add_head(name, cached_head(self.loaded[model_id], task, self.device, storage), key, task.answer_groups)
            self.loads += 1
        self._used()

    def _task(self, name: str, key: str, data_root: str | None):
        from ..caches.eval import task_key
        from ..tasks import get_task
        found = get_task(name, data_root)
        if task_key(found) != key:
            raise PaintRayError(f"task {name!r} on this node has other data or prompts ({task_key(found)}) than "
                                f"the study's ({key}); give every node the same --data-root contents")
        return found

    def fetch_weights(self, model_id: str, key: str, theta1: str, start: str | None, storage: str | None,
                      meta: dict | None = None) -> None:
        """A weight set by the names of its files (storage.py): read from this node's cache, or fetched
        from the study's storage into it (verified). The driver sends names, never tensors."""
        from ..models.checkpoints import load_tensors
        from ..storage import fetch
        files = (fetch(theta1, storage), fetch(start, storage) if start else None)
        state = load_tensors(files[0])
        begin = load_tensors(files[1]) if files[1] else None
        self.evaluators[model_id].add_weights(key, state, begin, files, dict(meta or {}, theta1_name=theta1,
                                                                         start_name=start, storage=storage))
        self.loads += 1
        self._used()

    def add_weights(self, model_id: str, key: str, state: dict, start: dict | None = None,
                    meta: dict | None = None) -> None:
        """A weight set handed in as tensors (tests, in-process callers); kept in memory, never dropped."""
        self.evaluators[model_id].add_weights(key, state, start, None, meta)
        self.loads += 1

    def split_size(self, task: str, split: str, key: str, data_root: str | None, image_size: int) -> int:
        """Rows of a split, building this node's eval-cache entry for it on first use (under a file lock)."""
        return len(self._node_split(task, split, key, data_root, image_size))

    def _node_split(self, task: str, split: str, key: str, data_root: str | None, image_size: int) -> PreparedSplit:
        from ..caches.eval import cached_prepare
        return cached_prepare(self._task(task, key, data_root), split, image_size, progress=False)

    def add_shard(self, model_id: str, shard: dict, data_root: str | None, resident: bool) -> bool:
        """Rows [start, stop) of a split, read from this node's eval cache. Resident shards are copied onto
        the device while they fit the budget; the rest stay memory-mapped and stream. Returns residency."""
        ident = (shard["key"], shard["split"], shard["image_size"], shard["start"], shard["stop"])
        for (m, t, name), old in list(self.shard_of.items()):     # the task's data changed: its old rows go
            if m == model_id and t == shard["task"] and old.split == shard["split"] and old.key != shard["key"]:
                self.evaluators[m].drop_split(t, name)
                del self.shard_of[(m, t, name)]
        used = {(v.key, v.split, v.image_size, v.start, v.stop) for v in self.shard_of.values()}
        for held in [k for k in self.shards if k not in used and k != ident]:
            del self.shards[held]
        if ident not in self.shards:
            full = self._node_split(shard["task"], shard["split"], shard["key"], data_root, shard["image_size"])
            part = PreparedSplit(full.images[shard["start"]:shard["stop"]], full.labels[shard["start"]:shard["stop"]])
            size = part.images.nelement() + part.labels.nelement() * 8
            room = self.budget - self.fixed_bytes() - self._reserve() - self.resident_bytes()
            resident = resident and size <= room
            if resident:    # a copy: in device memory, or (CPU) out of the memory map into RAM
                part = PreparedSplit(part.images.to(self.device, copy=True), part.labels.to(self.device, copy=True))
            self.shards[ident] = (part, resident)
            self.loads += 1
        data, resident = self.shards[ident]
        name = shard["split"] if shard["start"] == 0 and shard["stop"] == shard["total"] else \
            f"{shard['split']}@{shard['start']}:{shard['stop']}"
        self.evaluators[model_id].add_split(shard["task"], name, data, shard["key"], resident=resident)
        self.shard_of[(model_id, shard["task"], name)] = HeldShard(
            model_id, shard["task"], shard["split"], shard["key"], shard["image_size"], shard["start"],
            shard["stop"], shard["total"], name, resident)
        self._used()
        return resident

    def resident_bytes(self) -> int:
        """Eval data held resident by this host (shards shared by its models counted once)."""
        return sum(d.images.nelement() + d.labels.nelement() * 8 for d, r in self.shards.values() if r)

    def streamed_bytes(self) -> int:
        return sum(d.images.nelement() + d.labels.nelement() * 8 for d, r in self.shards.values() if not r)

    # ---- evaluation -------------------------------------------------------------------------
    def evaluate(self, model_id: str, cells: Iterable[tuple]) -> list[dict]:
        rows = self.evaluators[model_id].evaluate(Cell(*c) for c in cells)
        self._used()
        return rows

    def probe_features(self, model_id: str, weights: str, alpha: float, probe: list[tuple[str, str]],
                       limit: int = 256) -> np.ndarray:
        """Image features of the first `limit` rows of each (task, split name) under θα (drift's CKA)."""
        from .evaluator import probe_features
        return probe_features(self.evaluators[model_id], weights, alpha, probe, limit).cpu().numpy()

    def weight_distance(self, model_id: str, weights: str) -> float:
        from .analysis import relative_distance
        ev = self.evaluators[model_id]
        return relative_distance(ev.theta0, self.cache.get(model_id, weights)[0])

    @torch.inference_mode()
    def features(self, model_id: str, x) -> np.ndarray:
        """Image features of normalised float input under θ0, in fp32 (to compare towers across hosts)."""
        ev = self.evaluators[model_id]
        ev.set_model(ZERO_SHOT, 0.0)
        return ev.visual(torch.as_tensor(np.asarray(x)).to(self.device)).float().cpu().numpy()

    def drift(self, model_id: str, weights: str, probe: list[tuple[str, str]]) -> dict:
        return drift(self.evaluators[model_id], weights, probe)

    def _used(self) -> None:
        self.last_used = time.time()

    def inventory(self, node_id: str = "") -> Inventory:
        """What this host holds, under which keys, how full it is, and how many transfers it has taken in."""
        models = {}
        for m, ev in self.evaluators.items():
            held = {}
            for w in ev.weights:
                meta = self.cache.meta(m, w)
                held[w] = HeldWeights(w, meta.get("theta1_key", ""), meta.get("patch_tasks", ""), meta.get("mode", ""),
                                      meta.get("theta1_name", ""), meta.get("start_key"), meta.get("start_name"),
                                      meta.get("storage"), self.cache.on_device(m, w))
            models[m] = HeldModel(self.refs[m], held, dict(ev.head_keys),
                                  {f"{t}/{s}": k for (t, s), k in ev.split_keys.items()})
        return Inventory(str(self.device), node_id, self.budget if self.evaluators else (self._budget or 0),
                         self.fixed_bytes() + self.cache.device_bytes(), self.resident_bytes(), self.streamed_bytes(),
                         self.loads, time.time() - self.last_used, models, tuple(self.shard_of.values()),
                         dict(self.cache.moves))
