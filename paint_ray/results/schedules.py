"""Per-block coefficient schedules searched on validation, and chosen among under the selection rules.

A schedule (weights/schedule.py) gives each image-tower block its own interpolation coefficient. Its space
is a family: `linear` (LiNeS's two-parameter depth schedule: block 0's and block L−1's coefficients) or
`free` (one coefficient per block), every coefficient in [0, 1]. The search runs in rounds, as the α search
does (search.py): each round, every target's searcher proposes `batch` schedules, the pipeline evaluates
them on validation as one batch of cells (schedule × eval task), and each searcher is told its proposals'
scores. A target is what a choice is made for:

- the mean rule: the best mean of patch and supported accuracy;
- a drop budget B (the max-drop rule, and the ≤1 / ≤3-point views of robust.py): the best patch accuracy
  whose supported drop from θ0 is at most B points. Its searcher sees patch accuracy where the drop is
  within B and −(points over B)/100 where it is not, so every point within the budget outranks every point
  outside it and the outside ones lead back to the boundary.

Every searcher starts from the global α points already evaluated (uniform schedules: the family contains
them), so a search is never worse on validation than the global α, and its cost is only the new cells.
Choices are then made, by each target's rule, among every point evaluated for the weight set: its global
α values and its schedules.

The searchers are Optuna samplers (`SEARCHERS`): here in process, and on Ray through Ray Tune's
`OptunaSearch` (distributed/searchers.py) with the same sampler, which proposes the same schedules given
the same results (a test holds them to it).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from ..config import SCHEDULE_KINDS, SEARCHERS
from ..errors import PaintRayError, unknown
from ..weights.schedule import Schedule, parse_groups
from .robust import BUDGETS
from .selection import frontier_table, rule_score

DECIMALS = 3            # proposals are rounded to 0.001: readable keys, and a rerun proposes the same ones
METRIC = "score"


@dataclass(frozen=True)
class ScheduleSpace:
    """The schedules of one family for a tower of `n_blocks` blocks, as named parameters in [0, 1]."""
    kind: str
    n_blocks: int

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise unknown("schedule family", self.kind, SCHEDULE_KINDS)

    @property
    def names(self) -> list[str]:
        return ["first", "last"] if self.kind == "linear" else [f"block{i}" for i in range(self.n_blocks)]

    def schedule(self, params: dict) -> Schedule:
        v = {k: round(min(1.0, max(0.0, float(params[k]))), DECIMALS) for k in self.names}
        if self.kind == "linear":
            return Schedule.linear(v["first"], v["last"], self.n_blocks)
        return Schedule(tuple(v[k] for k in self.names))

    def uniform(self, alpha: float) -> dict[str, float]:
        """The parameters of the global α (every block at α)."""
        return {k: float(alpha) for k in self.names}


@dataclass(frozen=True)
class Target:
    """What a choice is made for: a rule ('mean' or 'max-drop') and, for max-drop, its budget in points."""
    rule: str
    max_drop: float | None = None

    @property
    def name(self) -> str:
        return "mean" if self.rule == "mean" else f"drop<={self.max_drop:g}"

    def eligible(self, supported_val: float, base: float) -> bool:
        return self.rule == "mean" or not np.isfinite(supported_val) or \
            (base - supported_val) * 100 <= self.max_drop + 1e-9

    def score(self, patch_val: float, supported_val: float, base: float) -> float:
        """What this target's searcher maximises (see the module's docstring)."""
        if self.rule == "mean":
            return float(rule_score(patch_val, supported_val, "mean"))
        if self.eligible(supported_val, base):
            return float(patch_val)
        return -((base - supported_val) * 100 - self.max_drop) / 100


def targets_for(rule: str, max_drop: float | None, budgets: Sequence[float] = BUDGETS) -> list[Target]:
    """The study's rule, then each budget of the robust views (once each)."""
    out = [Target(rule, max_drop if rule == "max-drop" else None)]
    for b in budgets:
        if Target("max-drop", float(b)) not in out:
            out.append(Target("max-drop", float(b)))
    return out


class Searcher(Protocol):
    """Proposes parameter sets in rounds and learns from their scores (higher is better)."""

    def suggest(self, n: int) -> list[dict[str, float]]: ...
    def observe(self, scores: list[float]) -> None: ...       # for the last suggestions, in their order


