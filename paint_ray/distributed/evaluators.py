"""Named, detached evaluator actors: thin Ray wrappers around EvaluatorHost, one per GPU or CPU slot.

Each study's evaluators live under names derived from the study (`paint_ray:<study>:evaluator-<i>`), so
two studies on one cluster neither share nor kill each other's. They outlive the driver that made them
(in the `paint_ray` namespace), so a later Python session can find them by study and sweep again; and
they end themselves once idle for `keep_s` seconds (`--keep-evaluators`), giving their GPUs back to the
cluster (whose autoscaler can then let the node go). Any call, `paint_ray.live`'s included, keeps one warm.
"""
from __future__ import annotations

import threading
import time

import ray

from ..evaluation.host import EvaluatorHost
from .cluster import NAMESPACE

PREFIX = "paint_ray:"


@ray.remote
class EvaluatorActor(EvaluatorHost):
    """EvaluatorHost as an actor: every public method becomes remote; the inventory says where it runs."""

    def __init__(self, *args, keep_s: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if keep_s:
            threading.Thread(target=self._end_when_idle, args=(float(keep_s),), daemon=True).start()

    def inventory(self, node_id: str = ""):
        self._used()
        return super().inventory(ray.get_runtime_context().get_node_id())

    def _end_when_idle(self, keep_s: float) -> None:
        while True:
            time.sleep(min(30.0, max(0.5, keep_s / 4)))
            if time.time() - self.last_used > keep_s:
                ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
                return


def _name(study: str, i: int) -> str:
    return f"{PREFIX}{study}:evaluator-{i}"


def _named() -> list[str]:
    # core API: works without the dashboard (the state API needs it)
    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == NAMESPACE and a["name"].startswith(PREFIX)]


def study_names() -> list[str]:
    """Studies with live evaluators on this cluster."""
    return sorted({n[len(PREFIX):].rsplit(":evaluator-", 1)[0] for n in _named()})


def evaluator_names(study: str) -> list[str]:
    """Names of the study's live evaluators, in index order."""
    mine = [n for n in _named() if n.startswith(f"{PREFIX}{study}:evaluator-")]
    return sorted(mine, key=lambda n: int(n.rsplit("-", 1)[1]))


def inventories(study: str) -> dict:
    """Name -> Inventory of each of the study's live evaluators (a bounded wait)."""
    from .waits import gather
    names = evaluator_names(study)
    return dict(zip(names, gather([get_evaluator(n).inventory.remote() for n in names],
                                  f"the inventories of {len(names)} evaluator(s)", study)))


def get_evaluator(name: str) -> ray.actor.ActorHandle:
    return ray.get_actor(name, namespace=NAMESPACE)


def ensure_evaluators(study: str, n: int, cpus: float = 1.0, gpus: float = 0.0, threads: int | None = None,
                      budget: int | None = None, keep_s: float | None = None, timeout: float | None = None) -> list:
    """The study's evaluators 0..n-1: live ones are reused as they are (their budget included), missing ones
    are created with `budget` bytes for weights and data (default: measured on their device once a model is
    loaded: memory.default_budget). Each evaluator learns how many of them share its node (CPU budgets are
    split among them). Waiting for them to be placed is bounded."""
    from .waits import WAIT_S, gather
    handles = []
    for i in range(n):
        opts = dict(name=_name(study, i), namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                    num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD", max_restarts=1)
        handles.append(EvaluatorActor.options(**opts).remote(threads=threads or max(1, int(cpus)), budget=budget,
                                                             keep_s=keep_s))
    what = f"{n} evaluator(s) of {study} to start ({gpus:g} GPU, {cpus:g} CPU each)"
    nodes = [inv.node_id for inv in gather([h.inventory.remote() for h in handles], what, study, timeout or WAIT_S)]
    gather([h.set_peers.remote(nodes.count(node)) for h, node in zip(handles, nodes)], "the evaluators", study)
    return handles


def shutdown_evaluators(study: str | None = None) -> int:
    """Kill the study's evaluators (every study's when None); returns how many there were."""
    names = evaluator_names(study) if study is not None else _named()
    for name in names:
        ray.kill(get_evaluator(name), no_restart=True)
    return len(names)
