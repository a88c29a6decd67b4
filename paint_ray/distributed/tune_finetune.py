"""Fine-tuning as Ray Tune trials: one trial per fine-tuning job (model, patch task(s), recipe, start).

A trial is `training.run_job` (the same code the in-process backend runs) with Tune's checkpoints: it
reports patch validation accuracy every `eval_every` steps with a checkpoint (θ as safetensors, optimizer,
schedule and RNG state as a weights-only torch file loaded back to the CPU first), so a retried trial
resumes from it on any device. A finished θ1 also lands in the node's content-addressed cache
(training.job.theta1_path) and the study's storage, so the same job in a later study is not fine-tuned again.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..config import TrialResources
from ..errors import PaintRayError
from ..training.job import METRIC


def _quiet_checkpoints() -> None:
    """Tune logs 'Checkpoint successfully created at …' per report, which buries the progress bars."""
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def finetune_trial(config: dict) -> None:
    """The Tune trainable: `training.run_job` with Tune's checkpoints. config["job"] is `FinetuneJob.as_config()`.

    Every report carries a checkpoint (θ, and the trainer's state while unfinished); a retried trial gets
    the last one back from Tune and resumes from its step. The finished θ1 is published to the study's
    storage, where evaluators on any node fetch it by name."""
    import ray
    from ray import tune

    from ..devices import resolve
    from ..faults import fire_once
    from ..models.registry import load_verified
    from ..training.job import FinetuneJob, run_job
    from ..storage import publish

    _quiet_checkpoints()
    job = FinetuneJob.from_config(config["job"])
    node = ray.get_runtime_context().get_node_id()
    cpus = max(1, int(tune.get_context().get_trial_resources().required_resources.get("CPU", 1)))
    torch.set_num_threads(cpus)
    device = resolve("cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu")
    storage = config["storage"]
    loaded = load_verified(job.model.spec, job.model.digest, f"node {node[:8]}", storage)

    def report(metrics: dict, save) -> None:
        done = metrics["step"] >= job.recipe.steps
        if done:
            publish(job.path, storage)              # evaluators on any node fetch it by name
        with tempfile.TemporaryDirectory(prefix="paint_ray_ckpt_") as tmp:
            save(Path(tmp))
            tune.report({**metrics, "node_id": node}, checkpoint=tune.Checkpoint.from_directory(tmp))
        if not done:
            fire_once("trial-exit-after-checkpoint", job.key)

    ckpt = tune.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="paint_ray_resume_") as resume:
        if ckpt:
            with ckpt.as_directory() as d:          # copied out: Tune may clean its folder while we train
                shutil.copytree(d, resume, dirs_exist_ok=True)
        every = int(config.get("eval_every") or max(1, job.recipe.steps // 4))
        run_job(job, loaded, device, storage=storage, report=report, every=every, resume=resume if ckpt else None)


def check_resources(resources: TrialResources, capacity) -> None:
    """One line, before any trial starts, when the cluster's node types can never place a trial."""
    if resources.gpus > 0 and capacity.most("GPU") == 0:
        raise PaintRayError(f"--gpus-per-trial {resources.gpus:g} requested but this Ray cluster has no GPUs"
                            + (" and none of its node types adds any" if capacity.autoscales else "")
                            + "; use --gpus-per-trial 0 to fine-tune on CPUs")
    if resources.gpus > capacity.per_node("GPU"):
        raise PaintRayError(f"--gpus-per-trial {resources.gpus:g} exceeds the {capacity.per_node('GPU'):g} GPU(s) of "
                            f"the largest node; a trial runs on one node")
    if resources.cpus > capacity.per_node("CPU"):
        raise PaintRayError(f"--cpus-per-trial {resources.cpus:g} exceeds the {capacity.per_node('CPU'):g} CPUs of "
                            f"the largest node; a trial runs on one node")


def default_resources(capacity) -> TrialResources:
    """One GPU per trial where the cluster has or can add GPUs; otherwise one CPU per trial (side by side)."""
    return TrialResources(cpus=1.0, gpus=1.0 if capacity.most("GPU") else 0.0)


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
    # The study prints one progress bar for its trials: Tune's own start table, TensorBoard hint and
    # snapshot-frequency warning (each checkpoint forces one, by design here) would read as noise.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")     # the legacy reporter honours verbose=0
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = tune.with_resources(finetune_trial, resources.as_dict())
    storage = str(storage) if "://" in str(storage) else str(Path(storage).resolve())
    # the storage also holds the finished θ1s by name (storage.py): it is not part of a trial's identity
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
