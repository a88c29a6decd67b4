"""A study on Ray: fine-tune every (model, patch task, hyperparameters) as Tune trials, sweep every
(model, trial, α, eval task) on evaluator actors, select α on validation, and summarise.

experiments/*.py are thin front-ends over `run_study`; the pieces it schedules are the Ray-free core.
"""
from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import ray

from . import cache
from .data import image_size_of, prepare_task
from .distributed.cluster import connect
from .distributed.evaluators import ensure_evaluators, evaluator_names, shutdown_evaluators
from .distributed.sweep import ModelPayload, run_units, stage, units_of
from .distributed.tune_finetune import METRIC, TrialResources, check_resources, default_resources, run_trials
from .errors import PaintRayError
from .evaluator import Cell
from .finetune import FinetuneConfig
from .models.checkpoints import load_tensors
from .models.registry import EMBEDDED, LoadedModel, ensure_embedded, load_model
from .results import ResultStore, cell_row, ensure_writable, row_key
from .selection import Selection, frontier_table, select_alpha
from .tasks import get_task

SPLITS = ("val", "test")


@dataclass
class StudyConfig:
    name: str
    models: list[str]
    patch_tasks: list[str]
    supported: list[str]
    alphas: list[float]
    out: str
    search_space: dict[str, list] = field(default_factory=lambda: {"lr": [3e-4], "steps": [200]})
    # evaluated on every patched model and reported, but not used to choose α (transfer, case studies)
    extra_tasks: list[str] = field(default_factory=list)
    data_root: str | None = None
    resources: TrialResources | None = None
    evaluators: int | None = None
    asha: bool = False
    rule: str = "mean"
    max_drop: float | None = None
    address: str | None = None
    tune_storage: str | None = None
    tracking_uri: str | None = None     # default: MLFLOW_TRACKING_URI, else sqlite in `out`
    register: bool = False              # also register each patched model in the MLflow model registry
    mlflow: bool = True
    progress: bool = True

    def validate(self) -> None:
        for t in [*self.patch_tasks, *self.supported, *self.extra_tasks]:
            get_task(t, self.data_root)
        both = set(self.patch_tasks) & set(self.supported)
        if both:
            raise PaintRayError(f"task {sorted(both)[0]!r} is both a patch task and supported; choose one role")
        bad = [a for a in self.alphas if not 0 <= a <= 1]
        if bad or not self.alphas:
            raise PaintRayError(f"alpha {bad[0]:g} is outside [0, 1]" if bad else "alpha grid is empty")
        unknown_hp = set(self.search_space) - {f for f in FinetuneConfig.__dataclass_fields__}
        if unknown_hp:
            raise PaintRayError(f"unknown hyperparameter {sorted(unknown_hp)[0]!r}; valid: "
                                f"{', '.join(FinetuneConfig.__dataclass_fields__)}")
        ensure_writable(self.out)

    def all_tasks(self) -> list[str]:
        return list(dict.fromkeys([*self.patch_tasks, *self.supported, *self.extra_tasks]))

    def eval_tasks(self, patch: str) -> list[str]:
        """What a model patched on `patch` is evaluated on: itself, the supported and the extra tasks."""
        return list(dict.fromkeys([patch, *self.supported, *self.extra_tasks]))


@dataclass
class PatchedModel:
    """One (model, patch task) after selection: the chosen trial, α and its frontier."""
    model: str
    pretrained: str
    patch: str
    trial: str
    config: dict
    frontier: pd.DataFrame
    selection: Selection
    drift: dict
    mode: str = "single"
    start: dict | None = field(default=None, repr=False)       # where α = 0 is, when not θ0 (sequential)
    coefficient_table: pd.DataFrame | None = field(default=None, repr=False)   # per-task coefficients

    def summary(self, supported: list[str], extra: list[str] = ()) -> dict:
        f = self.frontier.set_index("alpha")
        zs, ft, pa = f.loc[0.0], f.loc[1.0], f.loc[self.selection.alpha]
        row = {"model": self.model, "patch": self.patch, "trial": self.trial, "alpha": self.selection.alpha,
               "patch_zero_shot": zs.patch_test, "patch_fine_tuned": ft.patch_test, "patch_patched": pa.patch_test,
               "supported_zero_shot": zs.supported_test, "supported_fine_tuned": ft.supported_test,
               "supported_patched": pa.supported_test,
               "gain": pa.patch_test - zs.patch_test, "drop": zs.supported_test - pa.supported_test, **self.drift}
        for t in supported:
            row[f"{t}_patched"] = pa[f"{t}_test"]
        for t in extra:
            if f"{t}_test" in f.columns:
                row.update({f"{t}_zero_shot": zs[f"{t}_test"], f"{t}_fine_tuned": ft[f"{t}_test"],
                            f"{t}_patched": pa[f"{t}_test"]})
        return row


