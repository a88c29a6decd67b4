"""Fine-tuning as Ray Tune trials: one trial per fine-tuning job (model, patch task(s), recipe, start).

Each trial reports patch validation accuracy every `eval_every` steps with a checkpoint (θ as safetensors,
optimizer/schedule/RNG state as a weights-only torch file), so a retried trial resumes from it. A finished
θ1 also lands in the content-addressed cache (backends.theta1_path(job key)), so the same job in a later
study is not fine-tuned again.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch

from ..config import TrialResources
from ..errors import PaintRayError

METRIC = "patch_val_acc"


def _quiet_checkpoints() -> None:
    """Tune logs 'Checkpoint successfully created at …' per report, which buries the progress bars."""
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


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
    """The Tune trainable. config["job"] is `FinetuneJob.as_config()`; a joint job samples its tasks in
    proportion to their training sizes, each example scored by its own task's frozen head."""
    import ray
    from ray import tune

    from .. import cache
    from ..backends import theta1_path
    from ..data import image_size_of, prepare_task
    from ..finetune import Finetuner, FinetuneConfig, accuracy, visual_state
    from ..interpolate import load_floating_state
    from ..models.checkpoints import load_tensors, save_tensors
    from ..models.registry import load_model
    from ..answer_groups import groups_of
    from ..tasks import get_task
    from ..weights_store import publish

    _quiet_checkpoints()
    job = config["job"]
    node = ray.get_runtime_context().get_node_id()
    cpus = max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    torch.set_num_threads(cpus)
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    recipe = FinetuneConfig(**job["recipe"])
    loaded = load_model(job["model"], progress=False)
    if loaded.digest != job["model_digest"]:
        raise PaintRayError(f"model {job['model']!r} on node {node[:8]} has weights {loaded.digest}, not the "
                            f"{job['model_digest']} the study loaded; give every node the same checkpoint")
    tasks = [get_task(n, job["data_root"]) for n in job["tasks"]]
    heads = {t.name: cache.cached_head(loaded, t) for t in tasks}
    groups = {t.name: groups_of(t) for t in tasks}     # multiple-choice tasks score within each question
    size = image_size_of(loaded.model.visual)
    vals = {t.name: prepare_task(t, "val", size) for t in tasks}
    visual = loaded.model.visual
    if job["start"]:
        load_floating_state(visual, load_tensors(job["start"]), f"start weights {job['start']}")
    final = theta1_path(job["key"])

    def val_accuracy(v) -> float:   # mean over the trial's tasks
        return sum(accuracy(v, heads[n], s, device, groups=groups[n]) for n, s in vals.items()) / len(vals)
    cached = cache.read_or_set_aside(final)
    if cached is not None:   # this exact job was fine-tuned before (another study or a lost trial)
        load_floating_state(visual, cached, f"cached θ1 {final}")
        publish(final, config["storage"])
        _checkpoint(visual_state(visual), None, {METRIC: val_accuracy(visual), "step": recipe.steps,
                                                 "cached": True, "node_id": node})
        return
    from ..train_cache import train_split
    trains = {t.name: train_split(t, recipe, size) for t in tasks}
    single = len(tasks) == 1
    tuner = Finetuner(visual, heads[tasks[0].name] if single else heads,
                      trains[tasks[0].name] if single else trains, recipe, device,
                      groups[tasks[0].name] if single else groups)
    resumed_from = 0
    ckpt = tune.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            if (Path(d) / "trainer.pt").is_file():
                state = torch.load(Path(d) / "trainer.pt", map_location=device, weights_only=True)
                state["visual"] = load_tensors(Path(d) / "visual.safetensors", device)
                tuner.load_state_dict(state)
                resumed_from = tuner.step

    def report(t: Finetuner) -> None:
        done = t.step >= recipe.steps
        metrics = {METRIC: val_accuracy(t.visual), "loss": t.last_loss, "step": t.step, "cached": False,
                   "resumed_from": resumed_from, "node_id": node}
        if done:
            save_tensors(visual_state(t.visual), final, metadata={"job": job["key"]})
            publish(final, config["storage"])       # evaluators on any node fetch it by name
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


def _progress_callback(total: int, enabled: bool):
    """One progress line for the whole fine-tuning phase (Tune's own reporter is off)."""
    from ray import tune
    from tqdm.auto import tqdm

    class Progress(tune.Callback):
        bar = None

        def setup(self, **info):
            self.bar = tqdm(total=total, desc="fine-tuning trials", disable=not enabled, leave=False)

        def on_trial_complete(self, iteration, trials, trial, **info):
            if self.bar is not None:
                self.bar.update(1)

        def on_experiment_end(self, trials, **info):
            if self.bar is not None:
                self.bar.close()

        def __getstate__(self):          # Tune pickles its callbacks with the experiment state; a bar can't be
            return {}
    return Progress()


def run_trials(jobs: list[dict], storage: str | Path, name: str, resources: TrialResources,
               asha: bool = False, max_failures: int = 2, progress: bool = True):
    """Run (or resume) a Tune experiment of one trial per job; returns its ResultGrid."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    _quiet_checkpoints()
    check_resources(resources)
    trainable = tune.with_resources(finetune_trial, resources.as_dict())
    storage = str(storage) if "://" in str(storage) else str(Path(storage).resolve())
    # the storage also holds the finished θ1s by name (weights_store.py): it is not part of a trial's identity
    param_space = {"job": tune.grid_search(jobs), "storage": storage}
    path = os.path.join(storage, name)
    callbacks = [_progress_callback(len(jobs), progress)]
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True, param_space=param_space)
    else:
        scheduler = ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2) if asha else None
        tuner = tune.Tuner(
            trainable, param_space=param_space,
            # CPU trials: a finished trial's worker runs the next one, saving a process start and torch import
            # (~5 s a trial). GPU trials get a fresh worker each: a reused one kept a multi-node test's two GPU
            # trials on one node while the other node's GPU sat idle.
            tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler,
                                        reuse_actors=not resources.gpus),
            run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
    return tuner.fit()
