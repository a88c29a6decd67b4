"""RQ5 case study — typographic attacks: patch on attacked training images, evaluate on clean and
attacked test images and on the supported tasks.

The embedded world teaches its models to read (pretraining images carry words), so writing a wrong class
name on an image misleads them, as it misleads CLIP. The patch trains on shapes with half its training images
attacked (`shapes_attacked_mixed`; `--patch shapes_attacked` attacks all of them) and is scored on attacked
validation and test images; clean shapes is reported beside it.

    python experiments/typographic.py [--out typographic_out]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paint_ray.cli.study import main_for  # noqa: E402

PRESETS = {
    # half the training images clean (shapes_attacked_mixed): trained on attacked images only, the patch cost
    # clean shapes 11 points (85.4% -> 74.3%); mixed, clean shapes rise to 90.1% (README)
    "embedded": dict(models=["toy-m"], patch_tasks=["shapes_attacked_mixed"], supported=["colors", "digits"],
                     extra_tasks=["shapes"], search_space={"lr": [3e-4], "steps": [200]}),
}


def report(result, out: Path):
    t = result.table()
    # the patch task (attacked shapes) is reported as patch_*; clean shapes is an extra task
    cols = ["model", "alpha", "patch_zero_shot", "patch_patched", "shapes_zero_shot",
            "shapes_patched", "supported_zero_shot", "supported_patched", "drop"]
    t[cols].to_parquet(out / "typographic_summary.parquet")
    lines = [f"{r.model}: attacked shapes {r.patch_zero_shot:.1%} -> {r.patch_patched:.1%} "
             f"(clean shapes {r.shapes_zero_shot:.1%} -> {r.shapes_patched:.1%}; supported "
             f"{r.supported_zero_shot:.1%} -> {r.supported_patched:.1%}) at α={r.alpha:g}"
             for r in t.itertuples()]
    return "typographic attack:\n" + "\n".join(lines), [out / "typographic_summary.parquet"]


if __name__ == "__main__":
    sys.exit(main_for("typographic", PRESETS, __doc__, report=report))
