"""One device's worth of evaluators: several models (θ0 each), their θ1s, heads and eval splits.

Plain Python; distributed/evaluators.py makes it a named Ray actor. Splits at the same resolution are
shared by every model on the host (they are read-only uint8 tensors).
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
import open_clip
import torch

from .data import PreparedSplit
from .evaluator import Cell, Evaluator, drift


def build_visual(model_cfg: dict, preprocess_cfg: dict, state: Mapping[str, np.ndarray | torch.Tensor]) -> torch.nn.Module:
    """An open_clip image encoder from its JSON config and weights (no files, no hub)."""
    clip = open_clip.CLIP(**model_cfg) if "hf_model_name" not in model_cfg.get("text_cfg", {}) \
        else open_clip.CustomTextCLIP(**model_cfg)
    visual = clip.visual
    visual.load_state_dict({k: _tensor(np.asarray(v)) for k, v in state.items()}, strict=False)
    visual.preprocess_cfg = dict(preprocess_cfg)
    return visual.eval()


def _tensor(a: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():   # object-store arrays are read-only; evaluation never writes them
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


class EvaluatorHost:
    def __init__(self, device: str | None = None, threads: int | None = None):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if threads:
            torch.set_num_threads(threads)
        self.device = device
        self.evaluators: dict[str, Evaluator] = {}
        self.shared_splits: dict[tuple[str, str, int], PreparedSplit] = {}
        self.loads = 0

    def add_model(self, model_id: str, model_cfg: dict, preprocess_cfg: dict, visual_state: Mapping) -> None:
        visual = build_visual(model_cfg, preprocess_cfg, visual_state)
        self.evaluators[model_id] = Evaluator(visual, self.device)
        self.loads += 1

    def add_weights(self, model_id: str, key: str, state: Mapping, start: Mapping | None = None) -> None:
        as_tensors = (lambda d: {k: _tensor(np.asarray(v)) for k, v in d.items()})
        self.evaluators[model_id].add_weights(key, as_tensors(state), None if start is None else as_tensors(start))
        self.loads += 1

    def add_head(self, model_id: str, task: str, head) -> None:
        self.evaluators[model_id].add_head(task, _tensor(np.asarray(head)))
        self.loads += 1

    def add_split(self, model_id: str, task: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
        key = (task, split, images.shape[-1])
        if key not in self.shared_splits:
            self.shared_splits[key] = PreparedSplit(_tensor(images), _tensor(labels)).to(self.device)
            self.loads += 1
        ev = self.evaluators[model_id]
        ev.splits[(task, split)] = self.shared_splits[key]

    def evaluate(self, model_id: str, cells: Iterable[tuple]) -> list[dict]:
        return self.evaluators[model_id].evaluate(Cell(*c) for c in cells)

    def drift(self, model_id: str, weights: str, probe: list[tuple[str, str]]) -> dict:
        return drift(self.evaluators[model_id], weights, probe)

    def inventory(self) -> dict:
        """What this host holds, and how many transfers it has taken in (a reused host adds none)."""
        return {"device": self.device, "loads": self.loads,
                "models": {m: {"weights": sorted(ev.weights), "heads": sorted(ev.heads),
                               "splits": sorted(f"{t}/{s}" for t, s in ev.splits)}
                           for m, ev in self.evaluators.items()}}
