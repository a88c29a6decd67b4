"""What a task is: class names, prompt templates and three deterministic splits."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ArraySplit:
    """A split already in memory as uint8 images (N x H x W x 3) and integer labels."""
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])


# A split is either an ArraySplit or any map-style dataset yielding (PIL image or HxWx3 array, label).
SplitData = Any


@dataclass(frozen=True)
class Task:
    """A classification task. Templates are format strings with one '{}' for the class name."""
    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    loader: Callable[[str], SplitData] = field(repr=False, compare=False)
    # What identifies the data by content (generator, version and seed, or the dataset's files), never by
    # where it lies; two tasks with different data never share one. '' means unknown: nothing is cached.
    fingerprint: str = ""
    # Multiple-choice tasks (VQA): the question each class (a question-answer pair) belongs to. An
    # example is scored only against its label's group (answer_groups.py); None for ordinary tasks.
    answer_groups: tuple[int, ...] | None = field(default=None, repr=False)

    def split(self, split: str) -> SplitData:
        if split not in SPLITS:
            from ..errors import unknown
            raise unknown("split", split, SPLITS)
        return self.loader(split)

    def prompts(self, classname: str) -> list[str]:
        return [t.format(classname) for t in self.templates]

    @property
    def prompt_key(self) -> str:
        """What the task's zero-shot head depends on besides the model: class names, templates and, for a
        multiple-choice task, which answers each example is scored against."""
        from ..identity import digest
        groups = None if self.answer_groups is None else [int(g) for g in self.answer_groups]
        return digest([list(self.classnames), list(self.templates), groups])


def split_indices(n: int, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes from a seeded permutation of range(n)."""
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for s in sizes:
        out.append(np.sort(perm[start:start + s]))
        start += s
    return out
