"""The in-process backend: fine-tuning and evaluation in this Python process, on one device.

This is what `paint-ray patch` and every study's `--local` run; it needs no Ray. Fine-tuning is
`training.run_job`; evaluation is one `EvaluatorHost` (the same class a Ray evaluator actor wraps) staged
and fed by the same `Sweeper`, its units run one after another.
"""
from __future__ import annotations

from tqdm.auto import tqdm

from ..devices import resolve
from ..evaluation.host import EvaluatorHost
from ..evaluation.sweep import InProcess, Rows, Sweeper, rows_back
from ..evaluation.weight_set import OnRows, WeightSet, Work
from ..training.job import FinetuneJob, TrialResult, run_job


class LocalBackend:
    def __init__(self, device: str | None = None, data_root: str | None = None, eval_memory: int | None = None):
        self.device = resolve(device)
        self.data_root = data_root
        self.storage = None                    # one node: its cache is the store
        self.models = {}                       # model digest -> LoadedModel
        self.host = EvaluatorHost(str(self.device), budget=eval_memory)
        self.sweeper = Sweeper(InProcess([self.host]), data_root, None)

    def start(self) -> None:
        pass

    def add_model(self, loaded) -> None:
        self.models[loaded.digest] = loaded
        if loaded.digest not in self.host.evaluators:
            self.host.add_loaded(loaded)

    def eval_identity(self) -> dict[str, str]:
        return self.host.identity()

    def finetune(self, jobs: list[FinetuneJob], progress: bool = True) -> list[TrialResult]:
        return [run_job(job, self.models[job.model.digest], self.device, progress=progress) for job in jobs]

    def evaluate(self, work: Work, on_rows: OnRows, progress: bool = True) -> None:
        units, parent, by_key = self.sweeper.plan_units(work)
        rows = Rows(parent, rows_back(by_key, on_rows))
        with tqdm(total=sum(len(u[2]) for u in units), desc="sweeping cells", disable=not progress,
                  leave=False) as bar:
            for host, model_id, cells in units:
                rows.add(host, model_id, self.host.evaluate(model_id, [(c.weights, c.alpha, c.task, c.split,
                                                                         c.schedule) for c in cells]))
                bar.update(len(cells))

    def drift(self, ws: WeightSet, probe_tasks: list[str]) -> dict:
        return self.sweeper.drift(ws, probe_tasks)

    def searcher(self, name: str, names: list[str], seed: int, warm: list[tuple[dict, float]]):
        from ..results.schedules import local_searcher
        return local_searcher(name, names, seed, warm)

    def close(self) -> None:
        pass
