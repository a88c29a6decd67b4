"""The accuracy frontier over α, α selection on validation splits, and the Pareto front.

Selection only ever reads validation columns; test accuracy is then read at the chosen α.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

RULES = ("mean", "max-drop")


def frontier_table(rows: pd.DataFrame, patch: Sequence[str], supported: Sequence[str],
                   index: str = "alpha") -> pd.DataFrame:
    """One row per α (or per value of `index`: a schedule's key): `{task}_{split}` accuracies, `patch_{split}`
    (mean over patch tasks) and `supported_{split}` (mean over supported tasks), plus a `pareto` flag on
    validation points.

    A mean is nan unless every one of its tasks was evaluated at that point, and a point missing any task on
    validation is left out: a store can hold some of a point's cells only (a task whose data changed since,
    a search stopped mid-round), and a mean over the tasks that happen to be there is another quantity."""
    wide = rows.pivot_table(index=index, columns=["eval_task", "split"], values="accuracy", aggfunc="mean")
    wide.columns = [f"{t}_{s}" for t, s in wide.columns]
    table = wide.sort_index().reset_index()
    for split in ("val", "test"):
        for kind, tasks in (("patch", patch), ("supported", supported)):
            cols = [f"{t}_{split}" for t in tasks]
            for c in cols:
                if c not in table:
                    table[c] = np.nan
            table[f"{kind}_{split}"] = table[cols].mean(axis=1, skipna=False) if cols else np.nan
    complete = table["patch_val"].notna() & (table["supported_val"].notna() if supported else True)
    table = table[complete].reset_index(drop=True)
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
    """The α chosen on validation, or none: under a drop budget no candidate may be within it (a sequential
    step whose start already dropped too much, per-task merges all over it). Then `eligible` is False,
    `alpha` and the accuracies are nan and `score` is −inf: a result to report, never an α to use."""
    alpha: float
    rule: str
    max_drop: float | None
    patch_val: float
    supported_val: float
    eligible: bool = True
    score: float = float("nan")      # the rule's own score at α: what weight sets are ranked by

    def __post_init__(self):
        if np.isnan(self.score):         # not given: the rule's score of the chosen point (−inf for none)
            score = rule_score(self.patch_val, self.supported_val, self.rule) if self.eligible else -np.inf
            object.__setattr__(self, "score", float(score))

    def describe(self) -> str:
        if self.rule == "mean":
            return "max mean(patch, supported) on val"
        text = f"max patch on val with supported drop <= {self.max_drop:g} points"
        return text if self.eligible else f"{text}: none eligible"


def rule_score(patch_val: float, supported_val: float, rule: str) -> float:
    """What a rule maximises: the mean of patch and supported accuracy ('mean'), the patch accuracy among
    the eligible points ('max-drop'). One function, so weight sets are ranked by the rule that chose their α."""
    if rule == "mean":
        return (patch_val + supported_val) / 2 if np.isfinite(supported_val) else patch_val
    return patch_val


def zero_shot_row(frontiers: Sequence[pd.DataFrame], patch: Sequence[str], supported: Sequence[str]) -> pd.Series:
    """θ0's accuracies from the α = 0 rows of frontiers whose α = 0 is θ0 (single-task ones), as one row
    with the `patch_{split}` and `supported_{split}` means over `patch` and `supported`: the zero-shot
    reference of a frontier whose own α = 0 is not θ0 (a sequential step starts from the model patched so far)."""
    values: dict[str, float] = {}
    for f in frontiers:
        row = f[f["alpha"] == 0.0].iloc[0]
        values.update({c: row[c] for c in f.columns if c.endswith(("_val", "_test"))
                       and not c.startswith(("patch_", "supported_"))})
    out = pd.Series(values, dtype=float)
    for split in ("val", "test"):
        p_cols = [f"{t}_{split}" for t in patch if f"{t}_{split}" in out]
        s_cols = [f"{t}_{split}" for t in supported if f"{t}_{split}" in out]
        out[f"patch_{split}"] = out[p_cols].mean() if p_cols else np.nan
        out[f"supported_{split}"] = out[s_cols].mean() if s_cols else np.nan
    out["alpha"] = 0.0
    return out


def select_alpha(table: pd.DataFrame, rule: str = "mean", max_drop: float | None = None,
                 baseline: pd.DataFrame | pd.Series | None = None) -> Selection:
    """Choose α on validation. 'mean' (the paper's): maximise the mean of the patch accuracy and the mean
    supported accuracy. 'max-drop': the best patch accuracy whose mean supported drop from zero-shot
    is at most `max_drop` points; zero-shot is θ0: `baseline` as a row (`zero_shot_row`), or the α = 0 row
    of `baseline` as a table, else of `table`. Ties go to the smaller α. When no α is within the budget the
    Selection says so (`eligible` False) instead of choosing one."""
    if rule not in RULES:
        from ..errors import unknown
        raise unknown("selection rule", rule, RULES)
    if max_drop is not None and not max_drop >= 0:          # nan would make every α ineligible
        from ..errors import PaintRayError
        raise PaintRayError(f"max drop {max_drop!r} must be a number >= 0 (points of supported accuracy)")
    t = table.sort_values("alpha").reset_index(drop=True)
    has_supported = t["supported_val"].notna().all()
    supported = t["supported_val"] if has_supported else pd.Series(np.zeros(len(t)))
    if rule == "mean":
        score = pd.Series([rule_score(p, s, rule) for p, s in zip(t["patch_val"], supported)]) if has_supported \
            else t["patch_val"]
        eligible = np.ones(len(t), bool)
    else:
        if max_drop is None:
            raise ValueError("rule 'max-drop' needs max_drop")
        if not has_supported:
            base = 0.0
        elif isinstance(baseline, pd.Series):
            base = float(baseline["supported_val"])
        else:
            ref = baseline if baseline is not None else t
            zero = ref["supported_val"][ref["alpha"] == 0.0]
            base = float(zero.iloc[0]) if len(zero) else float(supported.iloc[0])
        # a small epsilon so a drop of exactly D points (after float round-off) is allowed
        eligible = ((base - supported) * 100 <= max_drop + 1e-9).to_numpy()
        score = t["patch_val"]
    if not eligible.any():
        nan = float("nan")
        return Selection(nan, rule, max_drop, nan, nan, eligible=False, score=-np.inf)
    score = np.where(eligible, score.to_numpy(float), -np.inf)
    i = int(np.argmax(score))          # argmax returns the first maximum: the smaller α on ties
    return Selection(float(t["alpha"][i]), rule, max_drop, float(t["patch_val"][i]), float(supported[i]),
                     score=float(score[i]))


def best_of(selections: Sequence[Selection]) -> int:
    """The index of the weight set to keep: the highest score of the rule that chose each α (the first on
    ties); a set with no eligible α ranks below every set with one. Index 0 when none has one."""
    scores = [s.score if s.eligible else -np.inf for s in selections]
    return int(np.argmax(scores))
