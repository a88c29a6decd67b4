"""Per-block coefficient schedules (`--schedule`), searched on validation for each patched model's weight
set: every round one batch of cells to the pipeline's sweep, proposals by the backend's searcher (Optuna in
process, Ray Tune's OptunaSearch on Ray), then each target's choice among every point evaluated is tested.

Works on a `pipeline.Pipeline` it is handed (its sweep, store, models and identity); it never imports the
driver, which calls it.

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights, training, evaluation, config, results
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .config import SCHEDULE_KINDS
from .evaluation.weight_set import WeightSet
from .models.registry import ModelRef
from .results.schedules import (ScheduleResult, ScheduleSpace, Search, choose, point_key, pool_table, seed_of,
                                targets_for, warm_points)
from .results.study import PatchedModel
from .weights.schedule import blocks_of, parse_schedule


@dataclass
class _ScheduleWork:
    """One patched model's per-block schedule search (search_schedules)."""
    pm: PatchedModel
    blocks: int                        # the image tower's blocks
    base: float                        # zero-shot supported accuracy on validation: the budgets' reference
    points_before: set                 # points evaluated before this search: what it costs is the rest
    search: Any = None                 # results.schedules.Search, or None for a given schedule
    given: list = field(default_factory=list)       # the given schedule, until its one round is proposed
    proposed: list = field(default_factory=list)    # this round's schedules
    chosen: dict = field(default_factory=dict)      # target name -> its choice


def n_blocks(pipeline: Any, ref: ModelRef) -> int:
    """The image tower's transformer blocks (0 for a tower without them)."""
    return blocks_of(list(pipeline.models[ref.spec].model.visual.state_dict()))


def schedule_pool(pipeline: Any, ws: WeightSet, patch_tasks: Sequence[str], n_blocks: int,
                  frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every point evaluated for `ws`, global α values and per-block schedules alike (results/schedules.py)."""
    frame = pipeline.store.read(schedules=True) if frame is None else frame
    keys = {pipeline.task_keys[t] for t in ws.eval_tasks}
    mine = frame[(frame.weights == ws.key) & (frame.model_digest == ws.model.digest)
                 & (frame.precision == pipeline.identity["precision"]) & (frame["device"] == pipeline.identity["device"])
                 & frame.task_key.isin(keys)]
    return pool_table(mine, patch_tasks, pipeline.cfg.supported, n_blocks)


def search_schedules(pipeline: Any, patched: Sequence[PatchedModel]) -> None:
    """Per-block schedules for each patched model's weight set (`--schedule`), searched on validation in
    rounds by the backend's searcher, every round one batch of cells for all of them; then each target's
    choice among everything evaluated is tested. Sets each model's `schedule` result."""
    cfg = pipeline.cfg
    targets = targets_for(cfg.rule, cfg.max_drop)
    frame = pipeline.store.read(schedules=True)
    items: list[_ScheduleWork] = []
    for pm in patched:
        ws = pm.weights
        n = n_blocks(pipeline, ws.model)
        table = schedule_pool(pipeline, ws, pm.patch.split("+"), n, frame)
        base = float(pm.zero_shot_point()["supported_val"])
        item = _ScheduleWork(pm, n, base, set(table["point"]))
        if cfg.schedule in SCHEDULE_KINDS:
            space = ScheduleSpace(cfg.schedule, n)
            searchers = {t.name: pipeline.backend.searcher(cfg.searcher, space.names,
                                                       seed_of(ws.key, space.kind, t.name, cfg.searcher),
                                                       warm_points(space, table, t, base)) for t in targets}
            item.search = Search(space, targets, base, searchers, cfg.schedule_trials, cfg.schedule_batch)
        else:
            item.given = [parse_schedule(cfg.schedule, n, ws.model.spec)]
        items.append(item)

    def pool(item: _ScheduleWork, frame: pd.DataFrame) -> pd.DataFrame:
        return schedule_pool(pipeline, item.pm.weights, item.pm.patch.split("+"), item.blocks, frame)

    rounds = 0
    while True:
        wanted: dict[WeightSet, list] = {}
        for item in items:
            item.proposed = item.search.propose() if item.search is not None else item.given
            item.given = []          # a given schedule is one round
            wanted.setdefault(item.pm.weights, []).extend(
                (sc.alpha, t, "val", sc.key) for sc in item.proposed for t in item.pm.weights.eval_tasks)
        wanted = {ws: cells for ws, cells in wanted.items() if cells}
        if not wanted:
            break
        pipeline.sweep_cells(wanted)
        rounds += 1
        frame = pipeline.store.read(schedules=True)
        for item in items:
            if item.search is not None and item.proposed:
                table, n = pool(item, frame).set_index("point"), item.blocks
                item.search.observe(lambda sc, table=table, n=n: tuple(
                    table.loc[point_key(sc.key, sc.alpha, n), ["patch_val", "supported_val"]].astype(float)))
    frame = pipeline.store.read(schedules=True)
    wanted = {}
    for item in items:
        table = pool(item, frame)
        item.chosen = {t.name: choose(table, t, item.base) for t in targets}
        tested = set(table.dropna(subset=["patch_test"])["point"])
        for c in item.chosen.values():
            if c.eligible and c.point not in tested:
                wanted.setdefault(item.pm.weights, []).extend(
                    (c.alpha, t, "test", c.schedule) for t in item.pm.weights.eval_tasks)
    pipeline.sweep_cells(wanted)
    frame = pipeline.store.read(schedules=True)
    for item in items:
        table = pool(item, frame)
        new = set(table["point"]) - item.points_before
        tests = {c.point for c in item.chosen.values() if c.eligible and c.point not in item.points_before}
        k = len(item.pm.weights.eval_tasks)
        item.pm.schedule = ScheduleResult(cfg.schedule if item.search is not None else "given", cfg.searcher,
                                          item.blocks, table, item.chosen, targets[0].name,
                                          cells={"val": k * len(new), "test": k * len(tests)}, rounds=rounds)
    pipeline.timings["schedule_rounds"] = pipeline.timings.get("schedule_rounds", 0) + rounds
