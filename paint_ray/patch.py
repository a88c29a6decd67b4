"""One PAINT run on one machine: fine-tune on a patch task, sweep α, select on validation, report.

This is what `paint-ray patch` runs. Ray studies (experiments/) schedule the same pieces in parallel.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch

from . import cache
from .data import image_size_of, prepare_task
from .errors import PaintRayError
from .evaluator import Cell, Evaluator
from .finetune import FinetuneConfig, finetune, visual_state
from .models.checkpoints import load_tensors, save_tensors
from .models.registry import load_model
from .results import ResultStore, cell_row, ensure_writable, row_key
from .selection import Selection, frontier_table, select_alpha
from .tasks import get_task


def parse_alphas(text: str) -> list[float]:
    """'0:1:0.1' (start:stop:step, stop included) or '0,0.3,1' -> sorted unique α values in [0, 1]."""
    try:
        if ":" in text:
            start, stop, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise PaintRayError(f"alpha grid step {step:g} must be > 0 in {text!r}")
            n = int(round((stop - start) / step)) + 1 if stop >= start else 0
            values = [start + i * step for i in range(n)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise PaintRayError(f"alpha grid {text!r} is not 'start:stop:step' or a comma list of numbers") from e
    values = sorted({round(v, 6) for v in values})
    if not values:
        raise PaintRayError(f"alpha grid {text!r} is empty; give e.g. 0:1:0.1 or 0,0.5,1")
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise PaintRayError(f"alpha {bad[0]:g} is outside the allowed range [0, 1]")
    return values


@dataclass
class PatchRequest:
    model: str = "toy-m"
    patch: str = "digits"
    supported: list[str] = field(default_factory=lambda: ["shapes", "colors"])
    alphas: list[float] = field(default_factory=lambda: [round(i / 10, 1) for i in range(11)])
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    rule: str = "mean"
    max_drop: float | None = None
    out: str = "paint_ray_out"
    data_root: str | None = None
    device: str = "cpu"
    study: str = "patch"

    def validate(self) -> None:
        """Every user-facing check that needs no model: run before anything expensive."""
        for name in [self.patch, *self.supported]:
            get_task(name, self.data_root)
        if self.patch in self.supported:
            raise PaintRayError(f"patch task {self.patch!r} is also listed as supported; "
                                f"a task is either patched or supported, not both")
        if len(set(self.supported)) != len(self.supported):
            raise PaintRayError(f"supported tasks {','.join(self.supported)} list a task twice")
        if not self.alphas:
            raise PaintRayError("alpha grid is empty; give e.g. 0:1:0.1")
        bad = [a for a in self.alphas if not 0.0 <= a <= 1.0]
        if bad:
            raise PaintRayError(f"alpha {bad[0]:g} is outside the allowed range [0, 1]")
        if self.max_drop is not None and self.max_drop < 0:
            raise PaintRayError(f"--max-drop {self.max_drop:g} must be >= 0 (points of supported accuracy)")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise PaintRayError(f"device {self.device!r} requested but no CUDA GPU is visible; use --device cpu")
        ensure_writable(self.out)


@dataclass
class PatchReport:
    request: PatchRequest
    frontier: pd.DataFrame
    selection: Selection
    rows: pd.DataFrame
    timings: dict

    def summary(self) -> dict:
        """zero-shot / fine-tuned / patched test accuracy per task, at the chosen α."""
        by_alpha = self.frontier.set_index("alpha")
        tasks = {}
        for name in [self.request.patch, *self.request.supported]:
            col = f"{name}_test"
            tasks[name] = {"role": "patch" if name == self.request.patch else "supported",
                           "zero_shot": float(by_alpha.loc[0.0, col]) if 0.0 in by_alpha.index else None,
                           "fine_tuned": float(by_alpha.loc[1.0, col]) if 1.0 in by_alpha.index else None,
                           "patched": float(by_alpha.loc[self.selection.alpha, col])}
        return {"alpha": self.selection.alpha, "rule": self.selection.describe(), "tasks": tasks}


def run_patch(req: PatchRequest, progress: bool = True) -> PatchReport:
    req.validate()
    alphas = sorted(set(req.alphas) | {0.0, 1.0})   # zero-shot and fine-tuned anchor every frontier
    timings: dict[str, float] = {}
    t0 = time.time()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load_model(req.model, progress=progress)
    timings["load_model_s"] = time.time() - t0
    patch_task = get_task(req.patch, req.data_root)
    tasks = [patch_task] + [get_task(n, req.data_root) for n in req.supported]
    size = image_size_of(loaded.model.visual)
    heads = {t.name: cache.cached_head(loaded, t, req.device) for t in tasks}

    t = time.time()
    recipe = req.finetune.as_dict()
    theta1_path = cache.finetuned_path(loaded, [patch_task], recipe)
    if theta1_path.is_file():
        theta1 = load_tensors(theta1_path)
        timings["finetune_s"] = 0.0
    else:
        train = prepare_task(patch_task, "train", size)
        visual = loaded.model.visual
        tuned = copy.deepcopy(visual)
        finetune(tuned, heads[req.patch], train, req.finetune, req.device, progress=progress,
                 desc=f"fine-tuning {req.model} on {req.patch}")
        theta1 = visual_state(tuned)
        save_tensors(theta1, theta1_path, metadata={"recipe": str(recipe)})
        timings["finetune_s"] = time.time() - t

    t = time.time()
    store = ResultStore(Path(req.out) / "results")
    trial = theta1_path.stem
    base = {"study": req.study, "model": req.model, "pretrained": loaded.pretrained, "patch_tasks": req.patch,
            "mode": "single"}
    done = store.keys()
    cells = [Cell(trial, a, task.name, split) for a in alphas for task in tasks for split in ("val", "test")]

    todo = [c for c in cells if row_key(cell_row(base, asdict(c))) not in done]
    if todo:
        ev = Evaluator(loaded.model.visual, req.device)
        ev.add_weights(trial, theta1)
        for task in tasks:
            ev.add_head(task.name, heads[task.name])
            for split in ("val", "test"):
                ev.add_split(task.name, split, prepare_task(task, split, size))
        from tqdm.auto import tqdm
        for a in tqdm(alphas, desc="sweeping alpha", disable=not progress, leave=False):
            store.append(cell_row(base, r) for r in ev.evaluate([c for c in todo if c.alpha == a]))
    timings["sweep_s"] = time.time() - t

    frame = store.read()
    mine = frame[(frame.study == req.study) & (frame.model == req.model) & (frame.pretrained == loaded.pretrained)
                 & (frame.patch_tasks == req.patch) & (frame.trial == trial) & frame.alpha.isin(alphas)]
    table = frontier_table(mine, [req.patch], req.supported)
    selection = select_alpha(table, req.rule, req.max_drop)
    timings["total_s"] = time.time() - t0
    return PatchReport(req, table, selection, mine, timings)
