"""Named, detached evaluator actors: thin Ray wrappers around EvaluatorHost, one per GPU or CPU slot.

They outlive the driver that made them (in the `paint_ray` namespace), so a later Python session can
find them and run more sweeps on weights and data they already hold.
"""
from __future__ import annotations

import ray

from ..evaluator_host import EvaluatorHost
from .cluster import NAMESPACE

PREFIX = "paint_ray-evaluator-"


@ray.remote
class EvaluatorActor(EvaluatorHost):
    """EvaluatorHost as an actor: every public method becomes remote; the inventory says where it runs."""

    def inventory(self) -> dict:
        return {**super().inventory(), "node_id": ray.get_runtime_context().get_node_id()}


def evaluator_names() -> list[str]:
    """Names of the live evaluator actors in the paint_ray namespace."""
    # core API: works without the dashboard (the state API needs it)
    named = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in named if a["namespace"] == NAMESPACE and a["name"].startswith(PREFIX))


def get_evaluator(name: str) -> ray.actor.ActorHandle:
    return ray.get_actor(name, namespace=NAMESPACE)


def ensure_evaluators(n: int, cpus: float = 1.0, gpus: float = 0.0, threads: int | None = None) -> list:
    """Evaluators 0..n-1: existing ones are reused as they are, missing ones are created."""
    handles = []
    for i in range(n):
        opts = dict(name=f"{PREFIX}{i}", namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                    num_cpus=cpus, num_gpus=gpus, scheduling_strategy="SPREAD", max_restarts=1)
        handles.append(EvaluatorActor.options(**opts).remote(threads=threads or max(1, int(cpus))))
    ray.get([h.inventory.remote() for h in handles])   # wait until placed
    return handles


def shutdown_evaluators() -> int:
    """Kill every live evaluator; returns how many there were."""
    names = evaluator_names()
    for name in names:
        ray.kill(get_evaluator(name), no_restart=True)
    return len(names)
