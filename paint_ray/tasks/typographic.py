"""Typographic attacks: write a misleading class name onto a task's images (the paper's case study).

The written class is never the true one and is fixed by the seed and the image's index, so an attacked
split is the same array on every run and every machine.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import PaintRayError, unknown
from .base import ArraySplit, Task
from ..world import render

POSITIONS = ("top", "bottom")


@dataclass(frozen=True)
class TypographicAttack:
    """Writes, in a band at the top or bottom of each image, a class name other than its label."""
    size: int = 8
    position: str = "bottom"
    color: tuple[int, int, int] = (255, 255, 255)
    box_color: tuple[int, int, int] | None = (0, 0, 0)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise unknown("text position", self.position, POSITIONS)

    def misleading_labels(self, labels: np.ndarray, n_classes: int) -> np.ndarray:
        """For image i, (label + 1 + offset_i) mod n with offset_i in [0, n−2]: never the true label.

        The offsets are one seeded stream read in index order, so image i gets the same word whether
        the attack runs on the whole split or only its first i+1 images.
        """
        if n_classes < 2:
            raise PaintRayError(f"a typographic attack needs at least 2 classes, got {n_classes}")
        labels = np.asarray(labels, dtype=np.int64)
        offsets = np.random.default_rng(self.seed).integers(n_classes - 1, size=len(labels))
        return (labels + 1 + offsets) % n_classes

    def apply(self, images: np.ndarray, labels: np.ndarray, classnames: Sequence[str]) -> np.ndarray:
        """A copy of the uint8 N×H×W×3 images, each with a misleading class name written on it."""
        return self.apply_with_labels(images, labels, classnames)[0]

    def apply_with_labels(self, images: np.ndarray, labels: np.ndarray,
                          classnames: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The attacked images and the misleading label written on each."""
        if len(images) != len(labels):
            raise PaintRayError(f"{len(images)} images but {len(labels)} labels")
        wrong = self.misleading_labels(labels, len(classnames))
        out = np.empty_like(images)
        for i, (image, y) in enumerate(zip(images, wrong)):
            out[i] = render.write_text(image, classnames[y], color=self.color, position=self.position,
                                       size=self.size, box_color=self.box_color)
        return out, wrong

    def band(self, height: int) -> slice:
        """Rows this attack may write to on an image `height` pixels tall, whatever the word."""
        return render.text_band(height, self.position, self.size)

    def fingerprint(self) -> str:
        """The parameters that fix every attacked pixel (extends the base task's cache key)."""
        box = "none" if self.box_color is None else ",".join(map(str, self.box_color))
        return (f"typo-s{self.size}-{self.position}-c{','.join(map(str, self.color))}-b{box}"
                f"-seed{self.seed}")


def attacked_task(task: Task, attack: TypographicAttack, train_fraction: float = 1.0) -> Task:
    """`task` with its splits attacked: same labels, class names and templates; name `<task>_attacked`.

    `train_fraction` < 1 attacks only that share of the training images, spread evenly by index (image i is
    attacked when ⌊(i+1)·f⌋ > ⌊i·f⌋), and names the task `<task>_attacked_mixed`: a patch that sees the same
    scenes with and without words learns to ignore the word, not a new look of the scene. Validation and test
    are always attacked in full."""
    if not 0 < train_fraction <= 1:
        raise PaintRayError(f"train_fraction {train_fraction!r}: expected a number in (0, 1]")

    @lru_cache(maxsize=3)
    def load(split: str) -> ArraySplit:
        base = task.split(split)
        if not isinstance(base, ArraySplit):
            raise PaintRayError(f"typographic attack needs in-memory splits; task {task.name!r} split "
                                f"{split!r} is a {type(base).__name__}")
        attacked = attack.apply(base.images, base.labels, task.classnames)
        if split == "train" and train_fraction < 1:
            i = np.arange(len(attacked))
            clean = np.floor((i + 1) * train_fraction) == np.floor(i * train_fraction)
            attacked[clean] = base.images[clean]
        return ArraySplit(attacked, base.labels)

    mixed = train_fraction < 1
    return Task(f"{task.name}_attacked" + ("_mixed" if mixed else ""), task.classnames, task.templates, load,
                f"{task.fingerprint}+{attack.fingerprint()}" + (f"-train{train_fraction:g}" if mixed else ""))