@dataclass
class StudyResult:
    config: StudyConfig
    patched: list[PatchedModel]
    trials: pd.DataFrame
    timings: dict
    models: dict[str, LoadedModel] = field(default_factory=dict, repr=False)
    thetas: dict[str, dict] = field(default_factory=dict, repr=False)         # trial key -> θ1 (image encoder)
    heads: dict[str, dict] = field(default_factory=dict, repr=False)          # model -> task -> head
    classnames: dict[str, tuple] = field(default_factory=dict, repr=False)
    run_ids: dict[str, str] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([p.summary(self.config.supported, self.config.extra_tasks) for p in self.patched])

    def selection_rule(self) -> str:
        return self.patched[0].selection.describe() if self.patched else self.config.rule


@dataclass(frozen=True)
class SweepEntry:
    """One set of weights of one model to sweep over α: its store keys and what to evaluate it on."""
    model: str
    key: str
    base: dict            # study, model, pretrained, patch_tasks, mode
    eval_tasks: list[str]


def sweep_entries(handles: list, owners: dict, store: ResultStore, entries: list[SweepEntry], alphas: list[float],
                  progress: bool = True, with_start: frozenset = frozenset()) -> None:
    """Evaluate every entry x α x eval task x split not yet in `store` on the actors, appending as units finish."""
    done = store.keys()
    cells_by_model: dict[str, list[Cell]] = {}
    bases = {}
    for e in entries:
        bases[(e.model, e.key)] = e.base
        for a, task, split in itertools.product(alphas, e.eval_tasks, SPLITS):
            c = Cell(e.key, a, task, split)
            if row_key(cell_row(e.base, asdict(c))) not in done:
                cells_by_model.setdefault(e.model, []).append(c)

    def on_rows(model_id: str, rows: list[dict]) -> None:
        store.append(cell_row(bases[(model_id, r["weights"])], r) for r in rows)

    run_units(handles, units_of(cells_by_model, owners, len(handles), with_start), on_rows, progress=progress)


def trial_key(model: str, patch: str, recipe: dict) -> str:
    return f"{patch}-{cache.digest([model, patch, recipe])[:8]}"


def _payload(loaded: LoadedModel, model_id: str, tasks: list[str], data_root: str | None) -> ModelPayload:
    visual = loaded.model.visual
    state = {k: v.detach().cpu().numpy() for k, v in visual.state_dict().items() if v.is_floating_point()}
    payload = ModelPayload(model_id, loaded.model_cfg, dict(getattr(visual, "preprocess_cfg", {}) or {}),
                           ray.put(state))
    return add_task_data(payload, loaded, tasks, data_root)


def add_task_data(payload: ModelPayload, loaded: LoadedModel, tasks, data_root: str | None,
                  splits=SPLITS) -> ModelPayload:
    """Put each task's head and prepared splits in the object store once, on `payload`."""
    size = image_size_of(loaded.model.visual)
    for name in tasks:
        task = get_task(name, data_root)
        payload.heads[name] = cache.cached_head(loaded, task).numpy()
        for split in splits:
            data = prepare_task(task, split, size)
            payload.splits[(name, split)] = (ray.put(data.images.numpy()), ray.put(data.labels.numpy()))
    return payload