def sampler(name: str, seed: int, n_params: int, n_warm: int = 0):
    """The Optuna sampler a searcher name stands for.

    tpe: multivariate TPE with the constant liar, so that a round's proposals spread out instead of
    repeating each other while their scores are pending; its first max(4, parameters) proposals after the
    `n_warm` seeded points are uniform draws (the seeded global α points all lie on the diagonal, and a
    density fitted to them alone would hardly leave it); random: uniform draws, the control."""
    import optuna
    if name not in SEARCHERS:
        raise unknown("searcher", name, SEARCHERS)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():          # multivariate and constant_liar are marked experimental
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=n_warm + max(4, n_params))


def distributions(names: Sequence[str]) -> dict:
    import optuna
    return {k: optuna.distributions.FloatDistribution(0.0, 1.0) for k in names}


class OptunaSearcher:
    """The in-process searcher (`--local`): an Optuna study driven by ask/tell, seeded with the points
    already evaluated. Ray Tune's OptunaSearch drives the same study the same way."""

    def __init__(self, name: str, names: Sequence[str], seed: int, warm: Sequence[tuple[dict, float]] = ()):
        import optuna
        warm = list(warm)
        self.dists = distributions(names)
        self.study = optuna.create_study(direction="maximize", sampler=sampler(name, seed, len(names), len(warm)))
        for params, value in warm:
            self.study.add_trial(optuna.trial.create_trial(params=dict(params), distributions=self.dists,
                                                           value=float(value)))
        self.pending: list = []

    def suggest(self, n: int) -> list[dict[str, float]]:
        self.pending = [self.study.ask(fixed_distributions=self.dists) for _ in range(n)]
        return [dict(t.params) for t in self.pending]

    def observe(self, scores: list[float]) -> None:
        for trial, s in zip(self.pending, scores):
            self.study.tell(trial, float(s))
        self.pending = []


def local_searcher(name: str, names: Sequence[str], seed: int, warm: Sequence[tuple[dict, float]] = ()) -> Searcher:
    return OptunaSearcher(name, names, seed, warm)


# ---- the pool of evaluated points ---------------------------------------------------------------
def point_key(schedule_key: str, alpha: float, n_blocks: int) -> str:
    """A point's identity among a weight set's evaluated points: its L + 2 group coefficients as text,
    for a global α as for a schedule (so the two are compared and chosen among alike)."""
    if schedule_key:
        return schedule_key
    return ",".join(f"{round(float(alpha), 6) + 0.0:g}" for _ in range(n_blocks + 2))


def pool_table(rows: pd.DataFrame, patch: Sequence[str], supported: Sequence[str], n_blocks: int) -> pd.DataFrame:
    """One row per evaluated point (global α or schedule) of one weight set: its `point` key, `alpha`,
    `schedule` ('' for a global α), `blocks` (its per-block coefficients as text) and the frontier's
    accuracy columns (frontier_table). Test columns are nan where only validation was evaluated."""
    if rows.empty:
        return pd.DataFrame(columns=["point", "alpha", "schedule", "blocks", "patch_val", "supported_val",
                                     "patch_test", "supported_test"])
    rows = rows.assign(point=[point_key(s, a, n_blocks) for s, a in zip(rows["schedule"], rows["alpha"])])
    table = frontier_table(rows, patch, supported, index="point")
    first = rows.drop_duplicates("point").set_index("point")
    table["alpha"] = table["point"].map(first["alpha"])
    table["schedule"] = table["point"].map(first["schedule"])
    table["blocks"] = [",".join(f"{c:g}" for c in parse_groups(p)[1:-1]) for p in table["point"]]
    for c in ("patch_val", "supported_val", "patch_test", "supported_test"):
        if c not in table:
            table[c] = np.nan
    return table


@dataclass(frozen=True)
class Choice:
    """A target's choice among the evaluated points, on validation; `point` None when none is eligible."""
    target: Target
    point: str | None
    alpha: float = math.nan
    schedule: str = ""
    blocks: str = ""
    patch_val: float = math.nan
    supported_val: float = math.nan
    score: float = -math.inf

    @property
    def eligible(self) -> bool:
        return self.point is not None


def choose(table: pd.DataFrame, target: Target, base: float) -> Choice:
    """The best validated point for `target`; ties go to the point nearest θ0 (the smallest mean coefficient),
    then to the first key."""
    t = table.dropna(subset=["patch_val"])
    if t.empty:
        return Choice(target, None)
    ok = np.array([target.eligible(s, base) for s in t["supported_val"]], bool)
    if not ok.any():
        return Choice(target, None)
    t = t[ok]
    score = np.array([rule_score(p, s, target.rule) for p, s in zip(t["patch_val"], t["supported_val"])])
    order = np.lexsort((t["point"].to_numpy(), t["alpha"].to_numpy(float), -score))
    r = t.iloc[order[0]]
    return Choice(target, r["point"], float(r["alpha"]), r["schedule"], r["blocks"], float(r["patch_val"]),
                  float(r["supported_val"]), float(score[order[0]]))


