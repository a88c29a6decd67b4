"""Reuse a study's live evaluators from your own Python session: nothing reloaded, nothing re-decoded.

Sweeps run through the same pipeline as the study (rows keyed by content, stored in Parquet); only the
cells not yet stored are evaluated, and only heads and splits the evaluators lack are sent.
"""
from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import ray

from ..backends import ModelRef, WeightSet
from ..config import SPLITS, StudyConfig, check_alphas
from ..errors import PaintRayError
from .backend import RayBackend
from .cluster import connect as _connect
from .evaluators import evaluator_names, get_evaluator, shutdown_evaluators, studies

_current: str | None = None


def connect(study: str | None = None, address: str | None = "auto") -> str:
    """Join the running cluster (RAY_ADDRESS or a local `ray start` node) and pick a study: the one named,
    or the only one there. Returns the study's name."""
    global _current
    _connect(address)
    live = studies()
    if study is None:
        if len(live) != 1:
            raise PaintRayError("no paint_ray study has live evaluators on this cluster; run one first (e.g. "
                                "python experiments/scaling.py) on a cluster started with `ray start --head`"
                                if not live else f"{len(live)} studies have live evaluators: {', '.join(live)}; "
                                f"name one: live.connect('{live[0]}')")
        study = live[0]
    elif study not in live:
        raise PaintRayError(f"no study {study!r} has live evaluators on this cluster; studies: "
                            f"{', '.join(live) or 'none'}")
    _current = study
    return study


def _study(study: str | None) -> str:
    if study is not None:
        return study
    if _current is None:
        return connect()
    return _current


def evaluators(study: str | None = None) -> dict[str, dict]:
    """Name -> inventory (models by digest with their spec, weight sets, heads, splits, load count)."""
    names = evaluator_names(_study(study))
    return dict(zip(names, ray.get([get_evaluator(n).inventory.remote() for n in names])))


def sweep(model: str, alphas: Sequence[float], tasks: Sequence[str] | None = None,
          weights: Sequence[str] | None = None, splits: Sequence[str] = SPLITS, data_root: str | None = None,
          out: str | None = None, study: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Evaluate θα for every held weight set of `model` (or those keyed `weights`) × `alphas` × `tasks`.

    `model` is a spec (as the study named it) or a weight digest. Rows go to `out`'s results store (a
    temporary one by default); a rerun into the same `out` evaluates nothing already there."""
    from ..pipeline import Pipeline
    study = _study(study)
    alphas = check_alphas(alphas)
    inventories = list(evaluators(study).values())
    held = {d: m for inv in inventories for d, m in inv["models"].items()}
    digests = [d for d, m in held.items() if model in (d, m["label"])]
    if not digests:
        labels = sorted({m["label"] for m in held.values()})
        raise PaintRayError(f"no evaluator of study {study!r} holds model {model!r}; held: {', '.join(labels) or 'none'}")
    model_digest = digests[0]
    meta = {w: m for inv in inventories for w, m in inv["models"].get(model_digest, {}).get("weight_meta", {}).items()}
    keys = list(weights) if weights is not None else sorted(meta)
    missing = sorted(set(keys) - set(meta))
    if missing:
        raise PaintRayError(f"no evaluator of study {study!r} holds weights {missing[0]!r} of {model}; "
                            f"held: {', '.join(sorted(meta)) or 'none'}")
    held_tasks = sorted({t for inv in inventories for t in inv["models"].get(model_digest, {}).get("heads", {})})
    tasks = list(tasks) if tasks is not None else held_tasks
    cfg = StudyConfig(name=f"{study}-live", models=[model], patch_tasks=[], supported=[], alphas=list(alphas),
                      out=out or tempfile.mkdtemp(prefix="paint_ray_live_"), data_root=data_root, mlflow=False,
                      progress=progress)
    backend = RayBackend.attach(cfg, study)
    backend.labels[model_digest] = held[model_digest]["label"]
    pipe = Pipeline.attached(cfg, backend, tasks)
    ref = ModelRef(held[model_digest]["label"], model_digest, "", "", 0)
    sets = [WeightSet(ref, Path(), meta[k]["theta1_key"], meta[k].get("patch_tasks", ""), meta[k].get("mode", ""),
                      tuple(tasks), Path() if meta[k].get("start_key") else None, meta[k].get("start_key"))
            for k in keys]
    wrong = [ws.key for ws, k in zip(sets, keys) if ws.key != k]
    if wrong:
        raise PaintRayError(f"weights {wrong[0]!r} are held without their identity; rerun the study")
    pipe.sweep(sets, alphas, splits)
    frame = pipe.store.read()
    wanted = set(itertools.product(keys, alphas, tasks, splits))
    mine = [(w, a, t, s) in wanted for w, a, t, s in zip(frame.weights, frame.alpha, frame.eval_task, frame.split)]
    return frame[pd.Series(mine, index=frame.index, dtype=bool) & (frame.model_digest == model_digest)
                 & (frame.precision == pipe.identity["precision"]) & (frame.device == pipe.identity["device"])
                 ].reset_index(drop=True)


def shutdown(study: str | None = None) -> int:
    """Kill the study's evaluators; returns how many were stopped."""
    return shutdown_evaluators(_study(study))


__all__ = ["connect", "studies", "evaluators", "sweep", "shutdown"]