def run_study(cfg: StudyConfig) -> StudyResult:
    cfg.validate()
    timings: dict[str, float] = {}
    t0 = time.time()
    uri = None
    if cfg.mlflow:
        from .tracking import check_tracking, tracking_uri
        uri = tracking_uri(cfg.out, cfg.tracking_uri)
        check_tracking(uri)                       # an unreachable server fails now, not after training
    resources = connect(cfg.address)
    trial_res = cfg.resources or default_resources()
    check_resources(trial_res)          # before any model is loaded or trained
    out = Path(cfg.out).resolve()
    store = ResultStore(out / "results")

    # 1. models (embedded ones are pretrained once, here, so no trial or actor races to do it)
    t = time.time()
    loaded: dict[str, LoadedModel] = {}
    for spec in cfg.models:
        if spec in EMBEDDED:
            ensure_embedded(spec, progress=cfg.progress)
        loaded[spec] = load_model(spec, progress=cfg.progress)
        for name in cfg.all_tasks():
            cache.cached_head(loaded[spec], get_task(name, cfg.data_root))
    timings["models_s"] = time.time() - t

    # 2. fine-tuning trials on Tune
    t = time.time()
    # largest image encoders first: their trials are the longest, so the last wave of trials is short
    by_size = sorted(cfg.models, key=lambda m: -sum(p.numel() for p in loaded[m].model.visual.parameters()))
    space = {"model": by_size, "patch": cfg.patch_tasks, **cfg.search_space}
    from ray import tune
    param_space = {k: tune.grid_search(list(v)) for k, v in space.items()}
    param_space["data_root"] = cfg.data_root
    param_space["tracking_uri"] = uri           # each trial's process logs, if at all, where the driver does
    if evaluator_names() and trial_res.gpus > 0 and \
            ray.available_resources().get("GPU", 0) < trial_res.gpus:
        print(f"releasing {shutdown_evaluators()} live evaluators so Tune can use their GPUs")
    storage = cfg.tune_storage or os.environ.get("PAINT_RAY_STORAGE") or out / "tune"
    grid = run_trials(param_space, storage, f"{cfg.name}-{cache.digest(space)}",
                      trial_res, asha=cfg.asha)
    trials = []
    for result in grid:
        if result.error or result.checkpoint is None:
            raise PaintRayError(f"fine-tuning trial {result.config.get('model')}/{result.config.get('patch')} "
                                f"failed after retries: {str(result.error).splitlines()[0] if result.error else 'no checkpoint'}")
        recipe = FinetuneConfig(**{k: result.config[k] for k in cfg.search_space}).as_dict()
        with result.checkpoint.as_directory() as d:
            state = load_tensors(Path(d) / "visual.safetensors")
        trials.append({"model": result.config["model"], "patch": result.config["patch"], "recipe": recipe,
                       "trial": trial_key(result.config["model"], result.config["patch"], recipe),
                       METRIC: result.metrics.get(METRIC), "state": state,
                       "history": _history(result),
                       "tune_trial_id": result.metrics.get("trial_id"), "node_id": result.metrics.get("node_id"),
                       "path": result.path})
    timings["tune_s"] = time.time() - t

    # 3. sweep on evaluator actors
    t = time.time()
    gpus = resources.get("GPU", 0)
    n = cfg.evaluators or (int(gpus) if gpus else max(1, min(int(resources.get("CPU", 1)), 8)))
    # On CPU-only clusters evaluators reserve no CPU: they idle between sweeps and must not starve Tune.
    handles = ensure_evaluators(n, cpus=0, gpus=1 if gpus else 0,
                                threads=max(1, int(resources.get("CPU", 1)) // n))
    tasks = cfg.all_tasks()
    alphas = sorted(set(cfg.alphas) | {0.0, 1.0})
    payloads, entries = [], []
    for spec in cfg.models:
        mine = [tr for tr in trials if tr["model"] == spec]
        payload = _payload(loaded[spec], spec, tasks, cfg.data_root)
        payload.weights = {tr["trial"]: ray.put({k: v.numpy() for k, v in tr["state"].items()}) for tr in mine}
        payloads.append(payload)
        entries += [SweepEntry(spec, tr["trial"], {"study": cfg.name, "model": spec,
                                                    "pretrained": loaded[spec].pretrained,
                                                    "patch_tasks": tr["patch"], "mode": "single"},
                               cfg.eval_tasks(tr["patch"])) for tr in mine]
    owners = stage(handles, payloads)
    sweep_entries(handles, owners, store, entries, alphas, progress=cfg.progress)
    timings["sweep_s"] = time.time() - t

    # 4. selection on validation, then drift of the chosen trial
    frame = store.read()
    frame = frame[frame.study == cfg.name]
    patched = []
    for spec, patch in itertools.product(cfg.models, cfg.patch_tasks):
        best = None
        for tr in (tr for tr in trials if tr["model"] == spec and tr["patch"] == patch):
            rows = frame[(frame.model == spec) & (frame.trial == tr["trial"]) & frame.alpha.isin(alphas)]
            table = frontier_table(rows, [patch], cfg.supported)
            sel = select_alpha(table, cfg.rule, cfg.max_drop)
            score = (sel.patch_val + sel.supported_val) / 2
            if best is None or score > best[0]:
                best = (score, tr, table, sel)
        _, tr, table, sel = best
        owner = handles[owners[(spec, tr["trial"])]]
        drift = ray.get(owner.drift.remote(spec, tr["trial"], [(t, "val") for t in tasks]))
        patched.append(PatchedModel(spec, loaded[spec].pretrained, patch, tr["trial"],
                                    {"tune_path": tr["path"], **tr["recipe"]}, table, sel, drift))
    trial_frame = pd.DataFrame([{k: v for k, v in tr.items() if k != "state"} for tr in trials])
    tasks_all = cfg.all_tasks()
    result = StudyResult(
        cfg, patched, trial_frame, timings, models=loaded, thetas={tr["trial"]: tr["state"] for tr in trials},
        heads={m: {t: cache.cached_head(loaded[m], get_task(t, cfg.data_root)) for t in tasks_all} for m in loaded},
        classnames={t: get_task(t, cfg.data_root).classnames for t in tasks_all})
    if uri:
        t = time.time()
        from .tracking import log_study
        result.run_ids = log_study(result, uri, register=cfg.register)
        timings["mlflow_s"] = time.time() - t
    timings["total_s"] = time.time() - t0
    return result


def _history(result) -> list[dict]:
    """Per-report metrics of a Tune trial (for its nested MLflow run)."""
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    cols = [c for c in ("step", METRIC, "loss") if c in frame.columns]
    return frame[cols].to_dict("records")
