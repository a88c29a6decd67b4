"""Multi-task patching (RQ3): joint, sequential and parallel modes next to one specialised model per task.

- joint: one Tune trial fine-tunes on the union of the patch tasks (tasks sampled in proportion to their
  training sizes, each example scored by its own task's frozen head), then α is swept once.
- sequential: patch task 1 (its specialised model, α chosen on validation), fine-tune task 2 starting
  from that patched model, sweep α between the two, choose on validation of tasks 1..2 + supported, ...
- parallel: merge the specialised task vectors θᵢ − θ0 with a combiner (merging.py: average, task
  arithmetic, TIES) and sweep the shared coefficient; `per_task` instead searches one coefficient per task.
Every mode chooses on validation of all its patch tasks plus the supported tasks.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import ray

from . import cache
from .distributed.evaluators import evaluator_names, get_evaluator
from .distributed.sweep import ModelPayload, stage
from .distributed.tune_finetune import run_trials
from .errors import PaintRayError, unknown
from .interpolate import interpolate_
from .merging import COMBINERS, as_theta, merge_task_vectors, task_vectors
from .models.checkpoints import load_tensors, save_tensors
from .paths import home
from .results import ResultStore
from .selection import frontier_table, select_alpha
from .study import PatchedModel, StudyConfig, StudyResult, SweepEntry, run_study, sweep_entries

MODES = ("joint", "sequential", "parallel")
MAX_COMBINATIONS = 512          # per-task search: every combination is a model held by each evaluator


@dataclass
class MultitaskConfig:
    study: StudyConfig                       # patch_tasks: the tasks patched together (at least two)
    modes: list[str] = field(default_factory=lambda: list(MODES))
    combiner: str = "ties"
    per_task: bool = False                   # parallel: one coefficient per task instead of a shared one
    density: float = 0.2
    coefficients: list[float] | None = None  # per_task: evaluate these (one per task) instead of searching

    def validate(self) -> None:
        for m in self.modes:
            if m not in MODES:
                raise unknown("mode", m, MODES)
        if self.combiner not in COMBINERS:
            raise unknown("combiner", self.combiner, COMBINERS)
        if len(self.study.patch_tasks) < 2:
            raise PaintRayError(f"multi-task modes need at least 2 patch tasks, got "
                                f"{','.join(self.study.patch_tasks) or 'none'}; use experiments/scaling.py "
                                f"for a single task")
        if len(self.study.models) != 1:
            raise PaintRayError(f"a multi-task study patches one model at a time, got {len(self.study.models)}")
        if not 0.0 < self.density <= 1.0:
            raise PaintRayError(f"--density {self.density:g} must be in (0, 1]")
        n = len(self.study.patch_tasks)
        if self.coefficients is not None:
            if not self.per_task:
                raise PaintRayError("--coefficients needs --per-task (a shared coefficient is swept over --alphas)")
            if len(self.coefficients) != n:
                raise PaintRayError(f"--coefficients has {len(self.coefficients)} values for {n} patch tasks "
                                    f"({','.join(self.study.patch_tasks)}); give exactly {n}")
        elif self.per_task and "parallel" in self.modes:
            combos = len([a for a in self.study.alphas if a > 0]) ** n
            if combos > MAX_COMBINATIONS:
                raise PaintRayError(f"--per-task would search {combos} coefficient combinations "
                                    f"({n} tasks); the limit is {MAX_COMBINATIONS}: use a coarser --alphas "
                                    f"or give --coefficients")


def _lerp_state(start: dict, end: dict, alpha: float) -> dict:
    names = list(end)
    out = [start[n].clone() for n in names]
    interpolate_(out, [start[n] for n in names], [end[n] for n in names], alpha)
    return dict(zip(names, out))


def run_multitask(mt: MultitaskConfig) -> tuple[StudyResult, pd.DataFrame]:
    """The specialised study, then each mode; returns (a StudyResult of every patched model, the table)."""
    mt.validate()
    cfg = mt.study
    t0 = time.time()
    # 1. one specialised patched model per task (also starts the evaluators, stages θ0, heads and splits)
    special = run_study(replace(cfg, mlflow=False))
    spec = cfg.models[0]
    loaded = special.models[spec]
    theta0 = {k: v.detach().cpu().clone() for k, v in loaded.model.visual.state_dict().items() if v.is_floating_point()}
    handles = [get_evaluator(n) for n in evaluator_names()]
    store = ResultStore(Path(cfg.out) / "results")
    alphas = sorted(set(cfg.alphas) | {0.0, 1.0})
    patch, joined = cfg.patch_tasks, "+".join(cfg.patch_tasks)
    eval_tasks = cfg.all_tasks()
    by_task = {pm.patch: pm for pm in special.patched}
    patched: list[PatchedModel] = list(special.patched)
    thetas, trials_rows = dict(special.thetas), []

    def base(mode: str) -> dict:
        return {"study": cfg.name, "model": spec, "pretrained": loaded.pretrained, "patch_tasks": joined, "mode": mode}

    def sweep(mode: str, weights: dict[str, dict], start: dict | None = None, grid: list[float] = alphas) -> None:
        refs = {k: ray.put({n: v.numpy() for n, v in w.items()}) for k, w in weights.items()}
        start_refs = {k: ray.put({n: v.numpy() for n, v in start.items()}) for k in weights} if start else {}
        owners = stage(handles, [ModelPayload(spec, loaded.model_cfg, {}, None, weights=refs, starts=start_refs)])
        entries = [SweepEntry(spec, k, base(mode), eval_tasks) for k in weights]
        sweep_entries(handles, owners, store, entries, grid, progress=cfg.progress,
                      with_start=frozenset((spec, k) for k in start_refs))

    def select(mode: str, key: str, patch_tasks: list[str], trial_cfg: dict, start: dict | None = None):
        frame = store.read()
        rows = frame[(frame.study == cfg.name) & (frame["mode"] == mode) & (frame.trial == key)
                     & frame.alpha.isin(alphas)]
        table = frontier_table(rows, patch_tasks, cfg.supported)
        sel = select_alpha(table, cfg.rule, cfg.max_drop)
        return PatchedModel(spec, loaded.pretrained, "+".join(patch_tasks), key, dict(trial_cfg), table, sel,
                            {"cka": float("nan"), "weight_distance": float("nan")}, mode=mode, start=start)

    def tune(patch_spec: str, extra: dict, name: str) -> tuple[str, dict]:
        space = {"model": [spec], "patch": [patch_spec], **cfg.search_space}
        from ray import tune as rtune
        param_space = {k: rtune.grid_search(list(v)) for k, v in space.items()}
        param_space.update(data_root=cfg.data_root, tracking_uri=special.config.tracking_uri, **extra)
        grid = run_trials(param_space, cfg.tune_storage or Path(cfg.out).resolve() / "tune",
                          f"{cfg.name}-{name}-{cache.digest([space, extra])}", cfg.resources or special_resources(),
                          asha=cfg.asha)
        best = max(grid, key=lambda r: r.metrics.get("patch_val_acc", -1))
        if best.error or best.checkpoint is None:
            raise PaintRayError(f"{name} fine-tuning failed: {str(best.error).splitlines()[0] if best.error else 'no checkpoint'}")
        with best.checkpoint.as_directory() as d:
            state = load_tensors(Path(d) / "visual.safetensors")
        recipe = {k: best.config[k] for k in cfg.search_space}
        key = f"{name}-{cache.digest([spec, patch_spec, recipe, extra.get('start_key')])[:8]}"
        trials_rows.append({"model": spec, "patch": joined, "trial": key, "recipe": recipe, "path": best.path,
                            "history": [], "mode": name})
        return key, state

    if "joint" in mt.modes:
        key, state = tune(joined, {}, "joint")
        thetas[key] = state
        sweep("joint", {key: state})
        patched.append(select("joint", key, patch, cfg.search_space))

    if "sequential" in mt.modes:
        first = by_task[patch[0]]
        current = _lerp_state(theta0, special.thetas[first.trial], first.selection.alpha)
        for k, task in enumerate(patch[1:], start=2):
            start_key = cache.digest({n: float(v.double().sum()) for n, v in current.items()})
            start_path = home() / "sequential" / f"{start_key}.safetensors"
            if not start_path.is_file():
                save_tensors(current, start_path)
            key, state = tune(task, {"start": str(start_path), "start_key": start_key}, f"sequential{k}")
            thetas[key] = state
            sweep("sequential", {key: state}, start=current)
            pm = select("sequential", key, patch[:k], {"first_alpha": first.selection.alpha}, start=current)
            current = _lerp_state(current, state, pm.selection.alpha)
            if k == len(patch):
                patched.append(pm)

    if "parallel" in mt.modes:
        thetas_i = [special.thetas[by_task[t].trial] for t in patch]
        names = list(theta0)
        taus = task_vectors([theta0[n] for n in names], [[th[n] for n in names] for th in thetas_i])
        if not mt.per_task:
            merged = merge_task_vectors(taus, mt.combiner, None, mt.density)
            key = f"parallel-{mt.combiner}"
            thetas[key] = dict(zip(names, as_theta([theta0[n] for n in names], merged)))
            sweep("parallel", {key: thetas[key]})
            patched.append(select("parallel", key, patch, {"combiner": mt.combiner, "density": mt.density}))
        else:
            grid = [a for a in cfg.alphas if a > 0]
            combos = [tuple(mt.coefficients)] if mt.coefficients else itertools.product(grid, repeat=len(patch))
            weights, coefficients = {}, {}
            for coefs in combos:
                merged = merge_task_vectors(taus, mt.combiner, list(coefs), mt.density)
                key = f"parallel-{mt.combiner}-" + "_".join(f"{c:g}" for c in coefs)   # "_": coefficients may be < 0
                coefficients[key] = ",".join(f"{c:g}" for c in coefs)
                weights[key] = dict(zip(names, as_theta([theta0[n] for n in names], merged)))
            sweep("parallel", weights, grid=[1.0])
            patched.append(_best_coefficients(store, cfg, spec, loaded, joined, patch, weights, coefficients, mt,
                                              thetas))

    result = replace(special, patched=patched, thetas=thetas,
                     trials=pd.concat([special.trials, pd.DataFrame(trials_rows)], ignore_index=True))
    result.timings = {**special.timings, "total_s": time.time() - t0}
    if cfg.mlflow:
        from .tracking import check_tracking, log_study, tracking_uri
        uri = tracking_uri(cfg.out, cfg.tracking_uri)
        check_tracking(uri)
        result.run_ids = log_study(result, uri, register=cfg.register)
    return result, multitask_table(result, patch, by_task)


def special_resources():
    from .distributed.tune_finetune import default_resources
    return default_resources()


def _best_coefficients(store, cfg, spec, loaded, joined, patch, weights, coefficients, mt, thetas) -> PatchedModel:
    """Per-task coefficients: every combination evaluated at α = 1; the best on validation wins."""
    everything = store.read()
    frame = everything[(everything.study == cfg.name) & (everything["mode"] == "parallel")
                       & everything.trial.isin(list(weights))]
    best = None
    table_rows = []
    for key in weights:
        rows = frame[frame.trial == key]
        if rows.empty:
            continue
        t = frontier_table(rows.assign(alpha=1.0), patch, cfg.supported)
        sel = select_alpha(t, cfg.rule, cfg.max_drop)
        score = (sel.patch_val + sel.supported_val) / 2
        table_rows.append({"trial": key, "score": score, **t.iloc[0].to_dict()})
        if best is None or score > best[0]:
            best = (score, key, t, sel)
    _, key, table, sel = best
    thetas[key] = weights[key]       # the chosen merge is this patched model's θ1 (saved to MLflow at α = 1)
    # zero-shot rows: the per-task sweep runs only at α = 1, and θ0's accuracy is the same for every trial
    zero = everything[(everything.study == cfg.name) & (everything.model == spec) & (everything.alpha == 0.0)]
    zero = zero.drop_duplicates(["eval_task", "split"])
    full = pd.concat([frontier_table(zero, patch, cfg.supported), table]).drop_duplicates("alpha").reset_index(drop=True)
    full["pareto"] = True
    return PatchedModel(spec, loaded.pretrained, joined, key,
                        {"combiner": mt.combiner, "coefficients": coefficients[key]},
                        full, sel, {"cka": float("nan"), "weight_distance": float("nan")}, mode="parallel",
                        coefficient_table=pd.DataFrame(table_rows))


def multitask_table(result: StudyResult, patch: list[str], by_task: dict) -> pd.DataFrame:
    """Test accuracy per patch task, their average, supported accuracy and the gap to the specialised models."""
    special = {t: by_task[t].frontier.set_index("alpha").loc[by_task[t].selection.alpha, f"{t}_test"] for t in patch}
    rows = [{"mode": "specialised", **{t: special[t] for t in patch}, "average": sum(special.values()) / len(patch),
             "supported": float("nan"), "alpha": float("nan"), "coefficients": ""}]
    for pm in result.patched:
        mode = pm.mode
        if mode == "single":
            continue
        f = pm.frontier.set_index("alpha").loc[pm.selection.alpha]
        accs = {t: f[f"{t}_test"] for t in patch}
        per_task = pm.coefficient_table is not None
        rows.append({"mode": mode if mode != "parallel" else f"parallel ({pm.config.get('combiner')})",
                     **accs, "average": sum(accs.values()) / len(patch), "supported": f["supported_test"],
                     "alpha": float("nan") if per_task else pm.selection.alpha,
                     "coefficients": pm.config["coefficients"] if per_task else ""})
    table = pd.DataFrame(rows)
    table["gap"] = table["average"].iloc[0] - table["average"]
    return table
