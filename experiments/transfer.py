"""RQ4 — broad transfer: patch on each task, evaluate on every other task.

The embedded world pairs related tasks: handwritten digits 0-4 and 5-9 (same scans, disjoint classes, as
the paper's MNIST <-> SVHN and EuroSAT <-> RESISC45), scikit-learn's scanned digits and the world's
pen-drawn digits (same classes, other domain), counting four-to-six and one-to-three (disjoint classes).
The matrix of accuracy changes goes to transfer_matrix.parquet, transfer.png and MLflow.

    python experiments/transfer.py [--out transfer_out]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paint_ray.cli.study import main_for  # noqa: E402
from paint_ray.training.recipe import PAPER_EPOCHS, PAPER_SEARCH_SPACE  # noqa: E402

# Not `digits` itself: it contains both halves, so "transfer" to it would partly be the patch task again.
EMBEDDED_TASKS = ["digits_0to4", "digits_5to9", "typed_digits", "counting", "counting_seen"]
PRESETS = {
    # toy-s: patching digits 0-4 lifts 5-9 there (+2.5 / +3.8 points, two seeds); on toy-m it costs 2.9 (README,
    # "The other studies")
    "embedded": dict(models=["toy-s"], patch_tasks=["digits_0to4", "digits_5to9", "counting"],
                     supported=["shapes", "colors"],
                     extra_tasks=EMBEDDED_TASKS, search_space={"lr": [3e-4], "steps": [200]}),
    "paper": dict(models=["ViT-B-32:openai"], patch_tasks=["eurosat", "resisc45", "mnist", "svhn"],
                  supported=["imagenet"], extra_tasks=["eurosat", "resisc45", "mnist", "svhn"],
                  search_space=PAPER_SEARCH_SPACE, epochs=PAPER_EPOCHS),   # the reference recipe (recipe.py)
}


def report(result, out: Path):
    from paint_ray.reporting.transfer import transfer_heatmap, transfer_matrix
    patched, tuned = transfer_matrix(result, "patched"), transfer_matrix(result, "fine_tuned")
    both = pd_concat(patched, tuned)
    both.to_parquet(out / "transfer_matrix.parquet")
    png = transfer_heatmap(patched, out / "transfer.png", "test accuracy change of the patched model "
                                                          "(chosen α) vs zero-shot")
    text = ("transfer (points of test accuracy vs zero-shot, patched at the chosen α):\n"
            + patched.round(1).to_string()
            + "\nfine-tuned (α = 1):\n" + tuned.round(1).to_string())
    for label, matrix in (("patched", patched), ("fine-tuned", tuned)):
        off = [(p, t, v) for p, row in matrix.iterrows() for t, v in row.items() if t != p.split(" · ")[-1]]
        if off:
            p, t, v = max(off, key=lambda x: x[2])
            text += f"\nlargest off-diagonal transfer ({label}): patching {p} -> {t} {v:+.1f} points"
    return text, [out / "transfer_matrix.parquet", png]


def pd_concat(patched, tuned):
    import pandas as pd
    return pd.concat({"patched": patched, "fine_tuned": tuned}, names=["model", "patch"]).reset_index()


if __name__ == "__main__":
    sys.exit(main_for("transfer", PRESETS, __doc__, report=report))
