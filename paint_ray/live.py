"""Reuse live evaluators from your own Python session: no weights reloaded, no data re-decoded.

    import paint_ray.live as live
    live.connect()                                   # joins the cluster the study ran on
    live.evaluators()                                # what each evaluator holds
    rows = live.sweep("toy-m", alphas=[0.55, 0.65])  # new α grid on held θ1s and tasks
    rows = live.sweep("toy-m", alphas=[0.6], tasks=["typed_digits"])   # another eval task (head + split sent once)
    live.shutdown()
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict

import pandas as pd
import ray

from .distributed.cluster import connect as _connect
from .distributed.evaluators import evaluator_names, get_evaluator, shutdown_evaluators
from .distributed.sweep import ModelPayload, run_units, stage, units_of
from .errors import PaintRayError
from .evaluator import Cell
from .results import ResultStore, cell_row, row_key


def connect(address: str | None = "auto") -> list[str]:
    """Join the running cluster (RAY_ADDRESS or a local `ray start` node); returns evaluator names."""
    _connect(address)
    return evaluator_names()


def evaluators() -> dict[str, dict]:
    """Name -> inventory (models, θ1 keys, heads, splits, load count) of every live evaluator."""
    names = evaluator_names()
    return dict(zip(names, ray.get([get_evaluator(n).inventory.remote() for n in names])))


def _handles_for(model: str) -> tuple[list, list[dict]]:
    names = evaluator_names()
    if not names:
        raise PaintRayError("no live paint_ray evaluators in this cluster; run a study first "
                            "(e.g. python experiments/scaling.py) on a cluster started with `ray start --head`")
    handles = [get_evaluator(n) for n in names]
    inventories = ray.get([h.inventory.remote() for h in handles])
    if not any(model in inv["models"] for inv in inventories):
        held = sorted({m for inv in inventories for m in inv["models"]})
        raise PaintRayError(f"no live evaluator holds model {model!r}; held: {', '.join(held) or 'none'}")
    return handles, inventories


def sweep(model: str, alphas: Sequence[float], tasks: Sequence[str] | None = None,
          weights: Sequence[str] | None = None, splits: Sequence[str] = ("val", "test"),
          data_root: str | None = None, out: str | None = None, study: str = "live",
          progress: bool = True) -> pd.DataFrame:
    """Evaluate θα for every held θ1 (or `weights`) x `alphas` x `tasks` on the live evaluators.

    Tasks the evaluators do not hold yet get their head and split sent once (from the driver's caches).
    With `out`, rows are appended to that results store (a rerun skips what is there)."""
    bad = [a for a in alphas if not 0.0 <= a <= 1.0]
    if bad:
        raise PaintRayError(f"alpha {bad[0]:g} is outside the allowed range [0, 1]")
    handles, inventories = _handles_for(model)
    held = [inv["models"].get(model, {}) for inv in inventories]
    held_weights = sorted({w for h in held for w in h.get("weights", [])})
    weights = list(weights) if weights is not None else held_weights
    missing_w = sorted(set(weights) - set(held_weights))
    if missing_w:
        raise PaintRayError(f"no live evaluator holds weights {missing_w[0]!r} of {model}; "
                            f"held: {', '.join(held_weights) or 'none'}")
    held_tasks = sorted({h_ for h in held for h_ in h.get("heads", [])})
    tasks = list(tasks) if tasks is not None else held_tasks
    new = [t for t in tasks if t not in held_tasks or
           any(f"{t}/{s}" not in h.get("splits", []) for h in held for s in splits)]
    owners = {}
    if new:
        owners = stage(handles, [_task_payload(model, new, splits, data_root)])
    for i, h in enumerate(held):
        for w in h.get("weights", []):
            owners.setdefault((model, w), i)
    cells = [Cell(w, float(a), t, s) for w, a, t, s in itertools.product(weights, alphas, tasks, splits)]
    base = {"study": study, "model": model, "pretrained": "", "patch_tasks": "", "mode": "single"}
    store = ResultStore(out) if out else None
    done = store.keys() if store else set()
    cells = [c for c in cells if row_key(cell_row(base, asdict(c))) not in done]
    rows: list[dict] = []

    def on_rows(_model: str, batch: list[dict]) -> None:
        batch = [cell_row(base, r) for r in batch]
        rows.extend(batch)
        if store:
            store.append(batch)

    run_units(handles, units_of({model: cells}, owners, len(handles)), on_rows, progress=progress)
    return pd.DataFrame(rows)


def _task_payload(model: str, tasks: Sequence[str], splits: Sequence[str], data_root: str | None) -> ModelPayload:
    """Heads and splits of new eval tasks for a model the evaluators already hold (no θ0 sent)."""
    from .models.registry import load_model
    from .study import add_task_data
    loaded = load_model(model, progress=False)
    return add_task_data(ModelPayload(model, loaded.model_cfg, {}, None), loaded, tasks, data_root, splits)


def shutdown() -> int:
    """Kill every live paint_ray evaluator; returns how many were stopped."""
    return shutdown_evaluators()
