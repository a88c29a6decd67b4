"""Reuse a study's live evaluators from your own Python session: no weights reloaded, no data re-decoded.

    import paint_ray.live as live
    live.connect()                                   # joins the cluster; the only study there (or name one)
    live.studies()                                   # studies with live evaluators
    live.evaluators()                                # what each evaluator of the study holds
    rows = live.sweep("toy-m", alphas=[0.55, 0.65])  # new α grid on held weight sets and tasks
    rows = live.sweep("toy-m", alphas=[0.6], tasks=["typed_digits"])   # another eval task (head + split sent once)
    live.shutdown()

The implementation is Ray's, so it lives in paint_ray/distributed/live.py.
"""
from .distributed.live import connect, evaluators, shutdown, studies, sweep  # noqa: F401

__all__ = ["connect", "studies", "evaluators", "sweep", "shutdown"]
