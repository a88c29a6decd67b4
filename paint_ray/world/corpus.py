"""The pretraining corpus of the embedded world: captioned scenes from a small grammar.

Captions mention counts one to three only, so counting four to six is a task pretraining never saw
(the paper's counting case). Handwritten-style digits and rendered words teach the text tower digit
names and reading, which gives the real scikit-learn digits a partial zero-shot accuracy and makes
typographic attacks possible, as with real CLIP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from . import render

COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PRETRAIN_COUNTS = (1, 2, 3)
SIZES = {"small": (3.5, 5.0), "large": (6.5, 9.0)}
GENERIC_NOUNS = ("shape", "object", "thing")


def plural(shape: str) -> str:
    return shape + ("es" if shape == "cross" else "s")


@dataclass
class Corpus:
    images: np.ndarray      # uint8, N x 32 x 32 x 3
    captions: list[str]


def _single(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    shape = render.SHAPES[rng.integers(len(render.SHAPES))]
    color = list(render.COLORS)[rng.integers(len(render.COLORS))]
    size = list(SIZES)[rng.integers(2)]
    img = render.scene(rng, [(shape, color)], float(rng.uniform(*SIZES[size])))
    noun = GENERIC_NOUNS[rng.integers(len(GENERIC_NOUNS))]
    caption = [f"a {size} {color} {shape}", f"a {color} {shape}", f"a {shape}", f"a {size} {shape}",
               f"something {color}", f"a {color} {noun}", f"a photo of a {color} {shape}",
               f"a photo of a {shape}", f"one {color} {shape}"][rng.integers(9)]
    return img, caption


def _several_same(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    n = int(rng.choice(PRETRAIN_COUNTS[1:]))
    shape = render.SHAPES[rng.integers(len(render.SHAPES))]
    color = list(render.COLORS)[rng.integers(len(render.COLORS))]
    img = render.scene(rng, [(shape, color)] * n, float(rng.uniform(3.5, 5.5)))
    w = COUNT_WORDS[n]
    noun = GENERIC_NOUNS[rng.integers(len(GENERIC_NOUNS))]
    caption = [f"{w} {color} {plural(shape)}", f"{w} {plural(shape)}", f"{w} {noun}s",
               f"a photo of {w} {noun}s", f"{w} {color} {noun}s"][rng.integers(5)]
    return img, caption


def _pair(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    s1, s2 = rng.choice(render.SHAPES, 2, replace=False)
    c1, c2 = rng.choice(list(render.COLORS), 2, replace=False)
    img = render.scene(rng, [(s1, c1), (s2, c2)], float(rng.uniform(3.5, 5.5)))
    return img, f"a {c1} {s1} and a {c2} {s2}"


def _digit(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    d = int(rng.integers(10))
    img = render.handwritten_digit(rng, d, box=int(rng.integers(18, 27)))
    caption = [f"the digit {COUNT_WORDS[d]}", f"the number {d}", f"the number {COUNT_WORDS[d]}",
               f"a handwritten {COUNT_WORDS[d]}"][rng.integers(4)]
    return img, caption


def _word(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    shape = render.SHAPES[rng.integers(len(render.SHAPES))]
    color = list(render.COLORS)[rng.integers(len(render.COLORS))]
    img = render.scene(rng, [(shape, color)], float(rng.uniform(3.5, 5.5)))
    vocabulary = render.SHAPES + tuple(render.COLORS)
    word = vocabulary[rng.integers(len(vocabulary))]
    img = render.write_text(img, word, position=("top", "bottom")[rng.integers(2)])
    return img, [f"a {color} {shape} and the word {word}", f"the word {word}"][rng.integers(2)]


KINDS = ((_single, 0.35), (_several_same, 0.2), (_pair, 0.1), (_digit, 0.2), (_word, 0.15))


def generate_corpus(n: int, seed: int = 0, progress: bool = True) -> Corpus:
    """n captioned images; the same (n, seed) gives identical arrays and captions."""
    rng = np.random.default_rng(seed)
    makers, weights = zip(*KINDS)
    choice = rng.choice(len(makers), size=n, p=np.array(weights) / sum(weights))
    images = np.empty((n, render.SIZE, render.SIZE, 3), dtype=np.uint8)
    captions = []
    for i in tqdm(range(n), desc="generating world", disable=not progress, leave=False):
        images[i], caption = makers[choice[i]](rng)
        captions.append(caption)
    return Corpus(images, captions)
