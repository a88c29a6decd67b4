"""VQA v2 (the paper's VQA case study) as a multiple-choice task, read from the official files.

Layout under DATA_ROOT/vqa/ (the files of visualqa.org and the COCO 2014 images, unchanged):

    v2_OpenEnded_mscoco_{train,val}2014_questions.json  {"questions": [{"image_id", "question", "question_id"}]}
    v2_mscoco_{train,val}2014_annotations.json          {"annotations": [{"question_id", "image_id",
                                                          "multiple_choice_answer", "answers", "answer_type",
                                                          "question_type"}]}
    {train,val}2014/COCO_{train,val}2014_{image_id:012d}.jpg

Multiple choice. A question's candidate answers are the CANDIDATES (10) most frequent
`multiple_choice_answer`s among the train2014 questions of its `question_type` ("what color is the", "how
many", "is the", ...), ties broken by the answer's text. They are counted on train2014 only, so validation
and test never shape them. A question whose answer is not among its candidates is left out (appending the
ground truth would make it the odd one out, a give-away). Each class is one (question, candidate) prompt
"question: {question} answer: {candidate}", shared by every question with the same text and type; its group
is that question, and an example is scored only against its question's candidates (answer_groups.py).

Splits. train2014 is train. val2014 is split by image: its sorted image ids are permuted with seed 0, the
first half is val and the rest test, so no image is in both. The head has one row per (question,
candidate), so each split is capped at MAX_QUESTIONS questions, a seeded subsample (seed 0) of those kept.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import PaintRayError
from ...identity import digest
from ..base import Task
from .common import FileDataset, Spec, check_layout, fingerprint, read_text, shown

NAME = "vqav2"
VERSION = "1"                 # bumped whenever candidates, classes or splits are formed differently
CANDIDATES = 10
MAX_QUESTIONS = {"train": 10_000, "val": 2_000, "test": 5_000}
SEED = 0
QUESTIONS = "vqa/v2_OpenEnded_mscoco_{}2014_questions.json"
ANNOTATIONS = "vqa/v2_mscoco_{}2014_annotations.json"
SPEC = Spec("VQA v2", tuple(f.format(s) for s in ("train", "val") for f in (QUESTIONS, ANNOTATIONS)),
            ("vqa/train2014", "vqa/val2014"),
            "vqa/{v2_OpenEnded_mscoco_{train,val}2014_questions.json, v2_mscoco_{train,val}2014_annotations.json, "
            "train2014/COCO_train2014_<12-digit image id>.jpg, val2014/COCO_val2014_<12-digit image id>.jpg}")
_WHAT = {"questions": '{"questions": [{"image_id": int, "question": str, "question_id": int}, …]}',
         "annotations": '{"annotations": [{"question_id": int, "image_id": int, "multiple_choice_answer": str, '
                        '"question_type": str, …}, …]}'}
_FIELDS = {"questions": {"image_id": int, "question": str, "question_id": int},
           "annotations": {"question_id": int, "multiple_choice_answer": str, "question_type": str}}


@dataclass(frozen=True)
class Question:
    question_id: int
    image_id: int
    text: str
    qtype: str
    answer: str
    source: str               # train2014 or val2014


def _records(path: Path, kind: str) -> list[dict]:
    """The list under `kind` in one official JSON file, every record checked for the fields used here."""
    what = _WHAT[kind]
    try:
        data = json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise PaintRayError(f"{NAME}: {path} is not valid JSON ({e.msg} at line {e.lineno}); expected {what}") from e
    records = data.get(kind) if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise PaintRayError(f"{NAME}: {path} has no list {kind!r} (it holds {shown(data, 60)}); expected {what}")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not all(isinstance(r.get(k), t) and not isinstance(r.get(k), bool)
                                              for k, t in _FIELDS[kind].items()):
            raise PaintRayError(f"{NAME}: {path}: {kind}[{i}] is {shown(r, 60)}; expected {what}")
    return records


def _read(root: Path, source: str) -> list[Question]:
    """One official split (train2014 or val2014): questions joined with their annotations by question_id."""
    split = source.removesuffix("2014")
    answers = {r["question_id"]: r for r in _records(root / ANNOTATIONS.format(split), "annotations")}
    out = []
    for r in _records(root / QUESTIONS.format(split), "questions"):
        a = answers.get(r["question_id"])
        if a is None:
            raise PaintRayError(f"{NAME}: question_id {r['question_id']} of {root / QUESTIONS.format(split)} has no "
                                f"annotation in {root / ANNOTATIONS.format(split)}; expected one per question")
        out.append(Question(r["question_id"], r["image_id"], r["question"].strip(), a["question_type"],
                            a["multiple_choice_answer"].strip(), source))
    return sorted(out, key=lambda q: q.question_id)


def candidates(train: list[Question], k: int = CANDIDATES) -> dict[str, tuple[str, ...]]:
    """question_type -> its k most frequent train answers (ties by answer text)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        counts[q.qtype][q.answer] += 1
    return {t: tuple(a for a, _ in sorted(c.items(), key=lambda x: (-x[1], x[0]))[:k]) for t, c in counts.items()}


