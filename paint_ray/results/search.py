"""Searching the α frontier instead of gridding it: validation cells in rounds chosen from the results so far.

A selection needs the frontier near a few points only, not everywhere. The first round is a coarse grid
(0, 0.1, …, 1: validation curves are noisy, and a search started from the anchors alone can settle on a
bump of noise), then each target is refined around it:

- under a drop budget B (the max-drop rule, and the ≤1 / ≤3-point budget views of robust.py), supported
  accuracy falls about monotonically with α, so the budget's boundary (the largest α whose supported drop is
  at most B) is bisected: about log2(1/Δα) rounds;
- the mean rule's optimum (the best mean of patch and supported accuracy) is found by golden-section search
  on the evaluated points, about log1.618(1/Δα) rounds.

Each round proposes, for every weight set at once, the α values its unresolved targets need next; the caller
evaluates them on validation as one batch of cells. The search stops when every target is bracketed to Δα.
Test is then needed only at the chosen α values and the coarse grid's points (its anchors 0 and 1 among them:
the frontier's area and plot are drawn through the same test points as a 0:1:0.1 grid's). The
α values are ordinary ones (rounded to 6 decimals), so rows are keyed exactly like grid rows and a grid run
and an adaptive run share the result cache.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from .robust import BUDGETS

GOLDEN = (math.sqrt(5) - 1) / 2            # 0.618…
COARSE = tuple(i / 10 for i in range(11))  # the first round


def _round(a: float) -> float:
    return round(min(1.0, max(0.0, float(a))), 6)


@dataclass(frozen=True)
class AlphaSearch:
    """What one weight set's search resolves: the rule's choice and the boundaries of the drop budgets."""
    rule: str = "mean"
    max_drop: float | None = None
    delta: float = 0.01
    budgets: Sequence[float] = field(default=BUDGETS)

    def _budgets(self) -> list[float]:
        extra = [self.max_drop] if self.rule == "max-drop" and self.max_drop is not None else []
        return sorted(set(self.budgets) | set(extra))

    def propose(self, frontier: pd.DataFrame, baseline: pd.DataFrame | None = None) -> list[float]:
        """α values to evaluate next on validation (empty once every target is resolved to Δα).

        `frontier` holds the evaluated points (alpha, patch_val, supported_val); `baseline`'s α = 0 row is what
        a drop is measured from (default: the frontier's own: a sequential set's α = 0 is not θ0)."""
        t = frontier.dropna(subset=["patch_val"]).sort_values("alpha")
        have = set(t["alpha"].round(6))
        if not set(COARSE) <= have:
            return sorted(set(COARSE) - have)
        wanted = set()
        alphas = t["alpha"].to_numpy(float)
        if t["supported_val"].notna().all():
            ref = baseline if baseline is not None else t
            base = float(ref.loc[ref["alpha"] == 0.0, "supported_val"].iloc[0])
            drop = (base - t["supported_val"].to_numpy(float)) * 100
            for b in self._budgets():
                ok = drop <= b + 1e-9
                if ok.all() or not ok.any():
                    continue                    # the whole range is inside (or outside) the budget: resolved
                lo = alphas[ok].max()
                above = alphas[(~ok) & (alphas > lo)]
                if len(above) and above.min() - lo > self.delta:
                    wanted.add(_round((lo + above.min()) / 2))
        if self.rule == "mean":
            score = t["patch_val"].to_numpy(float)
            if t["supported_val"].notna().all():
                score = (score + t["supported_val"].to_numpy(float)) / 2
            i = int(score.argmax())
            a, b = alphas[max(0, i - 1)], alphas[min(len(alphas) - 1, i + 1)]
            if b - a > self.delta:
                x = alphas[i]
                # the next point goes into the wider side of the bracket, at the golden section
                nxt = x + (1 - GOLDEN) * (b - x) if b - x >= x - a else x - (1 - GOLDEN) * (x - a)
                nxt = _round(nxt)
                if nxt not in have:
                    wanted.add(nxt)
                elif b - a > 2 * self.delta:    # rounding landed on a known point: halve the wider side instead
                    wanted.add(_round((x + b) / 2 if b - x >= x - a else (a + x) / 2))
        return sorted(wanted - have)

    def test_alphas(self, frontier: pd.DataFrame, chosen: Sequence[float]) -> list[float]:
        """Where test is needed: the chosen α values and the coarse grid's points evaluated on validation (the
        area of robust.py is a test figure: through these it is drawn as a 0:1:0.1 grid's is, plus the chosen
        points)."""
        t = frontier.dropna(subset=["patch_val"])
        have = set(t["alpha"].round(6))
        return sorted((set(COARSE) & have) | {_round(a) for a in chosen if a == a})      # nan: none eligible
