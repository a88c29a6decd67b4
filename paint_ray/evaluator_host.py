"""One device's worth of evaluators: several models (θ0 each, by weight digest), their weight sets, heads
and eval splits, each held under a content key.

Plain Python; distributed/evaluators.py makes it a named Ray actor. A name (task, split) whose key changes
is replaced, with the cells memoised on the old one. Splits with the same key and resolution are shared
by every model on the host (they are read-only uint8 tensors).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import torch

from .data import PreparedSplit
from .evaluator import ZERO_SHOT, Cell, Evaluator, drift
from .models.build import build_visual
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
    def __init__(self, device: str | None = None, threads: int | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.evaluators: dict[str, Evaluator] = {}      # model digest -> its evaluator
        self.labels: dict[str, str] = {}                # model digest -> spec, for reading
        self.shared_splits: dict[tuple[str, str, int], PreparedSplit] = {}
        self.meta: dict[tuple[str, str], dict] = {}
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

    def add_weights(self, model_id: str, key: str, state: Mapping, start: Mapping | None = None,
                    meta: dict | None = None) -> None:
        """A weight set under its content key; `meta` (patch tasks, mode, …) is kept for paint_ray.live."""
        self.evaluators[model_id].add_weights(key, _tensors(state), None if start is None else _tensors(start))
        self.meta[(model_id, key)] = dict(meta or {})
        self.loads += 1

    def add_head(self, model_id: str, task: str, key: str, head) -> None:
        self.evaluators[model_id].add_head(task, _tensor(head), key)
        self.loads += 1

    def add_split(self, model_id: str, task: str, split: str, key: str, images, labels) -> None:
        images = _tensor(images)
        shared = (key, split, images.shape[-1])
        if shared not in self.shared_splits:
            self.shared_splits[shared] = PreparedSplit(images, _tensor(labels)).to(self.device)
            self.loads += 1
        self.evaluators[model_id].add_split(task, split, self.shared_splits[shared], key)

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
        return {"device": self.device, "loads": self.loads,
                "models": {m: {"label": self.labels.get(m, ""), "weights": sorted(ev.weights),
                               "weight_meta": {w: self.meta.get((m, w), {}) for w in ev.weights},
                               "heads": dict(ev.head_keys),
                               "splits": {f"{t}/{s}": k for (t, s), k in ev.split_keys.items()}}
                           for m, ev in self.evaluators.items()}}
