"""RQ5 case study — counting: patch counting four to six (numbers the pretraining captions never use for
counts), then evaluate on the unseen counts, the seen counts one to three, and the supported tasks. Both
counting tasks are scored against all six counts, so the patched model must still tell four from two. Two
fine-tuning seeds by default (--seeds).

    python experiments/counting.py [--out counting_out]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paint_ray.cli.study import main_for  # noqa: E402

PRESETS = {
    "embedded": dict(models=["toy-m"], patch_tasks=["counting"], supported=["shapes", "colors"],
                     extra_tasks=["counting_seen"], search_space={"lr": [3e-4], "steps": [200]}, seeds=[0, 1]),
}


def report(result, out: Path):
    t = result.table()
    cols = ["model", "seed", "alpha", "patch_zero_shot", "patch_patched", "counting_seen_zero_shot",
            "counting_seen_patched", "supported_zero_shot", "supported_patched", "drop"]
    t[cols].to_parquet(out / "counting_summary.parquet")
    lines = [f"{r.model} seed {r.seed}: unseen counts 4-6 {r.patch_zero_shot:.1%} -> {r.patch_patched:.1%}; seen counts 1-3 "
             f"{r.counting_seen_zero_shot:.1%} -> {r.counting_seen_patched:.1%}; supported "
             f"{r.supported_zero_shot:.1%} -> {r.supported_patched:.1%} at α={r.alpha:g}" for r in t.itertuples()]
    return "counting:\n" + "\n".join(lines), [out / "counting_summary.parquet"]


if __name__ == "__main__":
    sys.exit(main_for("counting", PRESETS, __doc__, report=report))
