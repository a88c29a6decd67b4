"""The paper preset's fine-tuning recipe: the reference code's settings and the authors' per-task epochs.

PAINT's reference code fine-tunes with AdamW (weight decay 0.1), batch 128, lr 1e-5, a 500-step linear
warm-up then cosine, gradient-norm clip 1.0, fp32, and RandomResizedCrop(scale 0.9–1.0, bicubic) on the
original image, shuffling the training set every epoch. The authors' follow-up code trains a fixed number
of epochs per task, about 2,000 iterations each at batch 128; `PAPER_EPOCHS` lists them. A task without a
listed figure (KITTI distance) trains `PAPER_FALLBACK_STEPS` iterations, the typical run.
"""
from __future__ import annotations

import math
from dataclasses import replace

from ..errors import PaintRayError
from .finetune import FinetuneConfig

# Epochs per patch task in the authors' follow-up code (ImageNet's is for fine-tuning on ImageNet itself).
PAPER_EPOCHS: dict[str, float] = {"cars": 35, "dtd": 76, "eurosat": 12, "gtsrb": 11, "mnist": 5, "resisc45": 15,
                                  "sun397": 14, "svhn": 4, "imagenet": 4}
PAPER_FALLBACK_STEPS = 2000

# The reference recipe as a study's search space (one point); `steps` applies where no epochs are listed.
PAPER_SEARCH_SPACE: dict[str, list] = {
    "lr": [1e-5], "batch_size": [128], "warmup_steps": [500], "weight_decay": [0.1], "grad_clip": [1.0],
    "steps": [PAPER_FALLBACK_STEPS], "augment": ["rrc"], "augment_shift": [0], "order": ["epochs"],
    "precision": ["tf32"],         # TF32 matmuls on Ampere+ GPUs (fp32 on CPUs): README, "The paper preset"
}


def steps_for_epochs(epochs: float, n_train: int, batch_size: int) -> int:
    """Iterations of `epochs` passes over n_train images: ceil(n_train / batch) batches per epoch (the last
    one partial, as a DataLoader without drop_last yields it), times epochs, rounded up."""
    return max(1, math.ceil(epochs * math.ceil(n_train / batch_size)))


def resolve(recipe: FinetuneConfig, task: str, n_train: int, epochs: dict[str, float]) -> FinetuneConfig:
    """The recipe with `steps` set from the task's epochs when `epochs` lists the task; unchanged otherwise.

    The resolved recipe records its epochs too, so both enter the fine-tuning job's key.
    """
    if task not in epochs:
        return recipe
    e = float(epochs[task])
    resolved = replace(recipe, steps=steps_for_epochs(e, n_train, recipe.batch_size), epochs=e)
    if resolved.steps <= resolved.warmup_steps:
        raise PaintRayError(f"{task}: {e:g} epochs of {n_train:,} training images at batch {recipe.batch_size} are "
                            f"{resolved.steps} steps, at or below the warm-up of {recipe.warmup_steps} steps; give "
                            f"--steps N to train N steps instead, or a smaller --warmup-steps")
    return resolved
