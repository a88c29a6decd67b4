"""One fine-tuning job, keyed by content, and `run_job`, the one way a job runs (both backends call it).

A job is a model's image encoder, its patch task(s), a recipe and where it starts. Its key digests what the
θ1 depends on: the model's weights, each task's training data as the recipe reads it and its prompts
(caches.train.train_key), the recipe and the start point. The θ1 lands in the node's content-addressed
cache under that key, so the same job in any later study is not fine-tuned again.

`run_job` runs a job where it is called: in this process (backends/local.py) or inside a Ray Tune trial
(distributed/tune_finetune.py, which only adapts `report` to Tune's checkpoints and `resume` to the
checkpoint Tune hands back).
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..caches.entry import read_or_set_aside
from ..caches.eval import prepare_task
from ..caches.heads import cached_head
from ..caches.train import train_split
from ..data import image_size_of
from ..devices import resolve
from ..identity import digest
from ..models.checkpoints import load_tensors, save_tensors
from ..models.registry import LoadedModel, ModelRef
from ..paths import home
from ..tasks import get_task
from ..tasks.answer_groups import groups_of
from ..weights.interpolate import load_floating_state
from ..storage import fetch
from .finetune import FinetuneConfig, Finetuner, accuracy, visual_state

# bumped when the training loop changes what a recipe produces (3: heads matmul in fp32 under autocast,
# task keys by data, preparation and prompts)
FINETUNE_VERSION = "3"
METRIC = "patch_val_acc"


def theta1_path(job_key: str) -> Path:
    return home() / "finetuned" / f"{job_key}.safetensors"


@dataclass(frozen=True)
class FinetuneJob:
    """One fine-tuning of a model's image encoder on one task (or several, jointly) with one recipe."""
    model: ModelRef
    tasks: tuple[str, ...]
    task_keys: tuple[str, ...]          # caches.train.train_key of each task: its training data and prompts
    recipe: FinetuneConfig
    data_root: str | None = None
    start: str | None = None            # storage name of the image encoder to start from (sequential)
    start_key: str | None = None
    mode: str = "single"

    def as_config(self) -> dict:
        """Plain data (a Tune trial's config); `from_config` reads it back."""
        return {"model": vars(self.model), "tasks": list(self.tasks), "task_keys": list(self.task_keys),
                "recipe": self.recipe.as_dict(), "data_root": self.data_root, "start": self.start,
                "start_key": self.start_key, "mode": self.mode, "key": self.key}

    @classmethod
    def from_config(cls, config: dict) -> "FinetuneJob":
        job = cls(ModelRef(**config["model"]), tuple(config["tasks"]), tuple(config["task_keys"]),
                  FinetuneConfig(**config["recipe"]), config["data_root"], config["start"], config["start_key"],
                  config["mode"])
        if job.key != config["key"]:
            from ..errors import PaintRayError
            raise PaintRayError(f"fine-tuning job {config['key']} reads back as {job.key}: its config was changed")
        return job

    @property
    def key(self) -> str:
        return digest([FINETUNE_VERSION, self.model.digest, self.task_keys, self.recipe.as_dict(), self.start_key])

    @property
    def path(self) -> Path:
        """Where θ1 lives once trained: content-addressed, so any study with the same inputs reuses it."""
        return theta1_path(self.key)

    @property
    def label(self) -> str:
        return f"{'+'.join(self.tasks)}-{self.key[:8]}"


@dataclass
class TrialResult:
    job: FinetuneJob
    val_acc: float
    history: list[dict] = field(default_factory=list)
    tune_path: str = ""
    node_id: str = ""
    cached: bool = False
    resumed_from: int = 0

    @property
    def path(self) -> Path:
        return self.job.path


# report(metrics, save): called at every checkpoint; save(folder) writes the checkpoint's files there
Report = Callable[[dict, Callable[[Path], None]], None]


def run_job(job: FinetuneJob, loaded: LoadedModel, device: torch.device | str | None = None, *,
            storage: str | None = None, report: Report | None = None, every: int = 0,
            resume: str | Path | None = None, progress: bool = False) -> TrialResult:
    """Fine-tune `job` on `device` (or read its cached θ1), leaving θ1 in this node's cache.

    Heads come from the node's cache or the study's `storage` (encoded on `device` only when neither has
    them); a sequential start point is fetched by name from `storage`. Every `every` steps (and at the end)
    the mean validation accuracy of the job's tasks is measured and `report`ed with a function that writes
    the checkpoint (the weights, and the trainer's state while unfinished). `resume` is such a checkpoint's
    folder: training continues from its step, on whatever device this is.
    """
    device = resolve(device)
    recipe = job.recipe
    tasks = [get_task(n, job.data_root) for n in job.tasks]
    heads = {t.name: cached_head(loaded, t, device, storage) for t in tasks}
    groups = {t.name: groups_of(t) for t in tasks}      # None for all but multiple-choice tasks
    size = image_size_of(loaded.model.visual)
    vals = {t.name: prepare_task(t, "val", size) for t in tasks}
    visual = copy.deepcopy(loaded.model.visual)         # the loaded model stays θ0
    if job.start:
        load_floating_state(visual, load_tensors(fetch(job.start, storage)), f"start weights {job.start}")
    history: list[dict] = []

    def val_accuracy(v: torch.nn.Module) -> float:
        return sum(accuracy(v, heads[n], s, device, groups=groups[n]) for n, s in vals.items()) / len(vals)

    cached = read_or_set_aside(job.path)
    if cached is None and resume is not None and _finished(Path(resume)):   # the last checkpoint is θ1 itself
        cached = load_tensors(Path(resume) / "visual.safetensors")
        save_tensors(cached, job.path, metadata={"job": job.key})
    if cached is not None:           # this exact job was fine-tuned before (another study or a lost trial)
        load_floating_state(visual, cached, f"cached θ1 {job.path}")
        metrics = {METRIC: val_accuracy(visual.to(device)), "step": recipe.steps, "cached": True, "resumed_from": 0}
        history.append(metrics)
        if report:
            report(metrics, lambda folder: save_tensors(visual_state(visual), Path(folder) / "visual.safetensors"))
        return TrialResult(job, metrics[METRIC], history, cached=True)

    trains = {t.name: train_split(t, recipe, size) for t in tasks}
    one = len(tasks) == 1
    name = tasks[0].name
    tuner = Finetuner(visual, heads[name] if one else heads, trains[name] if one else trains, recipe, device,
                      groups[name] if one else groups)
    resumed_from = tuner.step if resume is not None and tuner.restore(resume) else 0

    def checkpoint(t: Finetuner) -> None:
        done = t.step >= recipe.steps
        metrics = {METRIC: val_accuracy(t.visual), "loss": t.last_loss, "step": t.step, "cached": False,
                   "resumed_from": resumed_from}
        t.visual.train()
        history.append(metrics)
        if done:
            save_tensors(visual_state(t.visual), job.path, metadata={"job": job.key})
        if report:
            report(metrics, lambda folder: t.save(folder, trainer=not done))

    tuner.run(every=every or recipe.steps, callback=checkpoint, progress=progress,
              desc=f"fine-tuning {job.model.spec} on {'+'.join(job.tasks)}")
    return TrialResult(job, history[-1][METRIC], history, resumed_from=resumed_from)


def _finished(folder: Path) -> bool:
    """A checkpoint of a finished run: its weights, no trainer state left to resume."""
    return (folder / "visual.safetensors").is_file() and not (folder / "trainer.pt").is_file()
