"""The Ray backend of the pipeline: Tune trials for fine-tuning, the study's named evaluator actors for
sweeps. `attach` reuses a running study's evaluators (paint_ray.live) without loading anything again.

Staging and unit planning are the in-process backend's (evaluation/sweep.py); here the hosts are actors,
every wait on them is bounded (`RayEvaluators.gather`), and units are collected as they finish (sweep.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import ray

from ..config import StudyConfig
from ..errors import PaintRayError
from ..evaluation.sweep import Rows, Sweeper, rows_back
from ..evaluation.weight_set import OnRows, WeightSet, Work
from ..identity import digest
from ..training.job import METRIC, FinetuneJob, TrialResult
from ..storage import check_writable, fetch, relative_name
from .cluster import capacity, check_nodes, connect, request, wait_for
from .evaluators import ensure_evaluators, evaluator_names, get_evaluator, shutdown_evaluators
from .sweep import run_units
from .tune_finetune import check_resources, default_resources, run_trials
from .waits import WAIT_S, gather

MAX_RESTAGES = 2
CLUSTER_WAIT_S = float(os.environ.get("PAINT_RAY_CLUSTER_WAIT", 1800))   # for autoscaled nodes to join


class RayEvaluators:
    """A study's evaluator actors as `evaluation.sweep.Evaluators`: calls are remote, waits are bounded."""

    def __init__(self, handles: list, study: str, timeout: float = WAIT_S):
        self.handles, self.study, self.timeout = handles, study, timeout

    def __len__(self) -> int:
        return len(self.handles)

    def call(self, i: int, method: str, *args):
        return getattr(self.handles[i], method).remote(*args)

    def gather(self, pending: list, what: str) -> list:
        return gather(pending, what, self.study, self.timeout)


class RayBackend:
    def __init__(self, cfg: StudyConfig, study: str):
        self.cfg, self.study = cfg, study
        self.models = {}                          # model digest -> LoadedModel (driver side)
        self.storage = str(cfg.tune_storage or os.environ.get("PAINT_RAY_STORAGE") or Path(cfg.out).resolve() / "tune")
        self._handles: list | None = None
        self._sweeper: Sweeper | None = None

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
        """Join the cluster and check, before any model is loaded or trained, that its node types can place
        the trials and the evaluators, that the storage can be written and that the nodes up now hold the
        study's data."""
        self.resources = connect(self.cfg.address)
        self.capacity = capacity()
        self.trial_resources = self.cfg.resources or default_resources(self.capacity)
        check_resources(self.trial_resources, self.capacity)
        n = self.cfg.evaluators
        if n is not None and self._gpus() and n > self.capacity.most("GPU"):
            raise PaintRayError(f"--evaluators {n} needs {n} GPUs (one each); this cluster can have at most "
                                f"{self.capacity.most('GPU'):g}" + (" with its node types" if self.capacity.autoscales
                                                                    else "") + "; give at most that many")
        check_writable(self.storage)
        check_nodes(self.cfg.data_root, self.cfg.all_tasks(), self.study)

    def add_model(self, loaded) -> None:
        self.models[loaded.digest] = loaded

    def _gpus(self) -> float:
        """GPUs the cluster has or its node types can add (right after `ray up` no GPU node is up yet)."""
        return self.capacity.most("GPU") if hasattr(self, "capacity") else self.resources.get("GPU", 0)

    def eval_identity(self) -> dict[str, str]:
        """What the evaluators compute rows with (a CPU node decides bf16 by its own CPU)."""
        return gather([self.evaluators()[0].identity.remote()], "an evaluator's identity", self.study)[0]

    def evaluators(self) -> list:
        if self._handles is None:
            gpus = self._gpus()
            n = self.cfg.evaluators or (int(gpus) if gpus else max(1, min(int(self.resources.get("CPU", 1)), 8)))
            if gpus and getattr(self, "capacity", None) is not None and self.capacity.autoscales:
                request([{"GPU": 1}] * n)          # the autoscaler adds the nodes now, not one by one
                wait_for("GPU", n, CLUSTER_WAIT_S, f"{n} GPU(s) for the evaluators", self.cfg.progress)
            # On CPU-only clusters evaluators reserve no CPU: they idle between sweeps and must not starve Tune.
            self._handles = ensure_evaluators(self.study, n, cpus=0, gpus=1 if gpus else 0,
                                              threads=max(1, int(self.resources.get("CPU", 1)) // n),
                                              budget=self.cfg.eval_memory, keep_s=self.cfg.keep_evaluators)
            self._sweeper = None
        return self._handles

    @property
    def sweeper(self) -> Sweeper:
        handles = self.evaluators()
        if self._sweeper is None:
            self._sweeper = Sweeper(RayEvaluators(handles, self.study), self.cfg.data_root, self.storage)
        return self._sweeper

    # ---- fine-tuning ------------------------------------------------------------------------
    def finetune(self, jobs: list[FinetuneJob], progress: bool = True) -> list[TrialResult]:
        res = self.trial_resources
        if res.gpus > 0 and evaluator_names(self.study) and ray.available_resources().get("GPU", 0) < res.gpus:
            print(f"releasing {shutdown_evaluators(self.study)} evaluators of {self.study} so Tune can use their GPUs")
            self._handles = None
        if res.gpus > 0 and self.capacity.autoscales:
            per_node = self.capacity.per_node("GPU")
            at_once = min(len(jobs), int(self.capacity.most("GPU") // res.gpus))
            request([res.as_bundle()] * at_once)
            wait_for("GPU", min(res.gpus, per_node), CLUSTER_WAIT_S, "a GPU node for the trials", self.cfg.progress)
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
                                    bool(result.metrics.get("cached")), int(result.metrics.get("resumed_from", 0))))
        return done

    # ---- evaluation: data stays where it is placed, weights go to it ------------------------------
    def evaluate(self, work: Work, on_rows: OnRows, progress: bool = True, attempt: int = 0) -> None:
        units, parent, by_key = self.sweeper.plan_units(work)
        rows = Rows(parent, rows_back(by_key, on_rows))
        lost = run_units(self.evaluators(), units, rows, progress=progress, study=self.study)
        if lost:
            remaining = rows.unfinished()
            if attempt >= MAX_RESTAGES:
                raise PaintRayError(f"evaluators of {self.study} kept dying ({attempt + 1} times); "
                                    f"{len(remaining)} cells are not evaluated, every finished "
                                    f"cell is stored and a rerun resumes")
            print(f"paint-ray: an evaluator of {self.study} died; re-staging and evaluating its "
                  f"{len(remaining)} unfinished cells again")
            self._handles = None        # live ones are found again by name, the dead one is replaced
            from ..evaluation.evaluator import Cell
            again = {}
            for ws, cells in work.items():
                left = [c for c in cells if (ws.model.digest, Cell(ws.key, *c)) in remaining]
                if left:
                    again[ws] = left
            self.evaluate(again, on_rows, progress, attempt + 1)

    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict:
        return self.sweeper.drift(ws, probe_tasks)

    def close(self) -> None:
        """Withdraw this study's requests to the autoscaler (nodes may go once idle); the evaluators stay,
        detached, for paint_ray.live, until they have been idle for --keep-evaluators."""
        if getattr(self, "capacity", None) is not None and self.capacity.autoscales:
            request([])


def _history(result) -> list[dict]:
    """Per-report metrics of a Tune trial (for its nested MLflow run)."""
    frame = result.metrics_dataframe
    if frame is None or frame.empty:
        return []
    cols = [c for c in ("step", METRIC, "loss") if c in frame.columns]
    return frame[cols].to_dict("records")