def image_split(image_ids: list[int], seed: int = SEED) -> tuple[set[int], set[int]]:
    """(val, test) image ids of val2014: a seeded permutation of the sorted ids, first half val."""
    ids = sorted(set(image_ids))
    perm = np.random.default_rng(seed).permutation(len(ids))
    half = len(ids) // 2
    return {ids[i] for i in perm[:half]}, {ids[i] for i in perm[half:]}


@dataclass(frozen=True)
class Built:
    classnames: tuple[str, ...]
    groups: tuple[int, ...]
    samples: dict[str, list[tuple[str, int]]]      # split -> (image path, class index)
    questions: dict[str, list[Question]]
    dropped: dict[str, int]                        # questions left out: answer not among the candidates


def image_path(root: Path, q: Question) -> Path:
    return root / "vqa" / q.source / f"COCO_{q.source}_{q.image_id:012d}.jpg"


@lru_cache(maxsize=2)
def build(root: Path, fingerprint_: str) -> Built:
    """Questions, classes and splits (memoised per data fingerprint: the official files are large)."""
    train, val2014 = _read(root, "train2014"), _read(root, "val2014")
    cands = candidates(train)
    val_ids, _ = image_split([q.image_id for q in val2014])
    sources = {"train": train, "val": [q for q in val2014 if q.image_id in val_ids],
               "test": [q for q in val2014 if q.image_id not in val_ids]}
    names: list[str] = []
    groups: list[int] = []
    first: dict[tuple[str, str], int] = {}     # (question text, type) -> its first class; its candidates follow
    samples, kept_questions, dropped = {}, {}, {}
    for i, (split, qs) in enumerate(sources.items()):
        kept = [q for q in qs if q.answer in cands.get(q.qtype, ())]
        dropped[split] = len(qs) - len(kept)
        if len(kept) > MAX_QUESTIONS[split]:
            pick = np.random.default_rng([SEED, i]).choice(len(kept), MAX_QUESTIONS[split], replace=False)
            kept = [kept[j] for j in sorted(pick)]
        for q in kept:
            if (q.text, q.qtype) not in first:
                first[(q.text, q.qtype)] = len(names)
                names += [f"question: {q.text} answer: {a}" for a in cands[q.qtype]]
                groups += [len(first) - 1] * len(cands[q.qtype])
        samples[split] = [(str(image_path(root, q)), first[(q.text, q.qtype)] + cands[q.qtype].index(q.answer))
                          for q in kept]
        kept_questions[split] = kept
    if not samples["train"]:
        raise PaintRayError(f"{NAME}: {root / QUESTIONS.format('train')} lists no question; expected "
                            f"{_WHAT['questions']}")
    return Built(tuple(names), tuple(groups), samples, kept_questions, dropped)


class VQALoader:
    """Task.loader of vqav2: the split's (image, class) pairs, read lazily."""
    val_indices = None
    val_source = (f"val2014 split by image: sorted image ids permuted with seed {SEED}, first half val, rest test; "
                  f"each split capped at {MAX_QUESTIONS} questions (seeded subsample)")

    def __init__(self, built: Built):
        self.built = built

    def __call__(self, split: str) -> FileDataset:
        return FileDataset(self.built.samples[split])


def vqav2_task(data_root: str | None = None) -> Task:
    """VQA v2 as a multiple-choice task (see the module docstring); one-line errors for a bad layout or file."""
    root = check_layout(NAME, SPEC, data_root)
    params = {"version": VERSION, "candidates": CANDIDATES, "max_questions": MAX_QUESTIONS, "seed": SEED}
    fp = f"{fingerprint(NAME, SPEC, root)}-{digest(params, 8)}"
    built = build(root, fp)
    return Task(NAME, built.classnames, ("{}",), VQALoader(built), fp, answer_groups=built.groups)
