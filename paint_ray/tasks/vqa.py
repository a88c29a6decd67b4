"""Visual question answering in the embedded world: questions about a named object in a generated scene.

Three kinds of question, each about an object the scene names unambiguously:

    what colour is the {shape}?          one of the 8 colours (the only object of that shape)
    what shape is the {colour} object?   one of the 6 shapes (the only object of that colour)
    how many {shapes} are there?         one, two or three (all of that shape; other shapes may be there)

Distractor objects have other shapes and other colours than the named one, so the image alone does not say
which object is asked about: the question does. As in PAINT's VQA case study the text tower is the head:
every (question, answer) pair is a class whose prompt is "{question} {answer}", and it belongs to its
question's answer group, so an example is scored only against its own question's answers
(answer_groups.py). The prompts carry no "question:"/"answer:" labels because the toy models' text tower
reads at most 10 tokens and would cut the answer off. Splits are seeded like the other generated tasks.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..identity import digest
from ..world import render
from ..world.corpus import COUNT_WORDS, plural
from .base import ArraySplit, Task
from .embedded import SPLIT_SEEDS, WORLD_VERSION

VQA_VERSION = "1"                      # bumped whenever a question, an answer or a scene rule changes
VQA_SPLIT_SIZES = {"train": 4000, "val": 600, "test": 1200}
KINDS = ("colour", "shape", "count")
COUNTS = (1, 2, 3)                     # counts the pretraining captions use
MAX_DISTRACTORS = 2                    # other objects besides the named one(s)
COLOR_NAMES = tuple(render.COLORS)


def questions() -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(kind, subject, question, answers) for every question the world asks, in class order."""
    out = [("colour", s, f"what colour is the {s}?", COLOR_NAMES) for s in render.SHAPES]
    out += [("shape", c, f"what shape is the {c} object?", render.SHAPES) for c in COLOR_NAMES]
    out += [("count", s, f"how many {plural(s)} are there?", tuple(COUNT_WORDS[n] for n in COUNTS))
            for s in render.SHAPES]
    return out


def classes() -> tuple[tuple[str, ...], tuple[int, ...], dict[tuple[str, str, str], int]]:
    """Class prompts, each class's question (group) id, and (kind, subject, answer) -> class index."""
    names, groups, index = [], [], {}
    for g, (kind, subject, question, answers) in enumerate(questions()):
        for answer in answers:
            index[(kind, subject, answer)] = len(names)
            names.append(f"{question} {answer}")
            groups.append(g)
    return tuple(names), tuple(groups), index


def _others(rng: np.random.Generator, pool: tuple[str, ...], exclude: str, k: int) -> list[str]:
    return list(rng.choice([p for p in pool if p != exclude], size=k, replace=False))


def _example(rng: np.random.Generator, kind: str, index: dict) -> tuple[np.ndarray, int]:
    """One scene and its class: the named object(s) plus 0..MAX_DISTRACTORS others, shuffled in place."""
    k = int(rng.integers(MAX_DISTRACTORS + 1))
    if kind == "count":
        shape, n = render.SHAPES[rng.integers(len(render.SHAPES))], int(rng.choice(COUNTS))
        color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        k = min(k, 1)                  # at most four objects, as in the counting tasks
        objects = [(shape, color)] * n + list(zip(_others(rng, render.SHAPES, shape, k),
                                                  _others(rng, COLOR_NAMES, color, k)))
        key, radius = ("count", shape, COUNT_WORDS[n]), float(rng.uniform(3.0, 4.0))
    else:
        shape = render.SHAPES[rng.integers(len(render.SHAPES))]
        color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
        objects = [(shape, color)] + list(zip(_others(rng, render.SHAPES, shape, k),
                                              _others(rng, COLOR_NAMES, color, k)))
        key = ("colour", shape, color) if kind == "colour" else ("shape", color, shape)
        radius = float(rng.uniform(4.5, 7.0)) if k == 0 else float(rng.uniform(3.5, 5.0))
    order = rng.permutation(len(objects))
    return render.scene(rng, [objects[i] for i in order], radius), index[key]


def vqa_task(seed: int = 0) -> Task:
    """The embedded world's VQA task (name `vqa`): 20 questions, 114 question-answer classes."""
    names, groups, index = classes()
    params = {"sizes": VQA_SPLIT_SIZES, "counts": COUNTS, "distractors": MAX_DISTRACTORS, "classes": names}

    @lru_cache(maxsize=3)
    def load(split: str) -> ArraySplit:
        rng = np.random.default_rng([seed, SPLIT_SEEDS[split], sum(map(ord, "vqa"))])
        n = VQA_SPLIT_SIZES[split]
        kinds = np.arange(n) % len(KINDS)        # a third of the questions of each kind
        rng.shuffle(kinds)
        images, labels = zip(*(_example(rng, KINDS[k], index) for k in kinds))
        return ArraySplit(np.stack(images), np.asarray(labels, dtype=np.int64))

    return Task("vqa", names, ("{}",), load, f"world{WORLD_VERSION}-vqa{VQA_VERSION}-{seed}-{digest(params, 8)}",
                answer_groups=groups)
