"""Schedules proposed by Ray Tune's own search algorithm: `OptunaSearch` with the sampler the study names.

The objective is computed by the study's live evaluators, as batches of cells sent by the pipeline (a round
of proposals is one batch), so Tune's searcher is driven through its `Searcher` interface, `suggest` and
`on_trial_complete`, rather than by a `Tuner`: a Tune trial per schedule would be a process that only waits
on the evaluators, and the result store would gain a writer per trial. The sampler and the seeded points are
those of the in-process searcher (results/schedules.py), so both propose the same schedules.
"""
from __future__ import annotations

from collections.abc import Sequence

from ray.tune.search.optuna import OptunaSearch

from ..results.schedules import METRIC, distributions, sampler


class TuneSearcher:
    """`results.schedules.Searcher` over a Ray Tune searcher."""

    def __init__(self, name: str, names: Sequence[str], seed: int, warm: Sequence[tuple[dict, float]] = ()):
        warm = list(warm)
        self.search = OptunaSearch(space=distributions(names), metric=METRIC, mode="max",
                                   sampler=sampler(name, seed, len(names), len(warm)),
                                   points_to_evaluate=[dict(p) for p, _ in warm] or None,
                                   evaluated_rewards=[float(v) for _, v in warm] or None)
        self.count = 0
        self.pending: list[str] = []

    def suggest(self, n: int) -> list[dict[str, float]]:
        self.pending = [f"schedule-{self.count + i}" for i in range(n)]
        self.count += n
        return [dict(self.search.suggest(t)) for t in self.pending]

    def observe(self, scores: list[float]) -> None:
        for trial, s in zip(self.pending, scores):
            self.search.on_trial_complete(trial, {METRIC: float(s)})
        self.pending = []


def tune_searcher(name: str, names: Sequence[str], seed: int, warm: Sequence[tuple[dict, float]] = ()) -> TuneSearcher:
    return TuneSearcher(name, names, seed, warm)