@dataclass
class ScheduleResult:
    """A weight set's schedule search: the pool of evaluated points, each target's choice, and the cost."""
    kind: str                        # linear, free, or 'given' for a schedule given on the command line
    searcher: str
    n_blocks: int
    table: pd.DataFrame              # pool_table
    choices: dict[str, Choice]       # target name -> choice
    rule: str                        # the study's target's name (what the patched model is formed with)
    cells: dict[str, int] = field(default_factory=dict)     # schedule cells asked for: val, test
    rounds: int = 0

    @property
    def chosen(self) -> Choice:
        return self.choices[self.rule]

    def metrics(self, zero_shot: pd.Series) -> dict:
        """Test gain and drop from θ0 at each choice: `schedule_gain`/`schedule_drop` for the study's rule,
        `schedule_gain_at_B`/`schedule_drop_at_B` for each budget (nan where none is eligible), the chosen
        schedules and the search's cost in cells."""
        by_point = self.table.set_index("point")
        out: dict = {"schedule_kind": self.kind, "schedule_searcher": self.searcher,
                     "schedule_cells": sum(self.cells.values()), "schedule_val_cells": self.cells.get("val", 0)}
        for name, c in self.choices.items():
            suffix = "" if name == self.rule else f"_at_{c.target.max_drop:g}"
            if name != self.rule and c.target.rule != "max-drop":
                continue
            row = by_point.loc[c.point] if c.eligible else None
            out[f"schedule_gain{suffix}"] = row["patch_test"] - zero_shot["patch_test"] if c.eligible else math.nan
            out[f"schedule_drop{suffix}"] = zero_shot["supported_test"] - row["supported_test"] if c.eligible \
                else math.nan
            out[f"schedule{suffix}"] = c.blocks if c.eligible else ""
        for b in BUDGETS:          # the rule's own target may be one of the budgets
            name = Target("max-drop", float(b)).name
            if name == self.rule and name in self.choices:
                out[f"schedule_gain_at_{b:g}"] = out["schedule_gain"]
                out[f"schedule_drop_at_{b:g}"] = out["schedule_drop"]
                out[f"schedule_at_{b:g}"] = out["schedule"]
        return out


# ---- the search -------------------------------------------------------------------------------
@dataclass
class Search:
    """One weight set's search state: its space, targets, θ0's supported validation accuracy, searchers."""
    space: ScheduleSpace
    targets: list[Target]
    base: float
    searchers: dict[str, Searcher]
    trials: int
    batch: int
    asked: dict[str, int] = field(default_factory=dict)
    proposals: dict[str, list[Schedule]] = field(default_factory=dict)

    def propose(self) -> list[Schedule]:
        """This round's schedules, over every target that has trials left."""
        self.proposals = {}
        for t in self.targets:
            left = self.trials - self.asked.get(t.name, 0)
            if left <= 0:
                continue
            n = min(self.batch, left)
            self.proposals[t.name] = [self.space.schedule(p) for p in self.searchers[t.name].suggest(n)]
            self.asked[t.name] = self.asked.get(t.name, 0) + n
        return [s for v in self.proposals.values() for s in v]

    def observe(self, val: Callable[[Schedule], tuple[float, float]]) -> None:
        """Tell each searcher its proposals' scores; `val(schedule)` gives (patch, supported) on validation."""
        for t in self.targets:
            if t.name in self.proposals:
                self.searchers[t.name].observe([t.score(*val(s), self.base) for s in self.proposals[t.name]])
        self.proposals = {}


def warm_points(space: ScheduleSpace, table: pd.DataFrame, target: Target, base: float) -> list[tuple[dict, float]]:
    """The global α points evaluated on validation, as this space's parameters and the target's scores."""
    t = table[(table["schedule"] == "") & table["patch_val"].notna()]
    return [(space.uniform(a), target.score(p, s, base))
            for a, p, s in zip(t["alpha"], t["patch_val"], t["supported_val"])]


def seed_of(*parts) -> int:
    from ..identity import digest
    return int(digest(list(parts), 8), 16)


def check_family(kind: str, n_blocks: int) -> None:
    if n_blocks < 2 and kind == "linear":
        raise PaintRayError(f"a linear depth schedule needs at least 2 image-tower blocks, the model has {n_blocks}")
