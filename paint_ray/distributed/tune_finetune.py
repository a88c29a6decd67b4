"""Fine-tuning as Ray Tune trials: one trial per (model, patch task, hyperparameters).

Each trial reports patch validation accuracy every `eval_every` steps with a checkpoint (θ as safetensors,
optimizer/schedule/RNG state as a weights-only torch file), so a retried trial resumes from it. A finished
θ1 also lands in the content-addressed cache, so the same (model, task, recipe) in a later study is
not fine-tuned again.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..errors import PaintRayError
from ..finetune import FinetuneConfig

HYPERPARAMETERS = {f.name for f in fields(FinetuneConfig)}
METRIC = "patch_val_acc"


@dataclass(frozen=True)
class TrialResources:
    cpus: float = 1.0
    gpus: float = 0.0

    def as_dict(self) -> dict:
        return {"cpu": self.cpus, "gpu": self.gpus}


def _recipe(config: dict) -> FinetuneConfig:
    return FinetuneConfig(**{k: config[k] for k in HYPERPARAMETERS if k in config})


def _checkpoint(visual_state: dict, trainer_state: dict | None, metrics: dict):
    """A Tune checkpoint directory: visual.safetensors (+ trainer.pt while training is unfinished)."""
    from ray import tune

    from ..models.checkpoints import save_tensors
    # tune.report copies the folder into the run's storage, so the staging folder goes right after
    with tempfile.TemporaryDirectory(prefix="paint_ray_ckpt_") as tmp:
        save_tensors(visual_state, Path(tmp) / "visual.safetensors")
        if trainer_state is not None:
            torch.save(trainer_state, Path(tmp) / "trainer.pt")
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def finetune_trial(config: dict) -> None:
    """The Tune trainable. config: model, patch ("a" or joint "a+b"), data_root, eval_every, optional start
    (a safetensors file of image-encoder weights to fine-tune from, for sequential patching), + FinetuneConfig
    fields. A joint trial samples its tasks in proportion to their training sizes; each example is scored by
    its own task's frozen head."""
    import ray
    from ray import tune

    from .. import cache
    from ..data import image_size_of, prepare_task
    from ..finetune import Finetuner, accuracy, visual_state
    from ..models.checkpoints import load_tensors, save_tensors
    from ..models.registry import load_model
    from ..tasks import get_task

    node = ray.get_runtime_context().get_node_id()
    if config.get("tracking_uri"):
        os.environ["MLFLOW_TRACKING_URI"] = config["tracking_uri"]
    cpus = max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    torch.set_num_threads(cpus)
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    recipe = _recipe(config)
    loaded = load_model(config["model"], progress=False)
    tasks = [get_task(n, config.get("data_root")) for n in config["patch"].split("+")]
    heads = {t.name: cache.cached_head(loaded, t) for t in tasks}
    size = image_size_of(loaded.model.visual)
    vals = {t.name: prepare_task(t, "val", size) for t in tasks}
    start = config.get("start")
    if start:
        loaded.model.visual.load_state_dict(load_tensors(start), strict=False)
    mode = "joint" if len(tasks) > 1 else "single"
    final = cache.finetuned_path(loaded, tasks, recipe.as_dict(), mode + (f"|start:{config.get('start_key')}" if start else ""))

    def val_accuracy(visual) -> float:   # mean over the trial's tasks
        return sum(accuracy(visual, heads[n], v, device) for n, v in vals.items()) / len(vals)
    if final.is_file():   # this exact recipe was fine-tuned before (another study or a lost trial)
        visual = loaded.model.visual
        visual.load_state_dict(load_tensors(final), strict=False)
        acc = val_accuracy(visual)
        _checkpoint(visual_state(visual), None, {METRIC: acc, "step": recipe.steps, "cached": True,
                                                 "theta1_path": str(final), "node_id": node})
        return
    trains = {t.name: prepare_task(t, "train", size) for t in tasks}
    tuner = Finetuner(loaded.model.visual, heads if len(tasks) > 1 else heads[tasks[0].name],
                      trains if len(tasks) > 1 else trains[tasks[0].name], recipe, device)
    ckpt = tune.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "trainer.pt", map_location=device, weights_only=True)
            state["visual"] = load_tensors(Path(d) / "visual.safetensors", device)
            tuner.load_state_dict(state)

    def report(t: Finetuner) -> None:
        done = t.step >= recipe.steps
        metrics = {METRIC: val_accuracy(t.visual), "loss": t.last_loss, "step": t.step,
                   "cached": False, "theta1_path": str(final) if done else "", "node_id": node}
        if done:
            save_tensors(visual_state(t.visual), final)
        state = t.state_dict()
        _checkpoint(state.pop("visual"), None if done else state, metrics)

    every = int(config.get("eval_every") or max(1, recipe.steps // 4))
    tuner.run(every=every, callback=report)


def check_resources(resources: TrialResources) -> None:
    """One line, before any trial starts, when the cluster cannot ever place a trial."""
    import ray
    total = ray.cluster_resources()
    if resources.gpus > 0 and total.get("GPU", 0) == 0:
        raise PaintRayError(f"--gpus-per-trial {resources.gpus:g} requested but this Ray cluster has no GPUs; "
                            f"use --gpus-per-trial 0 to fine-tune on CPUs")
    if resources.cpus > total.get("CPU", 0):
        raise PaintRayError(f"--cpus-per-trial {resources.cpus:g} exceeds the cluster's {total.get('CPU', 0):g} CPUs")


def default_resources() -> TrialResources:
    """One GPU per trial where GPUs exist; otherwise one CPU per trial (trials run side by side)."""
    import ray
    return TrialResources(cpus=1.0, gpus=1.0 if ray.cluster_resources().get("GPU", 0) else 0.0)


def run_trials(param_space: dict, storage: str | Path, name: str, resources: TrialResources,
               asha: bool = False, max_failures: int = 2, num_samples: int = 1, verbose: int = 0):
    """Run (or resume) a Tune experiment; returns its ResultGrid. A rerun with the same name resumes."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    check_resources(resources)
    trainable = tune.with_resources(finetune_trial, resources.as_dict())
    storage = str(storage) if "://" in str(storage) else str(Path(storage).resolve())
    path = os.path.join(storage, name)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True, param_space=param_space)
    else:
        scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2) if asha else None
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler, num_samples=num_samples),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=verbose,
                                      failure_config=tune.FailureConfig(max_failures=max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    return tuner.fit()
