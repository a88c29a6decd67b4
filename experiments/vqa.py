"""RQ5 case study — visual question answering: patch on questions about an image, answered by choosing
among answer phrases with the text tower as the head, then evaluate VQA and the supported tasks.

Every (question, answer) pair is a class whose prompt is the question followed by the answer; an example is
scored only against its own question's answers (the question is an input, like the image). The embedded
world asks the colour, shape or count of a named object in a generated scene (task `vqa`); the paper
preset reads VQA v2 from --data-root (task `vqav2`, multiple choice over the 10 most frequent train answers
of each question type; see paint_ray/tasks/paper/vqa.py).

    python experiments/vqa.py [--out vqa_out] [--local]
    python experiments/vqa.py --preset paper --data-root /data      # /data/vqa/: the official VQA v2 files
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paint_ray.cli.study import main_for  # noqa: E402
from paint_ray.training.recipe import PAPER_SEARCH_SPACE  # noqa: E402

PRESETS = {
    # toy-l: on toy-m the gain within a 3-point drop was +10.2 / +7.1 (two seeds), on toy-l +11.3 / +10.4
    # (README, "The other studies"). 400 steps: 114 answer classes need twice the other embedded studies'
    # 200 (at batch 64: +7.8 points against +3.2)
    "embedded": dict(models=["toy-l"], patch_tasks=["vqa"], supported=["shapes", "colors", "digits"],
                     search_space={"lr": [3e-4], "steps": [400]}),
    # the reference recipe (recipe.py); no published epochs for VQA, so its typical 2,000 steps
    "paper": dict(models=["ViT-B-32:openai"], patch_tasks=["vqav2"], supported=["imagenet"],
                  search_space=PAPER_SEARCH_SPACE),
}
# The paper's figure, from its RQ5 case studies (Ilharco et al., "Patching open-vocabulary models by
# interpolating weights", NeurIPS 2022, arXiv 2208.05592).
PAPER = "VQA +18 points with little ImageNet loss (PAINT, Ilharco et al., NeurIPS 2022, RQ5 case studies)"


def report(result, out: Path):
    t = result.table()
    cols = ["model", "patch", "alpha", "patch_zero_shot", "patch_fine_tuned", "patch_patched", "gain",
            "supported_zero_shot", "supported_patched", "drop",
            *(f"{s}_patched" for s in result.config.supported)]
    t[cols].to_parquet(out / "vqa_summary.parquet")
    lines = [f"{r.model}: {r.patch} {r.patch_zero_shot:.1%} -> {r.patch_patched:.1%} at α={r.alpha:g} "
             f"({100 * r.gain:+.1f} points; fine-tuned {r.patch_fine_tuned:.1%}); supported "
             f"{r.supported_zero_shot:.1%} -> {r.supported_patched:.1%}, drop {100 * r.drop:.1f} points"
             for r in t.itertuples()]
    return "VQA:\n" + "\n".join(lines) + f"\npaper: {PAPER}", [out / "vqa_summary.parquet"]


if __name__ == "__main__":
    sys.exit(main_for("vqa", PRESETS, __doc__, report=report))
