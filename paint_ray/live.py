"""Reuse a study's live evaluators from your own Python session: nothing reloaded, nothing re-decoded.

Sweeps run through the same pipeline as the study (rows keyed by content, stored in Parquet); only the
cells not yet stored are evaluated, and only heads and splits the evaluators lack are sent.

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights, training, evaluation, config, results, reporting, backends, distributed, pipeline
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import pandas as pd

from .config import SPLITS, StudyConfig, check_alphas, parse_alpha_spec
from .distributed.backend import RayBackend
from .distributed.cluster import connect as _connect
from .distributed.evaluators import inventories, shutdown_evaluators, study_names
from .errors import PaintRayError
from .evaluation.inventory import Inventory
from .evaluation.weight_set import WeightSet
from .paths import home

_current: str | None = None


def connect(study: str | None = None, address: str | None = "auto") -> str:
    """Join the running cluster (RAY_ADDRESS or a local `ray start` node) and pick a study: the one named,
    or the only one there. Returns the study's name."""
    global _current
    _connect(address)
    live = study_names()
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


def studies() -> pd.DataFrame:
    """One row per live evaluator of every study on this cluster: its study, name, node, device, budget and
    bytes held, and how long it has been idle (an evaluator ends itself after its study's --keep-evaluators)."""
    rows = []
    for name in study_names():
        for evaluator, inv in inventories(name).items():
            rows.append({"study": name, "evaluator": evaluator, "node": inv.node_id, "device": inv.device,
                         "idle_s": round(inv.idle_s, 1), "budget": inv.budget, "held": inv.used_bytes,
                         "models": ", ".join(sorted(m.ref.spec for m in inv.models.values()))})
    return pd.DataFrame(rows, columns=["study", "evaluator", "node", "device", "idle_s", "budget", "held", "models"])


def _study(study: str | None) -> str:
    if study is not None:
        return study
    if _current is None:
        return connect()
    return _current


def evaluators(study: str | None = None) -> dict[str, Inventory]:
    """Name -> what that evaluator holds (evaluation.inventory.Inventory: its node, budget and how full it is,
    models by digest with their weight sets, heads and splits, idle time). Asking keeps them warm."""
    return inventories(_study(study))


def sweep(model: str, alphas: Sequence[float] | str, tasks: Sequence[str] | None = None,
          weights: Sequence[str] | None = None, splits: Sequence[str] = SPLITS, data_root: str | None = None,
          out: str | None = None, study: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Evaluate θα for every held weight set of `model` (or those keyed `weights`) × `alphas` × `tasks`.

    `model` is a spec (as the study named it) or a weight digest. `alphas` may be 'auto[:Δα]': the adaptive
    search (best mean of patch and supported accuracy over the set's own patch tasks and the study's other
    held tasks). Rows go to `out`'s results store, by default the study's own under PAINT_RAY_HOME
    (live/STUDY): a sweep repeated, in this session or a later one, evaluates nothing already there."""
    from .pipeline import Pipeline
    study = _study(study)
    search = None
    if isinstance(alphas, str):
        alphas, search = parse_alpha_spec(alphas)
    else:
        alphas = check_alphas(alphas)
    held = list(evaluators(study).values())
    refs = {d: m.ref for inv in held for d, m in inv.models.items()}
    digests = [d for d, ref in refs.items() if model in (d, ref.spec)]
    if not digests:
        labels = sorted({ref.spec for ref in refs.values()})
        raise PaintRayError(f"no evaluator of study {study!r} holds model {model!r}; held: {', '.join(labels) or 'none'}")
    ref = refs[digests[0]]
    sets = {k: w for inv in held for k, w in inv.weights(ref.digest).items()}
    keys = list(weights) if weights is not None else sorted(sets)
    missing = sorted(set(keys) - set(sets))
    if missing:
        raise PaintRayError(f"no evaluator of study {study!r} holds weights {missing[0]!r} of {model}; "
                            f"held: {', '.join(sorted(sets)) or 'none'}")
    tasks = list(tasks) if tasks is not None else sorted({t for inv in held for t in inv.heads(ref.digest)})
    cfg = StudyConfig(name=f"{study}-live", models=[ref.spec], patch_tasks=[], supported=[], alphas=list(alphas),
                      out=str(out or home() / "live" / study), data_root=data_root, mlflow=False,
                      progress=progress, alpha_search=search)
    pipe = Pipeline.attached(cfg, RayBackend.attach(cfg, study), tasks)
    chosen = [WeightSet.from_held(ref, sets[k], tuple(tasks)) for k in keys]
    wrong = [ws.key for ws, k in zip(chosen, keys) if ws.key != k]
    if wrong:
        raise PaintRayError(f"weights {wrong[0]!r} are held without their identity; rerun the study")
    if search is None:
        pipe.sweep(chosen, alphas, splits)
    else:
        cfg.supported = [t for t in tasks if all(t not in ws.patch_tasks.split("+") for ws in chosen)]
        pipe.search(chosen)
    frame = pipe.store.read()
    if search is not None:
        alphas = sorted(set(frame.alpha))
    wanted = set(itertools.product(keys, alphas, tasks, splits))
    mine = [(w, a, t, s) in wanted for w, a, t, s in zip(frame.weights, frame.alpha, frame.eval_task, frame.split)]
    return frame[pd.Series(mine, index=frame.index, dtype=bool) & (frame.model_digest == ref.digest)
                 & (frame.precision == pipe.identity["precision"]) & (frame["device"] == pipe.identity["device"])
                 ].reset_index(drop=True)


def shutdown(study: str | None = None) -> int:
    """Kill the study's evaluators; returns how many were stopped."""
    return shutdown_evaluators(_study(study))


__all__ = ["connect", "studies", "evaluators", "sweep", "shutdown"]
