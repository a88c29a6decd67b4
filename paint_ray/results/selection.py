"""The accuracy frontier over α, α selection on validation splits, and the Pareto front.

Selection only ever reads validation columns; test accuracy is then read at the chosen α.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

RULES = ("mean", "max-drop")


def frontier_table(rows: pd.DataFrame, patch: Sequence[str], supported: Sequence[str]) -> pd.DataFrame:
    """One row per α: `{task}_{split}` accuracies, `patch_{split}` (mean over patch tasks) and
    `supported_{split}` (mean over supported tasks), plus a `pareto` flag on validation points."""
    wide = rows.pivot_table(index="alpha", columns=["eval_task", "split"], values="accuracy", aggfunc="mean")
    wide.columns = [f"{t}_{s}" for t, s in wide.columns]
    table = wide.sort_index().reset_index()
    for split in ("val", "test"):
        p_cols = [f"{t}_{split}" for t in patch if f"{t}_{split}" in table]
        s_cols = [f"{t}_{split}" for t in supported if f"{t}_{split}" in table]
        table[f"patch_{split}"] = table[p_cols].mean(axis=1) if p_cols else np.nan
        table[f"supported_{split}"] = table[s_cols].mean(axis=1) if s_cols else np.nan
    table["pareto"] = pareto_mask(table["patch_val"].to_numpy(), table["supported_val"].fillna(0).to_numpy())
    return table


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good on both axes and better on one."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dominated = ((x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None]) &
                 ((x[None, :] > x[:, None]) | (y[None, :] > y[:, None]))).any(axis=1)
    return ~dominated


@dataclass(frozen=True)
class Selection:
    alpha: float
    rule: str
    max_drop: float | None
    patch_val: float
    supported_val: float

    def describe(self) -> str:
        if self.rule == "mean":
            return "max mean(patch, supported) on val"
        return f"max patch on val with supported drop <= {self.max_drop:g} points"


def select_alpha(table: pd.DataFrame, rule: str = "mean", max_drop: float | None = None,
                 baseline: pd.DataFrame | None = None) -> Selection:
    """Choose α on validation. 'mean' (the paper's): maximise the mean of the patch accuracy and the mean
    supported accuracy. 'max-drop': the best patch accuracy whose mean supported drop from zero-shot
    (α = 0, read from `baseline` when `table` holds only candidates) is at most `max_drop` points.
    Ties go to the smaller α."""
    if rule not in RULES:
        from ..errors import unknown
        raise unknown("selection rule", rule, RULES)
    if max_drop is not None and not max_drop >= 0:          # nan would silently pick α = 0
        from ..errors import PaintRayError
        raise PaintRayError(f"max drop {max_drop!r} must be a number >= 0 (points of supported accuracy)")
    t = table.sort_values("alpha").reset_index(drop=True)
    has_supported = t["supported_val"].notna().all()
    supported = t["supported_val"] if has_supported else pd.Series(np.zeros(len(t)))
    if rule == "mean":
        score = (t["patch_val"] + supported) / 2 if has_supported else t["patch_val"]
        eligible = np.ones(len(t), bool)
    else:
        if max_drop is None:
            raise ValueError("rule 'max-drop' needs max_drop")
        ref = baseline if baseline is not None else t
        base = ref["supported_val"][ref["alpha"] == 0.0] if has_supported else pd.Series([0.0])
        base = float(base.iloc[0]) if len(base) else float(supported.iloc[0])
        # a small epsilon so a drop of exactly D points (after float round-off) is allowed
        eligible = ((base - supported) * 100 <= max_drop + 1e-9).to_numpy()
        score = t["patch_val"]
    score = np.where(eligible, score.to_numpy(), -np.inf)
    i = int(np.argmax(score))          # argmax returns the first maximum: the smaller α on ties
    return Selection(float(t["alpha"][i]), rule, max_drop, float(t["patch_val"][i]), float(supported[i]))
