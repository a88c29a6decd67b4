"""One device's worth of evaluators: several models (θ0 each, by weight digest), their weight sets, heads
and eval splits, each held under a content key.

Plain Python; distributed/evaluators.py makes it a named Ray actor. The host loads what it holds itself:
θ0 by spec, shards of splits (placement.py) from its node's eval cache, weight sets by name from the
study's storage (weights_store.py); only keys, names and heads arrive from the driver. A task whose key
changes is replaced, with the cells memoised on the old one. A shard with the same key, rows and resolution
is held once and shared by every model on the host (read-only uint8 tensors); the host's budget decides
which shards are resident on its device and which stream.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from .data import PreparedSplit
from .evaluator import ZERO_SHOT, Cell, Evaluator, drift
from .models.build import build_visual
from .memory import default_budget
from .precision import eval_precision


def _tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    with warnings.catch_warnings():   # object-store arrays are read-only; evaluation never writes them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(a))


def _tensors(d: Mapping) -> dict[str, torch.Tensor]:
    return {k: _tensor(v) for k, v in d.items()}


class EvaluatorHost:
    def __init__(self, device: str | None = None, threads: int | None = None, budget: int | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        # bytes of eval data this host keeps resident (memory.py); the rest streams from the node's cache
        self.budget = int(budget) if budget else default_budget(device)
        self.shards: dict[tuple, tuple[PreparedSplit, bool]] = {}   # (key, split, size, start, stop) -> data
        self.evaluators: dict[str, Evaluator] = {}      # model digest -> its evaluator
        self.labels: dict[str, str] = {}                # model digest -> spec, for reading
        self.meta: dict[tuple[str, str], dict] = {}
        self.shard_of: dict[tuple[str, str, str], dict] = {}     # (model, task, split name) -> its shard
        self.loads = 0

    def identity(self) -> dict[str, str]:
        """The eval precision and device type this host's rows are computed with."""
        return {"precision": eval_precision(self.device), "device": torch.device(self.device).type}

    def add_model(self, model_id: str, label: str, model_cfg: dict, preprocess_cfg: dict, visual_state: Mapping) -> None:
        """θ0 of a model, built from the full config of the model as it was loaded (activation included)."""
        visual = build_visual(model_cfg, preprocess_cfg, _tensors(visual_state))
        self.evaluators[model_id] = Evaluator(visual, self.device)
        self.labels[model_id] = label
        self.loads += 1

    def load_model(self, model_id: str, spec: str) -> None:
        """θ0 of a model loaded on this node by its spec (nothing travels), checked against its digest."""
        from .errors import PaintRayError
        from .models.registry import load_model
        loaded = load_model(spec, progress=False)
        if loaded.digest != model_id:
            raise PaintRayError(f"model {spec!r} on this node has weights {loaded.digest}, not the {model_id} the "
                                f"study loaded; give every node the same checkpoint")
        self.evaluators[model_id] = Evaluator(loaded.model.visual, self.device)
        self.labels[model_id] = spec
        self.loads += 1

    def fetch_weights(self, model_id: str, key: str, theta1: str, start: str | None, storage: str | None,
                      meta: dict | None = None) -> None:
        """A weight set by the names of its files (weights_store.py): read from this node's cache, or
        fetched from the study's storage into it. The driver sends names, never tensors."""
        from .models.checkpoints import load_tensors
        from .weights_store import fetch
        state = load_tensors(fetch(theta1, storage))
        begin = load_tensors(fetch(start, storage)) if start else None
        self.add_weights(model_id, key, state, begin, meta)

    def split_size(self, task: str, split: str, key: str, data_root: str | None, image_size: int) -> int:
        """Rows of a split, building this node's eval-cache entry for it on first use (under a file lock)."""
        return len(self._node_split(task, split, key, data_root, image_size))

    def _node_split(self, task: str, split: str, key: str, data_root: str | None, image_size: int) -> PreparedSplit:
        from .eval_cache import cached_prepare
        from .errors import PaintRayError
        from .identity import task_key
        from .tasks import get_task
        found = get_task(task, data_root)
        if task_key(found) != key:
            raise PaintRayError(f"task {task!r} on this node has other data or prompts ({task_key(found)}) than "
                                f"the study's ({key}); give every node the same --data-root contents")
        return cached_prepare(found, split, image_size, progress=False)

    def add_shard(self, model_id: str, shard: dict, data_root: str | None, resident: bool) -> bool:
        """Rows [start, stop) of a split, read from this node's eval cache. Resident shards are copied onto
        the device while they fit the budget; the rest stay memory-mapped and stream. Returns residency."""
        ident = (shard["key"], shard["split"], shard["image_size"], shard["start"], shard["stop"])
        for (m, t, name), old in list(self.shard_of.items()):     # the task's data changed: its old rows go
            if m == model_id and t == shard["task"] and old["split"] == shard["split"] and old["key"] != shard["key"]:
                self.evaluators[m].drop_split(t, name)
                del self.shard_of[(m, t, name)]
        used = {(v["key"], v["split"], v["image_size"], v["start"], v["stop"]) for v in self.shard_of.values()}
        for held in [k for k in self.shards if k not in used and k != ident]:
            del self.shards[held]
        if ident not in self.shards:
            full = self._node_split(shard["task"], shard["split"], shard["key"], data_root, shard["image_size"])
            part = PreparedSplit(full.images[shard["start"]:shard["stop"]], full.labels[shard["start"]:shard["stop"]])
            size = part.images.nelement() + part.labels.nelement() * 8
            resident = resident and self.resident_bytes() + size <= self.budget
            if resident:    # a copy: in device memory, or (CPU) out of the memory map into RAM
                part = PreparedSplit(part.images.to(self.device, copy=True), part.labels.to(self.device, copy=True))
            self.shards[ident] = (part, resident)
            self.loads += 1
        data, resident = self.shards[ident]
        name = shard["split"] if shard["start"] == 0 and shard["stop"] == shard["total"] else \
            f"{shard['split']}@{shard['start']}:{shard['stop']}"
        self.evaluators[model_id].add_split(shard["task"], name, data, shard["key"], resident=resident)
        self.shard_of[(model_id, shard["task"], name)] = dict(shard, resident=resident)
        return resident

    def resident_bytes(self) -> int:
        """Eval data held resident by this host (shards shared by its models counted once)."""
        return sum(d.images.nelement() + d.labels.nelement() * 8 for d, r in self.shards.values() if r)

    def streamed_bytes(self) -> int:
        return sum(d.images.nelement() + d.labels.nelement() * 8 for d, r in self.shards.values() if not r)

    @torch.inference_mode()
    def probe_features(self, model_id: str, weights: str, alpha: float, probe: list[tuple[str, str]],
                       limit: int = 256) -> np.ndarray:
        """Image features of the first `limit` rows of each (task, split name) under θα (drift's CKA)."""
        from .evaluator import probe_features
        return probe_features(self.evaluators[model_id], weights, alpha, probe, limit).numpy()

    def weight_distance(self, model_id: str, weights: str) -> float:
        from .analysis import relative_distance
        ev = self.evaluators[model_id]
        return relative_distance(ev.theta0, ev.weights[weights])

    def add_weights(self, model_id: str, key: str, state: Mapping, start: Mapping | None = None,
                    meta: dict | None = None) -> None:
        """A weight set under its content key; `meta` (patch tasks, mode, …) is kept for paint_ray.live."""
        self.evaluators[model_id].add_weights(key, _tensors(state), None if start is None else _tensors(start))
        self.meta[(model_id, key)] = dict(meta or {})
        self.loads += 1

    def add_head(self, model_id: str, task: str, key: str, head, groups=None) -> None:
        """A task's head under its key; `groups` is Task.answer_groups (one id per row, multiple-choice
        tasks such as VQA) or None, and is part of the key (identity.task_key)."""
        self.evaluators[model_id].add_head(task, _tensor(head), key, None if groups is None else _tensor(groups))
        self.loads += 1

    def evaluate(self, model_id: str, cells: Iterable[tuple]) -> list[dict]:
        return self.evaluators[model_id].evaluate(Cell(*c) for c in cells)

    @torch.inference_mode()
    def features(self, model_id: str, x) -> np.ndarray:
        """Image features of normalised float input under θ0, in fp32 (to compare towers across hosts)."""
        ev = self.evaluators[model_id]
        ev.set_model(ZERO_SHOT, 0.0)
        return ev.visual(_tensor(x).to(self.device)).float().cpu().numpy()

    def drift(self, model_id: str, weights: str, probe: list[tuple[str, str]]) -> dict:
        return drift(self.evaluators[model_id], weights, probe)

    def inventory(self) -> dict:
        """What this host holds, under which keys, and how many transfers it has taken in."""
        return {"device": self.device, "loads": self.loads, "budget": self.budget,
                "resident_bytes": self.resident_bytes(), "streamed_bytes": self.streamed_bytes(),
                "shards": [{**v, "model": m, "name": n} for (m, _, n), v in self.shard_of.items()],
                "models": {m: {"label": self.labels.get(m, ""), "weights": sorted(ev.weights),
                               "weight_meta": {w: self.meta.get((m, w), {}) for w in ev.weights},
                               "heads": dict(ev.head_keys),
                               "splits": {f"{t}/{s}": k for (t, s), k in ev.split_keys.items()}}
                           for m, ev in self.evaluators.items()}}
