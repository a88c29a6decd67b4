"""The one PAINT pipeline: models → fine-tuning → sweep of weight sets × α × tasks → selection → record.

Written once; where it runs is a backend (backends/local.py in this process, distributed/backend.py on
Ray). Multi-task modes (multitask.py) are producers of fine-tuning jobs and weight sets for the same
sweep and selection. Every reuse is by content (identity.py): result rows by model digest, weight-set
key, task data, eval precision and device; θ1s by their job key; heads by model and prompts.

May import: errors, identity, paths, storage, devices, tasks, data, models, caches, weights, training, evaluation, config, results, reporting, backends, distributed, schedule_search
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from .backends import Backend
from .training.job import FinetuneJob, TrialResult
from .models.registry import ModelRef
from .caches.train import train_key
from .models.checkpoints import load_tensors, save_tensors
from .paths import home
from .storage import fetch, file_digest, publish, relative_name
from .evaluation.weight_set import WeightSet, set_key
from .config import SPLITS, StudyConfig, anchored
from .caches.eval import task_key
from .identity import SCHEMA_VERSION, digest
from .models.registry import EMBEDDED, LoadedModel, ensure_embedded, load_model
from .errors import PaintRayError
from .results.store import ResultStore, row_key
from .paths import ensure_writable
from .results.selection import best_of, frontier_table, select_alpha
from .results.study import PatchedModel, StudyResult
from .schedule_search import search_schedules
from .tasks import get_task



class Pipeline:
    def __init__(self, cfg: StudyConfig, backend: Backend):
        self.cfg, self.backend = cfg, backend
        self.timings: dict[str, float] = {}
        self.models: dict[str, LoadedModel] = {}
        self.refs: dict[str, ModelRef] = {}
        self.trials: list[TrialResult] = []
        self.tracking_uri: str | None = None
        self._identity: dict[str, str] | None = None
        self._t0 = time.time()

    @property
    def identity(self) -> dict[str, str]:
        """Eval precision and device type of the rows (asked of the backend when first needed: on a cluster
        that is after fine-tuning, so no evaluator holds a GPU while Tune wants it)."""
        if self._identity is None:
            self._identity = self.backend.eval_identity()
        return self._identity

    @classmethod
    def attached(cls, cfg: StudyConfig, backend: Backend, tasks: Sequence[str]) -> "Pipeline":
        """A pipeline over a backend that already holds its models (paint_ray.live): no loading."""
        pipe = cls(cfg, backend)
        pipe.store = ResultStore(Path(cfg.out) / "results")
        pipe.tasks = {n: get_task(n, cfg.data_root) for n in tasks}
        pipe.task_keys = {n: task_key(t) for n, t in pipe.tasks.items()}
        return pipe

    # ---- 1. set-up and models ---------------------------------------------------------------
    def prepare(self) -> "Pipeline":
        """Check everything cheap first (options, tracking server, cluster), then load every model. Heads
        are not encoded here: the backend encodes them where its devices are (evaluators, trials)."""
        cfg = self.cfg
        cfg.ensure_valid()
        if cfg.mlflow:
            from .reporting.tracking import check_tracking, tracking_uri
            self.tracking_uri = tracking_uri(cfg.out, cfg.tracking_uri)
            check_tracking(self.tracking_uri)      # an unreachable server fails now, not after training
        self.store = ResultStore(Path(cfg.out) / "results")
        self.tasks = {n: get_task(n, cfg.data_root) for n in cfg.all_tasks()}
        self.task_keys = {n: task_key(t) for n, t in self.tasks.items()}
        self.backend.start()
        t = time.time()
        for spec in cfg.models:
            if spec in EMBEDDED:          # pretrained once, here (and published), so no trial or actor races to do it
                ensure_embedded(spec, progress=cfg.progress, storage=self.backend.storage)
            loaded = load_model(spec, progress=cfg.progress)
            if cfg.eval_memory is not None:        # sizes unknown before loading (hub models), still before training
                from .data import image_size_of
                from .evaluation.memory import check_budget
                check_budget(cfg.eval_memory, image_size_of(loaded.model.visual))
            self.models[spec] = loaded
            self.refs[spec] = loaded.ref
            self.backend.add_model(loaded)
        self.timings["models_s"] = time.time() - t
        return self

    # ---- 2. fine-tuning ---------------------------------------------------------------------
    def jobs(self, spec: str, tasks: Sequence[str], mode: str = "single", start: str | None = None,
             start_key: str | None = None) -> list[FinetuneJob]:
        """One job per recipe of the study's hyperparameter grid. A single-task job trains its task's epochs
        where `cfg.epochs` lists them (converted to steps from the train split's size), else the recipe's steps.
        `start` is the storage name of a start point (sequential), which travels through the storage."""
        recipes = self.cfg.recipes()
        if len(tasks) == 1 and tasks[0] in self.cfg.epochs:
            from .training.recipe import resolve
            n_train = len(self.tasks[tasks[0]].split("train"))
            recipes = [resolve(r, tasks[0], n_train, self.cfg.epochs) for r in recipes]
        return [FinetuneJob(self.refs[spec], tuple(tasks), tuple(train_key(self.tasks[t], recipe) for t in tasks),
                            recipe, self.cfg.data_root, start, start_key, mode)
                for recipe in recipes]

    def finetune(self, jobs: list[FinetuneJob]) -> list[TrialResult]:
        t = time.time()
        done = self.backend.finetune(jobs, progress=self.cfg.progress)
        self.trials += done
        self.timings["tune_s"] = self.timings.get("tune_s", 0.0) + time.time() - t
        return done

    def weight_set(self, trial: TrialResult, start: str | None = None, start_key: str | None = None,
                   patch_tasks: Sequence[str] | None = None) -> WeightSet:
        """The trial's θ1 as a set to sweep, evaluated on `patch_tasks` (default: its own tasks), the
        supported and the extra tasks."""
        job = trial.job
        patch = "+".join(patch_tasks or job.tasks)
        # identified by the θ1's bytes, not the job's key: a θ1 trained again elsewhere (another CPU, another
        # thread count: its floats differ in the last bits) gets rows of its own instead of mixing with these
        return WeightSet(job.model, relative_name(job.path), file_digest(job.path), patch, job.mode,
                         tuple(self.cfg.eval_tasks(patch)), start, start_key, recipe=job.recipe.as_dict())

    def save_weights(self, state: dict, kind: str, key: str) -> str:
        """A derived weight file (a sequential start, a merged model) in this node's cache under `kind/key`,
        published to the backend's storage so trials and evaluators on any node fetch it; returns its name."""
        path = home() / kind / f"{key}.safetensors"
        if not path.is_file():
            save_tensors(state, path)
        if self.backend.storage:
            publish(path, self.backend.storage)
        return relative_name(path)

    def load_weights(self, name: str) -> dict:
        """Weights by their store name: from this node's cache, else fetched (verified) from the storage."""
        return load_tensors(fetch(name, self.backend.storage))

    # ---- 3. sweep ---------------------------------------------------------------------------
    def row(self, ws: WeightSet, r: dict) -> dict:
        """A result row: content keys first, names for reading after."""
        return {"schema": SCHEMA_VERSION, "model_digest": ws.model.digest, "weights": ws.key, "alpha": r["alpha"],
                "schedule": r.get("schedule") or "", "task_key": self.task_keys[r["task"]], "split": r["split"], **self.identity,
                "study": self.cfg.name, "model": ws.model.spec, "pretrained": ws.model.pretrained,
                "patch_tasks": ws.patch_tasks, "mode": ws.mode, "trial": ws.trial, "eval_task": r["task"],
                **{k: r[k] for k in ("accuracy", "n", "seconds") if k in r}}

    def sweep(self, sets: Iterable[WeightSet], alphas: Sequence[float], splits: Sequence[str] = SPLITS) -> int:
        """Evaluate every (set, α, eval task, split) not yet in the store; rows are appended as units finish."""
        return self.sweep_cells({ws: [(a, task, split) for a in alphas for task in ws.eval_tasks for split in splits]
                                 for ws in sets})

    def sweep_cells(self, wanted: dict[WeightSet, list[tuple]]) -> int:
        """Evaluate, as one batch of cells to the evaluators, every (α, task, split[, schedule]) of each set not
        yet stored."""
        t = time.time()
        done = self.store.keys()
        work = {}
        for ws, cells in wanted.items():
            cells = [c for c in dict.fromkeys(cells) if row_key(self.row(ws, dict(zip(
                ("alpha", "task", "split", "schedule"), c)))) not in done]
            if cells:
                work[ws] = cells
        if work:
            self.backend.evaluate(work, lambda ws, rows: self.store.append(self.row(ws, r) for r in rows),
                                  progress=self.cfg.progress)
        self.timings["sweep_s"] = self.timings.get("sweep_s", 0.0) + time.time() - t
        self.timings["cells"] = self.timings.get("cells", 0) + sum(len(c) for c in work.values())
        return sum(len(c) for c in work.values())

    def evaluate_sets(self, sets: Sequence[WeightSet], patch_tasks: Sequence[str] | None = None,
                      baseline: pd.DataFrame | None = None) -> Sequence[float] | None:
        """The study's α grid over `sets` (returned, to select on), or with `--alphas auto` the adaptive search
        (returns None: each set is selected on the α values evaluated for it)."""
        if self.cfg.alpha_search is None:
            alphas = anchored(self.cfg.alphas)
            self.sweep(sets, alphas)
            return alphas
        self.search(sets, patch_tasks, baseline)
        return None

    def search(self, sets: Sequence[WeightSet], patch_tasks: Sequence[str] | None = None,
               baseline: pd.DataFrame | None = None) -> int:
        """Adaptive α (results/search.py): validation rounds until every set's targets are resolved to Δα, then
        test at the chosen α values and the coarse grid's points. Returns the number of rounds."""
        from .results.robust import BUDGETS
        from .results.search import AlphaSearch
        cfg = self.cfg
        search = AlphaSearch(cfg.rule, cfg.max_drop, cfg.alpha_search)
        tasks_of = {ws: list(patch_tasks) if patch_tasks else ws.patch_tasks.split("+") for ws in sets}
        rounds = 0
        while True:
            frame = self.store.read()
            wanted = {}
            for ws in sets:
                new = search.propose(self.frontier(ws, tasks_of[ws], None, frame), baseline)
                if new:
                    wanted[ws] = [(a, t, "val") for a in new for t in ws.eval_tasks]
            if not wanted:
                break
            self.sweep_cells(wanted)
            rounds += 1
        frame = self.store.read()
        wanted = {}
        for ws in sets:
            table = self.frontier(ws, tasks_of[ws], None, frame)
            base = table if baseline is None else baseline
            chosen = [select_alpha(table, cfg.rule, cfg.max_drop, baseline=base).alpha]
            chosen += [select_alpha(table, "max-drop", b, baseline=base).alpha for b in BUDGETS]
            wanted[ws] = [(a, t, "test") for a in search.test_alphas(table, chosen) for t in ws.eval_tasks]
        self.sweep_cells(wanted)
        self.timings["search_rounds"] = self.timings.get("search_rounds", 0) + rounds
        return rounds

    # ---- 4. selection -----------------------------------------------------------------------
    def frontier(self, ws: WeightSet, patch_tasks: Sequence[str], alphas: Sequence[float] | None,
                 frame: pd.DataFrame | None = None) -> pd.DataFrame:
        """The set's frontier over `alphas` (None: every α evaluated for it, a search's points and any grid's)."""
        frame = self.store.read() if frame is None else frame
        keys = {self.task_keys[t] for t in ws.eval_tasks}
        mine = frame[(frame.weights == ws.key) & (frame.model_digest == ws.model.digest)
                     & (frame.precision == self.identity["precision"]) & (frame["device"] == self.identity["device"])
                     & frame.task_key.isin(keys) & (True if alphas is None else frame.alpha.isin(alphas))]
        if mine.empty:
            return pd.DataFrame(columns=["alpha", "patch_val", "supported_val", "patch_test", "supported_test"])
        return frontier_table(mine, patch_tasks, self.cfg.supported)

    def select(self, sets: Sequence[WeightSet], patch_tasks: Sequence[str], alphas: Sequence[float] | None,
               config: dict | None = None, choose_at: float | None = None,
               baseline: pd.Series | None = None) -> PatchedModel:
        """The best set by the rule's own score on validation, at its own best α (or at `choose_at`). A drop
        budget is measured from θ0: `baseline` (θ0's row, `zero_shot_row`) where a frontier's α = 0 is not
        θ0, else each set's own α = 0 row. When no set has an α within the budget, the PatchedModel says so
        (its selection is not eligible) and holds the first set's frontier."""
        frame = self.store.read()
        tables, selections, scored = [], [], []
        for ws in sets:
            table = self.frontier(ws, patch_tasks, alphas, frame)
            candidates = table if choose_at is None else table[table.alpha == choose_at]
            sel = select_alpha(candidates, self.cfg.rule, self.cfg.max_drop,
                               baseline=table if baseline is None else baseline)
            tables.append(table)
            selections.append(sel)
            at = candidates[candidates.alpha == (sel.alpha if sel.eligible else candidates.alpha.max())]
            scored.append({"trial": ws.trial, "score": sel.score, "eligible": sel.eligible, **at.iloc[0].to_dict()})
        i = best_of(selections)
        ws, table, sel = sets[i], tables[i], selections[i]
        ref = ws.model
        drift = self.backend.drift(ws, list(self.tasks))     # CKA on every task of the study: one probe set
        return PatchedModel(ref.spec, ref.pretrained, "+".join(patch_tasks), ws, dict(config or ws.recipe), table,
                            sel, drift, ws.mode, pd.DataFrame(scored) if choose_at is not None else None,
                            zero_shot=baseline)

    def single_task(self) -> list[PatchedModel]:
        """Every (model, patch task, seed): fine-tune each recipe, sweep, choose the best trial and α (each seed
        on its own: seeds measure the spread, they are not a hyperparameter to pick the best of)."""
        cfg = self.cfg
        # largest image encoders first: their trials are the longest, so the last wave of trials is short
        order = sorted(cfg.models, key=lambda m: -self.refs[m].visual_params)
        jobs = [j for spec in order for patch in cfg.patch_tasks for j in self.jobs(spec, [patch])]
        sets = [self.weight_set(tr) for tr in self.finetune(jobs)]
        alphas = self.evaluate_sets(sets)
        patched = []
        for spec in cfg.models:
            for patch in cfg.patch_tasks:
                for seed in cfg.seeds:
                    mine = [ws for ws in sets if ws.model.spec == spec and ws.patch_tasks == patch
                            and ws.recipe.get("seed", 0) == seed]
                    pm = self.select(mine, [patch], alphas)
                    pm.seed = seed
                    patched.append(pm)
        if cfg.schedule is not None:
            t = time.time()
            search_schedules(self, patched)
            self.timings["schedule_s"] = time.time() - t
        return patched

    # ---- 5. record --------------------------------------------------------------------------
    def result(self, patched: list[PatchedModel]) -> StudyResult:
        trials = pd.DataFrame([{"model": tr.job.model.spec, "patch": "+".join(tr.job.tasks), "mode": tr.job.mode,
                                "trial": f"{'+'.join(tr.job.tasks)}-{tr.job.key[:8]}", "key": tr.job.key,
                                "seed": tr.job.recipe.seed,
                                "weights": set_key(tr.job.model.digest, file_digest(tr.path), tr.job.start_key),
                                "theta1": relative_name(tr.path), "start": tr.job.start or "", "recipe": tr.job.recipe.as_dict(),
                                "patch_val_acc": tr.val_acc, "history": tr.history, "path": tr.tune_path,
                                "node_id": tr.node_id, "cached": tr.cached} for tr in self.trials])
        result = StudyResult(self.cfg, patched, trials, self.timings, self.models,
                             storage=self.backend.storage, identity=dict(self.identity))
        if self.tracking_uri:
            t = time.time()
            from .reporting.tracking import log_study
            result.run_ids = log_study(result, self.tracking_uri, register=self.cfg.register,
                                       identity={**self.identity, "tasks": self.task_keys})
            self.timings["mlflow_s"] = time.time() - t
        self.timings["total_s"] = time.time() - self._t0
        return result


def study_id(cfg: StudyConfig) -> str:
    """The name a study's evaluators live under: its name and where it writes (two studies with different
    output folders on one cluster neither share nor kill each other's evaluators)."""
    return f"{cfg.name}-{digest(str(Path(cfg.out).expanduser().resolve()), 8)}"


def default_backend(cfg: StudyConfig) -> Backend:
    from .distributed.backend import RayBackend
    return RayBackend(cfg, study_id(cfg))


@contextmanager
def exclusive(out: str | Path):
    """One run at a time per output folder: a second one refuses in one line instead of resuming the first's
    half-done Tune experiment and writing the same cells twice."""
    from filelock import FileLock, Timeout
    folder = ensure_writable(out)
    lock = FileLock(str(folder / ".paint_ray.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise PaintRayError(f"another paint_ray run is writing to {folder}; wait for it to finish or give "
                            f"another --out") from None
    try:
        yield
    finally:
        lock.release()


def run_study(cfg: StudyConfig, backend: Backend | None = None) -> StudyResult:
    """Fine-tune, sweep, select and record a single-task study on `backend` (default: Ray)."""
    with exclusive(cfg.out):
        backend = backend or default_backend(cfg)
        pipe = Pipeline(cfg, backend)
        try:
            pipe.prepare()
            return pipe.result(pipe.single_task())
        finally:
            backend.close()
