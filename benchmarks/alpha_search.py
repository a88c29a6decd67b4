"""Adaptive α against the grid 0:1:0.01, over the embedded scaling study's weight sets and both selection rules.

    python benchmarks/alpha_search.py [--models toy-s,toy-m,toy-l] [--seeds 0,1] [--delta 0.01]

Fine-tunes (or reads from the cache: run the README's main command first and nothing is trained) every
(model, patch task, seed) of the embedded scaling preset, then evaluates each weight set twice, into two
result stores of their own: on the grid 0:1:0.01, and by the adaptive search (results/search.py), under the
mean rule and under the max-drop rule at 1 point. It prints cells and images evaluated by each, whether the
chosen α agrees within Δα, and how much the test gain at the chosen α differs. `ratio:` last is images
evaluated by the search ÷ by the grid (goal: ≤ 0.25 with the same selection everywhere).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paint_ray.backends.local import LocalBackend  # noqa: E402
from paint_ray.config import StudyConfig, parse_alphas  # noqa: E402
from paint_ray.pipeline import Pipeline  # noqa: E402
from paint_ray.results.selection import select_alpha  # noqa: E402


def run(cfg: StudyConfig, sets_from: Pipeline | None = None):
    pipe = Pipeline(cfg, LocalBackend(None, None)).prepare()
    jobs = [j for spec in cfg.models for patch in cfg.patch_tasks for j in pipe.jobs(spec, [patch])]
    sets = [pipe.weight_set(tr) for tr in pipe.finetune(jobs)]
    alphas = pipe.evaluate_sets(sets)
    frame = pipe.store.read()
    chosen = {}
    for ws in sets:
        table = pipe.frontier(ws, [ws.patch_tasks], alphas, frame)
        sel = select_alpha(table, cfg.rule, cfg.max_drop)
        row = table[table.alpha == sel.alpha].iloc[0]
        zero = table[table.alpha == 0.0].iloc[0]
        n_val = int(frame[(frame.weights == ws.key) & (frame.split == "val")]["n"].max())
        chosen[ws.key] = (ws.trial, sel.alpha, row.patch_test - zero.patch_test, sel.score, n_val)
    return chosen, len(frame), int(frame["n"].sum()), pipe.timings.get("search_rounds", 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="toy-s,toy-m,toy-l")
    p.add_argument("--patch", default="digits,counting")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--delta", type=float, default=0.01)
    args = p.parse_args()
    base = dict(name="alpha-search", models=args.models.split(","), patch_tasks=args.patch.split(","),
                supported=["shapes", "colors"], search_space={"lr": [3e-4], "steps": [200]},
                seeds=[int(s) for s in args.seeds.split(",")], mlflow=False, progress=False)
    totals = {"grid": [0, 0], "search": [0, 0]}
    misses = []
    with tempfile.TemporaryDirectory() as tmp:
        for rule, max_drop in (("mean", None), ("max-drop", 1.0)):
            # one grid store for both rules (the second finds every cell there); each is charged the whole grid
            grid, g_cells, g_images, _ = run(StudyConfig(**base, out=f"{tmp}/grid", alphas=parse_alphas("0:1:0.01"),
                                                         rule=rule, max_drop=max_drop))
            search, s_cells, s_images, rounds = run(StudyConfig(**base, out=f"{tmp}/search-{rule}", alphas=[],
                                                                alpha_search=args.delta, rule=rule, max_drop=max_drop))
            totals["grid"][0] += g_cells
            totals["grid"][1] += g_images
            totals["search"][0] += s_cells
            totals["search"][1] += s_images
            agree = 0
            for key, (trial, a_grid, gain_grid, score_grid, n) in grid.items():
                _, a_search, gain_search, score_search, _ = search[key]
                ok = abs(a_grid - a_search) <= args.delta + 1e-9
                agree += ok
                if not ok:
                    # one standard error of a validation accuracy near the score: what the split can tell apart
                    se = (max(1e-9, score_grid * (1 - score_grid)) / n) ** 0.5
                    misses.append(f"{rule} {trial}: grid α {a_grid:g}, search α {a_search:g}; validation score "
                                  f"{100 * score_grid:.2f} vs {100 * score_search:.2f} ({(score_grid - score_search) / se:.1f} "
                                  f"standard errors); test gain {100 * gain_grid:+.1f} vs {100 * gain_search:+.1f}")
            diffs = [abs(grid[k][2] - search[k][2]) * 100 for k in grid]
            print(f"{rule}{'' if max_drop is None else f' ≤{max_drop:g}'}: grid {g_cells:,} cells / {g_images:,} images; "
                  f"search {s_cells:,} cells / {s_images:,} images in {rounds} rounds "
                  f"({s_images / g_images:.3f}); chosen α within Δα in {agree} of {len(grid)} weight sets; "
                  f"test gain differs by {max(diffs):.1f} points at most")
    for m in misses:
        print("  miss:", m)
    print(f"ratio: {totals['search'][1] / totals['grid'][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
