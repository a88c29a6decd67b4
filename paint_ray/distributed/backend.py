"""The Ray backend of the pipeline: Tune trials for fine-tuning, the study's named evaluator actors for
sweeps. `attach` reuses a running study's evaluators (paint_ray.live) without loading anything again.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import ray

from .. import cache
from ..backends import FinetuneJob, TrialResult, WeightSet, Work
from ..config import StudyConfig
from ..data import image_size_of
from ..errors import PaintRayError
from ..evaluator import ZERO_SHOT, Cell
from ..placement import Holding, Placement, Shard, SplitRef, plan
from ..weights_store import fetch, publish, relative_name
from ..identity import digest, task_key
from ..precision import eval_precision
from ..tasks import get_task
from .cluster import connect
from .evaluators import ensure_evaluators, evaluator_names, get_evaluator, shutdown_evaluators
from .sweep import Rows, run_units, units_of
from .tune_finetune import METRIC, check_resources, default_resources, run_trials


MAX_RESTAGES = 2


def _identity(device_type: str) -> dict[str, str]:
    return {"precision": eval_precision(device_type), "device": device_type}


class RayBackend:
    def __init__(self, cfg: StudyConfig, study: str):
        self.cfg, self.study = cfg, study
        self.models = {}                          # model digest -> LoadedModel (driver side)
        self._rows: dict = {}                     # placement identity of a split -> its rows
        self._published: set[str] = set()         # weight sets whose files are in the storage
        self.placement: Placement | None = None
        self.storage = str(cfg.tune_storage or os.environ.get("PAINT_RAY_STORAGE") or Path(cfg.out).resolve() / "tune")
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
                                              threads=max(1, int(self.resources.get("CPU", 1)) // n),
                                              budget=self.cfg.eval_memory)
        return self._handles

    # ---- fine-tuning ------------------------------------------------------------------------
    def finetune(self, jobs: list[FinetuneJob], progress: bool = True) -> list[TrialResult]:
        res = self.trial_resources
        if res.gpus > 0 and evaluator_names(self.study) and ray.available_resources().get("GPU", 0) < res.gpus:
            print(f"releasing {shutdown_evaluators(self.study)} evaluators of {self.study} so Tune can use their GPUs")
            self._handles = None
        name = f"{self.cfg.name}-{digest(sorted(j.key for j in jobs), 12)}"
        grid = run_trials([j.as_config() for j in jobs], self.storage, name, res, asha=self.cfg.asha,
                          progress=progress)
        by_key = {j.key: j for j in jobs}
        done = []
        for result in grid:
            job = by_key[result.config["job"]["key"]]
            if result.error or result.checkpoint is None:
                why = str(result.error).strip().splitlines()[-1][:200] if result.error else "no checkpoint"
                raise PaintRayError(f"fine-tuning trial {job.model.spec}/{'+'.join(job.tasks)} failed after "
                                    f"retries: {why}")
            if not job.path.is_file():   # trained on another node: its file comes here (a file copy, for MLflow)
                fetch(relative_name(job.path), self.storage)
            done.append(TrialResult(job, result.metrics.get(METRIC, float("nan")), _history(result),
                                    result.path, result.metrics.get("node_id", ""),
                                    bool(result.metrics.get("cached"))))
        return done

    # ---- evaluation: data stays where it is placed, weights go to it ------------------------------
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

    def _placement(self, inventories: list[dict]) -> Placement:
        """What the evaluators hold now (a re-created evaluator holds nothing), as a placement to extend."""
        placement = Placement([inv["budget"] for inv in inventories])
        for i, inv in enumerate(inventories):
            seen = set()
            for sh in inv["shards"]:
                shard = Shard(sh["task"], sh["split"], sh["key"], sh["image_size"], sh["start"], sh["stop"], sh["total"])
                if shard not in seen:
                    seen.add(shard)
                    placement.held[i].append(Holding(shard, sh["resident"]))
        return placement

    def _sizes(self, handles, idents: list[tuple[str, str, str, int]]) -> list[SplitRef]:
        """Rows per split, counted by the evaluators (each builds its node's eval-cache entry on the way)."""
        missing = [i for i in idents if i not in self._rows]
        calls = [handles[k % len(handles)].split_size.remote(t, s, key, self.cfg.data_root, size)
                 for k, (t, s, key, size) in enumerate(missing)]
        for ident, n in zip(missing, ray.get(calls)):
            self._rows[ident] = n
        return [SplitRef(*i, self._rows[i]) for i in idents]

    def _weight_names(self, ws: WeightSet, inventories: list[dict], model_digest: str) -> dict:
        """Names (weights_store) of a set's files, published to the study's storage once."""
        if ws.theta1 and str(ws.theta1) not in ("", "."):
            if ws.key not in self._published:
                publish(ws.theta1, self.storage)
                if ws.start:
                    publish(ws.start, self.storage)
                self._published.add(ws.key)
            return {"theta1": relative_name(ws.theta1), "start": relative_name(ws.start) if ws.start else None,
                    "storage": self.storage}
        for inv in inventories:      # an attached backend: the names the holders were given
            meta = inv["models"].get(model_digest, {}).get("weight_meta", {}).get(ws.key)
            if meta and meta.get("theta1_name"):
                return {"theta1": meta["theta1_name"], "start": meta.get("start_name"), "storage": meta.get("storage")}
        raise PaintRayError(f"weights {ws.key} are held by no evaluator and have no file to send")

    def _stage(self, model_digest: str, tasks: set[str], splits: set[str], needs: dict[WeightSet, set[str]]) -> dict:
        """Place the splits the cells need (once; placement.py), load each shard on its evaluator from that
        node's eval cache, and send every weight set — as names — to each evaluator holding data of the
        tasks it `needs`. Returns {(model, task, split): placement identity}. Nothing held is sent again."""
        handles = self.evaluators()
        inventories = ray.get([h.inventory.remote() for h in handles])
        loaded = self._loaded(model_digest)
        size = image_size_of(loaded.model.visual)
        calls = []
        for h, inv in zip(handles, inventories):
            if model_digest not in inv["models"]:
                calls.append(h.load_model.remote(model_digest, loaded.spec))
        idents = {}
        for name in sorted(tasks):
            task = get_task(name, self.cfg.data_root)
            key = task_key(task)
            groups = getattr(task, "answer_groups", None)
            head = cache.cached_head(loaded, task).numpy()
            for h, inv in zip(handles, inventories):
                if inv["models"].get(model_digest, {}).get("heads", {}).get(name) != key:
                    calls.append(h.add_head.remote(model_digest, name, key, head,
                                                   None if groups is None else list(groups)))
            for split in sorted(splits):
                idents[(model_digest, name, split)] = (name, split, key, size)
        ray.get(calls)
        self.placement = plan(self._sizes(handles, sorted(set(idents.values()))), [], self._placement(inventories))
        calls, holders = [], {}       # task -> evaluators holding a shard of it
        wanted = set(idents.values())
        for i, (h, inv) in enumerate(zip(handles, inventories)):
            have = {(s["task"], s["name"]) for s in inv["shards"] if s["model"] == model_digest}
            for hold in self.placement.held[i]:
                if hold.shard.ident in wanted:
                    holders.setdefault(hold.shard.task, set()).add(i)
                    if (hold.shard.task, hold.shard.name) not in have:
                        calls.append(h.add_shard.remote(model_digest, hold.shard.as_dict(), self.cfg.data_root,
                                                        hold.resident))
        for ws, its_tasks in needs.items():     # each weight set goes where the data of its tasks is
            names = None
            for i in sorted(set().union(*(holders.get(t, set()) for t in its_tasks))):
                if ws.key not in inventories[i]["models"].get(model_digest, {}).get("weights", []):
                    names = names or self._weight_names(ws, inventories, model_digest)
                    meta = {"patch_tasks": ws.patch_tasks, "mode": ws.mode, "theta1_key": ws.theta1_key,
                            "start_key": ws.start_key, "theta1_name": names["theta1"],
                            "start_name": names["start"], "storage": names["storage"]}
                    calls.append(handles[i].fetch_weights.remote(model_digest, ws.key, names["theta1"], names["start"],
                                                                 names["storage"], meta))
        ray.get(calls)
        return idents

    def evaluate(self, work: Work, on_rows, progress: bool = True, attempt: int = 0) -> None:
        handles = self.evaluators()
        idents, cells_by_model, by_key, with_start = {}, {}, {}, set()
        for digest_ in {ws.model.digest for ws in work}:
            sets = [ws for ws in work if ws.model.digest == digest_]
            tasks = {c[1] for ws in sets for c in work[ws]}
            splits = {c[2] for ws in sets for c in work[ws]}
            idents.update(self._stage(digest_, tasks, splits, {ws: {c[1] for c in work[ws]} for ws in sets}))
            cells_by_model[digest_] = [Cell(ws.key, a, t, s) for ws in sets for a, t, s in work[ws]]
            for ws in sets:
                by_key[(digest_, ws.key)] = ws
                if ws.start:
                    with_start.add((digest_, ws.key))

        def rows_back(model_digest: str, rows: list[dict]) -> None:
            for key in {r["weights"] for r in rows}:
                on_rows(by_key[(model_digest, key)], [r for r in rows if r["weights"] == key])

        units, parent = units_of(cells_by_model, idents, self.placement, frozenset(with_start))
        rows = Rows(parent, rows_back)
        lost = run_units(handles, units, rows, progress=progress)
        if lost:
            remaining = rows.unfinished()
            if attempt >= MAX_RESTAGES:
                raise PaintRayError(f"evaluators of {self.study} kept dying ({attempt + 1} times); "
                                    f"{len(remaining)} cells are not evaluated, every finished "
                                    f"cell is stored and a rerun resumes")
            print(f"paint-ray: an evaluator of {self.study} died; re-staging and evaluating its "
                  f"{len(remaining)} unfinished cells again")
            self._handles = None        # live ones are found again by name, the dead one is replaced
            again = {}
            for ws, cells in work.items():
                left = [c for c in cells if (ws.model.digest, Cell(ws.key, *c)) in remaining]
                if left:
                    again[ws] = left
            self.evaluate(again, on_rows, progress, attempt + 1)

    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict:
        """CKA of θ0 and θ1 features on the first rows of each probe task's val split (wherever they are
        held; features are small and come back here), and ‖θ1 − θ0‖/‖θ0‖."""
        from ..analysis import linear_cka
        import torch
        m = ws.model.digest
        idents = self._stage(m, set(probe_tasks), {"val"}, {ws: set(probe_tasks)})
        handles = self.evaluators()
        firsts = [self.placement.shards_of(idents[(m, t, "val")])[0] for t in probe_tasks]
        f0 = ray.get([handles[i].probe_features.remote(m, ZERO_SHOT, 0.0, [(s.task, s.name)]) for i, s in firsts])
        f1 = ray.get([handles[i].probe_features.remote(m, ws.key, 1.0, [(s.task, s.name)]) for i, s in firsts])
        cka = linear_cka(torch.from_numpy(np.concatenate(f0)), torch.from_numpy(np.concatenate(f1)))
        return {"cka": cka, "weight_distance": ray.get(handles[firsts[0][0]].weight_distance.remote(m, ws.key))}

    def close(self) -> None:
        pass                        # the evaluators stay: they are detached, for paint_ray.live


def _history(result) -> list[dict]:
    """Per-report metrics of a Tune trial (for its nested MLflow run)."""
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    cols = [c for c in ("step", METRIC, "loss") if c in frame.columns]
    return frame[cols].to_dict("records")
