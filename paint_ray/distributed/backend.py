"""The Ray backend of the pipeline: Tune trials for fine-tuning, the study's named evaluator actors for
sweeps. `attach` reuses a running study's evaluators (paint_ray.live) without loading anything again.
"""
from __future__ import annotations

import os
from pathlib import Path

import ray

from .. import cache
from ..backends import FinetuneJob, TrialResult, WeightSet, Work
from ..config import StudyConfig
from ..data import image_size_of, prepare_task
from ..errors import PaintRayError
from ..evaluator import Cell
from ..identity import digest, task_key
from ..models.checkpoints import load_tensors, save_tensors
from ..precision import eval_precision
from ..tasks import get_task
from .cluster import connect
from .evaluators import ensure_evaluators, evaluator_names, get_evaluator, shutdown_evaluators
from .sweep import owner_of, run_units, units_of
from .tune_finetune import METRIC, check_resources, default_resources, run_trials


MAX_RESTAGES = 2


def _identity(device_type: str) -> dict[str, str]:
    return {"precision": eval_precision(device_type), "device": device_type}


class RayBackend:
    def __init__(self, cfg: StudyConfig, study: str):
        self.cfg, self.study = cfg, study
        self.models = {}                          # model digest -> LoadedModel (driver side)
        self._refs: dict = {}                     # object refs put once per backend: θ0s, splits, θ1s
        self._handles: list | None = None
        self.labels: dict[str, str] = {}          # model digest -> spec (attached backends)

    @classmethod
    def attach(cls, cfg: StudyConfig, study: str) -> "RayBackend":
        """A backend over a running study's evaluators (on the cluster this process is connected to)."""
        names = evaluator_names(study)
        if not names:
            raise PaintRayError(f"study {study!r} has no live evaluators")
        backend = cls(cfg, study)
        backend.resources = ray.cluster_resources()
        backend._handles = [get_evaluator(n) for n in names]
        return backend

    # ---- cluster ----------------------------------------------------------------------------
    def start(self) -> None:
        self.resources = connect(self.cfg.address)
        self.trial_resources = self.cfg.resources or default_resources()
        check_resources(self.trial_resources)     # before any model is loaded or trained

    def add_model(self, loaded) -> None:
        self.models[loaded.digest] = loaded

    def _gpus(self) -> float:
        return self.resources.get("GPU", 0)

    def eval_identity(self) -> dict[str, str]:
        if self._gpus():
            return _identity("cuda")
        # CPU evaluators decide bf16 by their node's CPU, which may differ from the driver's
        if self._handles:
            return ray.get(self._handles[0].identity.remote())
        return ray.get(ray.remote(num_cpus=0)(_identity).remote("cpu"))

    def evaluators(self) -> list:
        if self._handles is None:
            n = self.cfg.evaluators or (int(self._gpus()) if self._gpus() else
                                        max(1, min(int(self.resources.get("CPU", 1)), 8)))
            # On CPU-only clusters evaluators reserve no CPU: they idle between sweeps and must not starve Tune.
            self._handles = ensure_evaluators(self.study, n, cpus=0, gpus=1 if self._gpus() else 0,
                                              threads=max(1, int(self.resources.get("CPU", 1)) // n))
        return self._handles

    # ---- fine-tuning ------------------------------------------------------------------------
    def finetune(self, jobs: list[FinetuneJob], progress: bool = True) -> list[TrialResult]:
        res = self.trial_resources
        if res.gpus > 0 and evaluator_names(self.study) and ray.available_resources().get("GPU", 0) < res.gpus:
            print(f"releasing {shutdown_evaluators(self.study)} evaluators of {self.study} so Tune can use their GPUs")
            self._handles = None
        storage = self.cfg.tune_storage or os.environ.get("PAINT_RAY_STORAGE") or Path(self.cfg.out).resolve() / "tune"
        name = f"{self.cfg.name}-{digest(sorted(j.key for j in jobs), 12)}"
        grid = run_trials([j.as_config() for j in jobs], storage, name, res, asha=self.cfg.asha, progress=progress)
        by_key = {j.key: j for j in jobs}
        done = []
        for result in grid:
            job = by_key[result.config["job"]["key"]]
            if result.error or result.checkpoint is None:
                why = str(result.error).strip().splitlines()[-1][:200] if result.error else "no checkpoint"
                raise PaintRayError(f"fine-tuning trial {job.model.spec}/{'+'.join(job.tasks)} failed after "
                                    f"retries: {why}")
            if cache.read_or_set_aside(job.path) is None:   # trained on another node: bring θ1 here
                with result.checkpoint.as_directory() as d:
                    save_tensors(load_tensors(Path(d) / "visual.safetensors"), job.path, metadata={"job": job.key})
            done.append(TrialResult(job, result.metrics.get(METRIC, float("nan")), _history(result),
                                    result.path, result.metrics.get("node_id", ""),
                                    bool(result.metrics.get("cached"))))
        return done

    # ---- evaluation -------------------------------------------------------------------------
    def _put(self, key, make):
        """Object refs made once per backend (`make` puts what it returns)."""
        if key not in self._refs:
            self._refs[key] = make()
        return self._refs[key]

    def _loaded(self, model_digest: str):
        """The driver's copy of a model (attached backends load it on first need, by its spec)."""
        if model_digest not in self.models:
            from ..models.registry import load_model
            label = self.labels.get(model_digest, "")
            loaded = load_model(label, progress=False)
            if loaded.digest != model_digest:
                raise PaintRayError(f"model {label!r} here has weights {loaded.digest}, not the {model_digest} "
                                    f"the evaluators hold; it changed since the study ran")
            self.models[model_digest] = loaded
        return self.models[model_digest]

    def _visual_state(self, loaded) -> dict:
        return {k: v.detach().cpu().numpy() for k, v in loaded.model.visual.state_dict().items()}

    def _stage(self, model_digest: str, tasks: set[str], splits: set[str], sets: list[WeightSet]) -> dict:
        """Give every evaluator the model, heads and splits it lacks (by key); each weight set goes to one
        owner. Returns {(model digest, set key): owner index}. Nothing held under the same key is resent."""
        handles = self.evaluators()
        inventories = ray.get([h.inventory.remote() for h in handles])
        calls = []
        for h, inv in zip(handles, inventories):
            held = inv["models"].get(model_digest)
            if held is None:
                loaded = self._loaded(model_digest)
                state = self._put(("model", model_digest), lambda: ray.put(self._visual_state(loaded)))
                calls.append(h.add_model.remote(model_digest, loaded.spec, loaded.model_cfg,
                                                dict(loaded.preprocess_cfg or {}), state))
                held = {"weights": [], "heads": {}, "splits": {}}
            for name in sorted(tasks):
                task = get_task(name, self.cfg.data_root)
                key = task_key(task)
                if held["heads"].get(name) != key:
                    head = cache.cached_head(self._loaded(model_digest), task).numpy()
                    calls.append(h.add_head.remote(model_digest, name, key, head))
                for split in sorted(splits):
                    if held["splits"].get(f"{name}/{split}") != key:
                        size = image_size_of(self._loaded(model_digest).model.visual)
                        images, labels = self._put(("split", key, split, size),
                                                   lambda: self._split(task, split, size))
                        calls.append(h.add_split.remote(model_digest, name, split, key, images, labels))
        owners = {}
        for ws in sets:
            holders = [i for i, inv in enumerate(inventories)
                       if ws.key in inv["models"].get(model_digest, {}).get("weights", [])]
            owner = holders[0] if holders else owner_of(f"{model_digest}/{ws.key}", len(handles))
            if not holders:
                theta1 = {k: v.numpy() for k, v in load_tensors(ws.theta1).items()}
                start = {k: v.numpy() for k, v in load_tensors(ws.start).items()} if ws.start else None
                meta = {"patch_tasks": ws.patch_tasks, "mode": ws.mode, "theta1_key": ws.theta1_key,
                        "start_key": ws.start_key}
                calls.append(handles[owner].add_weights.remote(model_digest, ws.key, theta1, start, meta))
            owners[(model_digest, ws.key)] = owner
        ray.get(calls)
        return owners

    @staticmethod
    def _split(task, split: str, size: int):
        data = prepare_task(task, split, size)
        return ray.put(data.images.numpy()), ray.put(data.labels.numpy())

    def evaluate(self, work: Work, on_rows, progress: bool = True, attempt: int = 0) -> None:
        handles = self.evaluators()
        owners, cells_by_model, by_key, with_start = {}, {}, {}, set()
        for digest_ in {ws.model.digest for ws in work}:
            sets = [ws for ws in work if ws.model.digest == digest_]
            tasks = {c[1] for ws in sets for c in work[ws]}
            splits = {c[2] for ws in sets for c in work[ws]}
            owners.update(self._stage(digest_, tasks, splits, sets))
            cells_by_model[digest_] = [Cell(ws.key, a, t, s) for ws in sets for a, t, s in work[ws]]
            for ws in sets:
                by_key[(digest_, ws.key)] = ws
                if ws.start:
                    with_start.add((digest_, ws.key))

        def rows_back(model_digest: str, rows: list[dict]) -> None:
            for key in {r["weights"] for r in rows}:
                on_rows(by_key[(model_digest, key)], [r for r in rows if r["weights"] == key])

        lost = run_units(handles, units_of(cells_by_model, owners, len(handles), frozenset(with_start)), rows_back,
                         progress=progress)
        if lost:
            if attempt >= MAX_RESTAGES:
                raise PaintRayError(f"evaluators of {self.study} kept dying ({attempt + 1} times); "
                                    f"{sum(len(u[2]) for u in lost)} cells are not evaluated, every finished "
                                    f"cell is stored and a rerun resumes")
            remaining = {(u[1], c.weights, c.alpha, c.task, c.split) for u in lost for c in u[2]}
            print(f"paint-ray: an evaluator of {self.study} died; re-staging and evaluating its "
                  f"{len(remaining)} unfinished cells again")
            self._handles = None        # live ones are found again by name, the dead one is replaced
            again = {}
            for ws, cells in work.items():
                left = [c for c in cells if (ws.model.digest, ws.key, *c) in remaining]
                if left:
                    again[ws] = left
            self.evaluate(again, on_rows, progress, attempt + 1)

    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict:
        owners = self._stage(ws.model.digest, set(probe_tasks), {"val"}, [ws])
        owner = self.evaluators()[owners[(ws.model.digest, ws.key)]]
        return ray.get(owner.drift.remote(ws.model.digest, ws.key, [(t, "val") for t in probe_tasks]))

    def close(self) -> None:
        self._refs.clear()          # the evaluators stay: they are detached, for paint_ray.live


def _history(result) -> list[dict]:
    """Per-report metrics of a Tune trial (for its nested MLflow run)."""
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    cols = [c for c in ("step", METRIC, "loss") if c in frame.columns]
    return frame[cols].to_dict("records")
