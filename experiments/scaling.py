"""RQ2 — does patching work better as models grow?

Embedded preset (default, offline, CPU): toy-s, toy-m, toy-l x patch task digits, supported shapes and
colors (`--patch digits,counting` adds counting, which no size patches within a 3-point budget; it has a study
of its own, experiments/counting.py). Paper preset: ViT-B-32, ViT-B-16, ViT-L-14 (openai) on the paper's patch
tasks with ImageNet as supported task (needs --data-root and the weights in the local open_clip cache),
fine-tuned with the reference recipe (paint_ray/recipe.py) and reported beside the published figures
(paint_ray/published.py).

    python experiments/scaling.py [--out scaling_out] [--preset embedded|paper]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from paint_ray.cli.study import main_for  # noqa: E402
from paint_ray.training.recipe import PAPER_EPOCHS, PAPER_SEARCH_SPACE  # noqa: E402

PRESETS = {
    # two fine-tuning seeds: every figure is reported as mean and range, and trends as the seeds agree.
    # α is searched (results/search.py): the budget views need α to 0.01 near their boundary, where a 0.1
    # grid step moves digits by about 6 points; 1.6x the images of the 0:1:0.1 grid, 0.18x 0:1:0.01's.
    # Digits only: counting cost 40% of the fine-tuning and half the sweep, showed no gain within 3 points at
    # any size in any run, and that time now goes to pretraining toy-s and toy-m longer (README, "Why 1,000
    # pretraining steps")
    "embedded": dict(models=["toy-s", "toy-m", "toy-l"], patch_tasks=["digits"],
                     supported=["shapes", "colors"], search_space={"lr": [3e-4], "steps": [200]}, seeds=[0, 1],
                     alphas="auto"),
    "paper": dict(models=["ViT-B-32:openai", "ViT-B-16:openai", "ViT-L-14:openai"],
                  patch_tasks=["cars", "dtd", "eurosat", "gtsrb", "kitti_distance", "mnist", "resisc45",
                               "sun397", "svhn"],
                  supported=["imagenet"],
                  search_space=PAPER_SEARCH_SPACE, epochs=PAPER_EPOCHS),   # the reference recipe (recipe.py)
}

if __name__ == "__main__":
    sys.exit(main_for("scaling", PRESETS, __doc__))
