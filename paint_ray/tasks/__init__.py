"""The task registry: every task is looked up by name here.

May import: errors, identity, paths, world
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import unknown
from .base import SPLITS, ArraySplit, Task
from .embedded import EMBEDDED_TASKS

# name -> factory(data_root) -> Task. Embedded tasks ignore the data root.
_REGISTRY: dict[str, Callable[..., Task]] = {}


def register(name: str, factory: Callable[..., Task]) -> None:
    _REGISTRY[name] = factory


for _name, _factory in EMBEDDED_TASKS.items():
    register(_name, lambda data_root=None, _f=_factory: _f())


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str, data_root: str | None = None) -> Task:
    """The task called `name`; a one-line PaintRayError names the valid tasks otherwise."""
    if name not in _REGISTRY:
        raise unknown("task", name, _REGISTRY)
    return _REGISTRY[name](data_root=data_root)


__all__ = ["SPLITS", "ArraySplit", "Task", "get_task", "register", "task_names"]

from .paper import PAPER_TASKS  # noqa: E402  (after register: the paper package imports .base only)
for _name, _factory in PAPER_TASKS.items():
    register(_name, _factory)


def _attacked(base: str, train_fraction: float = 1.0) -> Callable[..., Task]:
    def factory(data_root: str | None = None) -> Task:
        from .typographic import TypographicAttack, attacked_task  # lazy: typographic imports .base
        return attacked_task(get_task(base, data_root), TypographicAttack(), train_fraction)
    return factory


# Typographic-attack case study: embedded tasks with a misleading class name written on every image, and
# (`_mixed`) the same with half the training images left clean.
for _base in ("shapes", "colors", "digits"):
    register(f"{_base}_attacked", _attacked(_base))
    register(f"{_base}_attacked_mixed", _attacked(_base, 0.5))

# VQA case study: questions about the embedded world's scenes (multiple choice; its paper task is vqav2).
from .vqa import vqa_task  # noqa: E402
register("vqa", lambda data_root=None: vqa_task())
