"""A fine-tuning job run the way a Tune trial runs it, in its own process (tests/test_gpu_paths.py).

    python tests/resume_child.py crash FOLDER    # checkpoint into FOLDER after 4 steps, then die (exit 3)
    python tests/resume_child.py resume FOLDER   # resume from FOLDER and finish
    python tests/resume_child.py whole FOLDER    # the same job, never interrupted
"""
import os
import sys
from pathlib import Path

from paint_ray.caches.train import train_key
from paint_ray.models.registry import load_model
from paint_ray.tasks import get_task
from paint_ray.training.finetune import FinetuneConfig
from paint_ray.training.job import FinetuneJob, run_job

mode, folder = sys.argv[1], Path(sys.argv[2])
loaded = load_model("toy-xs", progress=False)
recipe = FinetuneConfig(lr=1e-3, steps=8, batch_size=16, warmup_steps=1)
job = FinetuneJob(loaded.ref, ("colors",), (train_key(get_task("colors"), recipe),), recipe)


def crash_after_first(metrics, save):
    folder.mkdir(parents=True, exist_ok=True)
    save(folder)
    os._exit(3)                      # as a killed trial: no cleanup, right after its checkpoint


if mode == "crash":
    run_job(job, loaded, "cpu", report=crash_after_first, every=4)
result = run_job(job, loaded, "cpu", every=4, resume=folder if mode == "resume" else None)
print("resumed_from", result.resumed_from)
