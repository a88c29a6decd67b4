"""The in-process backend: fine-tuning and evaluation in this Python process, on one device.

This is what `paint-ray patch` runs; it needs no Ray. Each model gets one `Evaluator` holding θ0, the
weight sets, the heads and the prepared splits resident on the device.
"""
from __future__ import annotations

import copy
from itertools import groupby

import torch
from tqdm.auto import tqdm

from .. import cache
from ..answer_groups import groups_of
from ..data import image_size_of, prepare_task
from ..evaluator import Cell, Evaluator, drift
from ..finetune import Finetuner, accuracy, visual_state
from ..identity import task_key
from ..interpolate import load_floating_state
from ..models.checkpoints import load_tensors, save_tensors
from ..precision import eval_precision
from ..tasks import get_task
from . import FinetuneJob, TrialResult, WeightSet, Work


class LocalBackend:
    def __init__(self, device: str | None = None, data_root: str | None = None, eval_memory: int | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.eval_memory = eval_memory       # None: every split resident (one process, one device)
        self.data_root = data_root
        self.models = {}                       # model digest -> LoadedModel
        self.evaluators: dict[str, Evaluator] = {}

    def start(self) -> None:
        pass

    def add_model(self, loaded) -> None:
        self.models[loaded.digest] = loaded

    def eval_identity(self) -> dict[str, str]:
        return {"precision": eval_precision(self.device), "device": torch.device(self.device).type}

    # ---- fine-tuning ------------------------------------------------------------------------
    def finetune(self, jobs: list[FinetuneJob], progress: bool = True) -> list[TrialResult]:
        return [self._finetune(job, progress) for job in jobs]

    def _finetune(self, job: FinetuneJob, progress: bool) -> TrialResult:
        loaded = self.models[job.model.digest]
        tasks = [get_task(n, job.data_root) for n in job.tasks]
        heads = {t.name: cache.cached_head(loaded, t, self.device) for t in tasks}
        groups = {t.name: groups_of(t) for t in tasks}      # None for all but multiple-choice tasks
        size = image_size_of(loaded.model.visual)
        visual = copy.deepcopy(loaded.model.visual)
        if job.start:
            load_floating_state(visual, load_tensors(job.start), f"start weights {job.start}")
        cached = cache.read_or_set_aside(job.path)
        if cached is not None:
            load_floating_state(visual, cached, f"cached θ1 {job.path}")
        else:
            from ..train_cache import train_split
            trains = {t.name: train_split(t, job.recipe, size) for t in tasks}
            single = len(tasks) == 1
            Finetuner(visual, heads[tasks[0].name] if single else heads, trains[tasks[0].name] if single else trains,
                      job.recipe, self.device, groups[tasks[0].name] if single else groups).run(progress=progress,
                                                   desc=f"fine-tuning {job.model.spec} on {'+'.join(job.tasks)}")
            save_tensors(visual_state(visual), job.path, metadata={"job": job.key})
        val = sum(accuracy(visual, heads[t.name], prepare_task(t, "val", size), self.device, groups=groups[t.name])
                  for t in tasks) / len(tasks)
        return TrialResult(job, val, [{"step": job.recipe.steps, "patch_val_acc": val}], cached=cached is not None)

    # ---- evaluation -------------------------------------------------------------------------
    def _evaluator(self, digest: str) -> Evaluator:
        if digest not in self.evaluators:
            self.evaluators[digest] = Evaluator(self.models[digest].model.visual, self.device)
        return self.evaluators[digest]

    def _stage(self, ws: WeightSet, tasks, splits) -> Evaluator:
        """Give the model's evaluator the set's weights and every head and split its cells need."""
        loaded = self.models[ws.model.digest]
        ev = self._evaluator(ws.model.digest)
        if ws.key not in ev.weights:
            start = load_tensors(ws.start) if ws.start else None
            ev.add_weights(ws.key, load_tensors(ws.theta1), start)
        size = image_size_of(loaded.model.visual)
        for name in tasks:
            task = get_task(name, self.data_root)
            key = task_key(task)
            if not ev.holds_head(name, key):
                ev.add_head(name, cache.cached_head(loaded, task), key, task.answer_groups)
            for split in splits:
                if not ev.holds_split(name, split, key):
                    data = prepare_task(task, split, size)
                    fits = self.eval_memory is None or \
                        ev.resident_bytes + data.images.nelement() + 8 * len(data) <= self.eval_memory
                    ev.add_split(name, split, data, key, resident=fits)    # else it streams from the cache
        return ev

    def evaluate(self, work: Work, on_rows, progress: bool = True) -> None:
        units = [(ws, a, [c for c in cells if c[0] == a]) for ws, cells in work.items()
                 for a in sorted({c[0] for c in cells})]
        bar = tqdm(total=sum(len(u[2]) for u in units), desc="sweeping cells", disable=not progress, leave=False)
        for ws, group in groupby(units, key=lambda u: u[0]):
            group = list(group)
            ev = self._stage(ws, {c[1] for u in group for c in u[2]}, {c[2] for u in group for c in u[2]})
            for _, alpha, cells in group:
                on_rows(ws, ev.evaluate([Cell(ws.key, alpha, task, split) for _, task, split in cells]))
                bar.update(len(cells))
        bar.close()

    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict:
        ev = self._stage(ws, probe_tasks, ["val"])
        return drift(ev, ws.key, [(t, "val") for t in probe_tasks])

    def close(self) -> None:
        self.evaluators.clear()
