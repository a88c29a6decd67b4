"""Frontier summaries that hold up across seeds and CPUs, and what holds for every seed.

One α picked by the mean rule is a single point on a noisy curve: a different CPU or seed moves it, and with
it the supported drop. The paper's scaling claim is about the whole frontier, so each patched model is also
summarised by
- the patch gain at a fixed supported-drop budget (≤ 1 and ≤ 3 points): α chosen on validation by the
  max-drop rule, gain and drop then read on test;
- the frontier's area: the best test gain reachable within a drop budget, averaged over budgets 0–10
  points, on the frontier drawn through the α grid (accuracies are linear between grid points).
Across seeds these are given as mean and range, and `trends` says which orderings by model size hold in
every seed: the only ones a report should state.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .selection import select_alpha

BUDGETS = (1.0, 3.0)            # supported-drop budgets in points
AREA_MAX_DROP = 10.0            # the area averages the best gain over budgets 0..AREA_MAX_DROP points
MIN_STEP = 0.005                # a trend step smaller than half a point is a tie, not a rise (0.0 -> 0.1 is noise)
BUDGET_COLUMNS = tuple(f"{k}_at_{b:g}" for b in BUDGETS for k in ("alpha", "gain", "drop")) + ("area",)
# metrics summarised across seeds, with the direction a larger model should move them
METRICS = {"gain_at_1": ("gain at ≤1-point drop", +1), "gain_at_3": ("gain at ≤3-point drop", +1),
           "area": ("frontier area", +1), "gain": ("gain at the mean-rule α", +1),
           "drop": ("drop at the mean-rule α", -1)}


def budget_metrics(frontier: pd.DataFrame, zero_shot: pd.Series | None = None) -> dict[str, float]:
    """`alpha_at_B`, `gain_at_B`, `drop_at_B` for each budget B and `area` (fractions, like gain and drop),
    all measured from θ0: `zero_shot` (θ0's row) where the frontier's α = 0 is not θ0, else its α = 0 row.
    A budget no α of the frontier is within gives nan (none eligible), never α = 0's figures."""
    t = frontier.sort_values("alpha").reset_index(drop=True)
    zs = zero_shot if zero_shot is not None else t[t["alpha"] == 0.0].iloc[0]
    baseline = zs if zero_shot is not None else t
    out: dict[str, float] = {}
    for b in BUDGETS:
        sel = select_alpha(t, "max-drop", b, baseline=baseline)
        if not sel.eligible:
            out.update({f"alpha_at_{b:g}": np.nan, f"gain_at_{b:g}": np.nan, f"drop_at_{b:g}": np.nan})
            continue
        row = t[t["alpha"] == sel.alpha].iloc[0]
        out.update({f"alpha_at_{b:g}": sel.alpha, f"gain_at_{b:g}": row.patch_test - zs.patch_test,
                    f"drop_at_{b:g}": zs.supported_test - row.supported_test})
    out["area"] = frontier_area(t, zero_shot=zero_shot)
    return out


def frontier_area(frontier: pd.DataFrame, max_drop: float = AREA_MAX_DROP, split: str = "test",
                  zero_shot: pd.Series | None = None) -> float:
    """Mean over drop budgets d in [0, max_drop] points of the best gain whose supported drop is ≤ d, on the
    frontier through the α grid (linear between grid points), gains and drops from θ0 (`zero_shot`, else the
    α = 0 row). A fraction; 0 when nothing gains (θ0 itself: no gain at no drop). Points without `split`'s
    accuracies (an adaptive search tests a few α only) are left out."""
    t = frontier.dropna(subset=[f"patch_{split}"]).sort_values("alpha")
    if t[f"supported_{split}"].notna().any():        # a point without every supported task's figure has no drop
        t = t.dropna(subset=[f"supported_{split}"])
    zs = zero_shot if zero_shot is not None else t[t["alpha"] == 0.0].iloc[0]
    gain = (t[f"patch_{split}"] - zs[f"patch_{split}"]).to_numpy(float)
    supported = t[f"supported_{split}"].to_numpy(float)
    drop = (zs[f"supported_{split}"] - supported) * 100 if np.isfinite(supported).all() else np.zeros(len(t))
    budgets = np.linspace(0, max_drop, 1001)[:, None]          # B x 1 against S segments
    d0, g0, d1, g1 = drop[None, :-1], gain[None, :-1], drop[None, 1:], gain[None, 1:]
    ends = np.maximum(np.where(d0 <= budgets + 1e-9, g0, -np.inf), np.where(d1 <= budgets + 1e-9, g1, -np.inf))
    with np.errstate(divide="ignore", invalid="ignore"):    # the segment's point at the budget, where it crosses it
        cross = np.where((d0 - budgets) * (d1 - budgets) < 0, g0 + (budgets - d0) / (d1 - d0) * (g1 - g0), -np.inf)
    best = np.maximum(0.0, np.maximum(ends, cross).max(axis=1, initial=-np.inf))   # α = 0: no gain at no drop
    budgets = budgets[:, 0]
    return float(np.trapezoid(best, budgets) / max_drop)


def across_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, patch, mode): seeds, and mean / min / max of each of METRICS over the seeds, model order kept."""
    rows = []
    keys = ["model", "patch", "mode"]
    for key, g in table.groupby(keys, sort=False):
        row = dict(zip(keys, key), seeds=len(g))
        for m in METRICS:
            row.update({m: g[m].mean(), f"{m}_min": g[m].min(), f"{m}_max": g[m].max()})
        rows.append(row)
    return pd.DataFrame(rows)


def trends(table: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """For each patch task and metric: in how many seeds the metric moves the expected way with size by more
    than MIN_STEP, from each model to the next (`monotone`) and from the smallest to the largest (`ends`)."""
    rows = []
    for patch, g in table[table["mode"] == "single"].groupby("patch", sort=False):
        seeds = sorted(set(g["seed"]))
        for m, (label, sign) in METRICS.items():
            wide = g.pivot_table(index="seed", columns="model", values=m).reindex(columns=list(models))
            wide = wide.dropna(axis=1, how="all")
            if wide.shape[1] < 2:
                continue
            steps = sign * np.diff(wide.to_numpy(float), axis=1)          # > 0: the expected direction
            rows.append({"patch": patch, "metric": m, "label": label, "seeds": len(seeds),
                         "monotone": int((steps > MIN_STEP).all(axis=1).sum()),
                         "ends": int((steps.sum(axis=1) > MIN_STEP).sum()),
                         "models": " → ".join(wide.columns)})
    return pd.DataFrame(rows)


def _cell(s: pd.Series, m: str) -> str:
    if s["seeds"] == 1:
        return f"{100 * s[m]:+.1f}" if m != "drop" else f"{100 * s[m]:.1f}"
    return f"{100 * s[m]:.1f} [{100 * s[f'{m}_min']:.1f}, {100 * s[f'{m}_max']:.1f}]"


def format_summary(table: pd.DataFrame, models: Sequence[str]) -> str:
    """The across-seed table (points, mean [min, max]) and the size trends that hold in every seed."""
    summary = across_seeds(table)
    n = int(summary["seeds"].max()) if len(summary) else 0
    head = ["model", "patch"] + [METRICS[m][0] for m in METRICS]
    rows = [[r["model"], r["patch"] + ("" if r["mode"] == "single" else f" ({r['mode']})")]
            + [_cell(r, m) for m in METRICS] for _, r in summary.iterrows()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [f"over {n} fine-tuning seed{'s' if n != 1 else ''}: points of test accuracy, "
             + ("mean [min, max]" if n > 1 else "one seed") + f"; area = mean best gain over drop budgets "
             f"0–{AREA_MAX_DROP:g} points",
             "  ".join(h.rjust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    tr = trends(table, models)
    if len(tr):
        lines.append("\nwith model size (" + tr["models"].iloc[0] + f"; a change under {100 * MIN_STEP:g} points is no "
                     "change):")
        for _, r in tr.iterrows():
            way = "rises" if METRICS[r["metric"]][1] > 0 else "falls"
            if r["monotone"] == r["seeds"]:
                verdict = f"{way} at every step in every seed"
            elif r["ends"] == r["seeds"]:
                verdict = f"{way} from smallest to largest in every seed, not at every step ({r['monotone']} of {r['seeds']})"
            else:
                verdict = f"no trend holds in every seed ({way} from smallest to largest in {r['ends']} of {r['seeds']})"
            lines.append(f"  {r['patch']}: {r['label']} {verdict}")
    return "\n".join(lines)
