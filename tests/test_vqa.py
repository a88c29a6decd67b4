"""VQA as multiple choice: the answer-group restriction, the embedded world's questions, the VQA v2 loader
on a miniature written in the official format, and experiments/vqa.py end to end on the tiny model."""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from PIL import Image

from paint_ray.tasks.answer_groups import cross_entropy, restrict
from paint_ray.errors import PaintRayError
from paint_ray.evaluation.evaluator import ZERO_SHOT, Cell, Evaluator
from paint_ray.caches.eval import task_key
from paint_ray.tasks import get_task



# ---- the restriction ---------------------------------------------------------------------------------------

def test_restriction_picks_the_best_answer_of_the_labels_question_only():
    # classes 0, 1 answer question 0; classes 2, 3 answer question 1
    groups = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[1.0, 2.0, 5.0, 0.0],      # global best is an answer to the other question
                           [3.0, 1.0, 0.0, 4.0]])
    labels = torch.tensor([1, 2])
    assert logits.argmax(-1).tolist() == [2, 3]                               # unrestricted: both wrong
    assert restrict(logits, labels, groups).argmax(-1).tolist() == [1, 3]     # within the question
    assert torch.equal(restrict(logits, labels, None), logits)                # ordinary task: untouched
    # the loss is cross-entropy over the label's group alone, label smoothing over that group only
    for smoothing in (0.0, 0.2):
        expected = torch.stack([
            torch.nn.functional.cross_entropy(logits[:1, :2], torch.tensor([1]), label_smoothing=smoothing),
            torch.nn.functional.cross_entropy(logits[1:, 2:], torch.tensor([0]), label_smoothing=smoothing)])
        assert torch.allclose(cross_entropy(logits, labels, groups, smoothing, "none"), expected)
        assert torch.allclose(cross_entropy(logits, labels, None, smoothing),
                              torch.nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing))


def test_evaluator_and_finetuning_score_within_groups_and_ordinary_tasks_are_unaffected(tiny):
    from paint_ray.caches.eval import prepare_task
    from paint_ray.training.finetune import FinetuneConfig, Finetuner, accuracy
    from paint_ray.models.heads import batch_logits
    from paint_ray.models.normalize import to_model_input
    from paint_ray.weights.patched import PatchedBundle
    data = prepare_task(get_task("colors"), "val", 32)
    torch.manual_seed(0)
    head = torch.nn.functional.normalize(torch.randn(8, tiny.model.text_projection.shape[1]), dim=-1) * 30
    with torch.no_grad():
        logits = batch_logits(tiny.model.visual.eval(), head, to_model_input(data.images, tiny.model.visual))
    plain = (logits.argmax(-1) == data.labels).float().mean().item()
    pairs = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])                             # four two-answer questions
    in_pairs = (restrict(logits, data.labels, pairs).argmax(-1) == data.labels).float().mean().item()
    assert in_pairs > plain                     # random head: chance 1/2 within a pair, 1/8 over all

    ev = Evaluator(tiny.model.visual)
    cases = {"plain": (None, plain), "pairs": (pairs, in_pairs), "own": (torch.arange(8), 1.0),
             "one": (torch.zeros(8, dtype=torch.long), plain)}
    for name, (groups, _) in cases.items():
        ev.add_head(name, head, name, groups)
        ev.add_split(name, "val", data, "colors")
    rows = {r["task"]: r["accuracy"] for r in ev.evaluate([Cell(ZERO_SHOT, 0.0, n, "val") for n in cases])}
    assert rows == pytest.approx({n: acc for n, (_, acc) in cases.items()})
    assert accuracy(tiny.model.visual, head, data, groups=pairs) == pytest.approx(in_pairs)
    assert accuracy(tiny.model.visual, head, data) == pytest.approx(plain)
    bundle = PatchedBundle(                               # what `paint-ray load --evaluate` scores with
        tiny.model, tiny.tokenizer, {"t": head}, {"t": []}, 0.0)
    assert (bundle.predict("t", data.images, pairs, data.labels) == data.labels).float().mean().item() == \
        pytest.approx(in_pairs)
    assert (bundle.predict("t", data.images) == data.labels).float().mean().item() == pytest.approx(plain)
    with pytest.raises(ValueError, match="7 answer groups for a head of 8 classes"):
        ev.add_head("bad", head, "bad", pairs[:7])

    # the fine-tuning loss uses the groups too (and is plain cross-entropy without them)
    cfg = FinetuneConfig(steps=2, warmup_steps=1, batch_size=16, augment_shift=0)
    grouped = Finetuner(copy.deepcopy(tiny.model.visual), head, data, cfg, groups=pairs)
    ordinary = Finetuner(copy.deepcopy(tiny.model.visual), head, data, cfg)
    batch = grouped._next()
    x, routes, y = grouped._input(batch), batch.routes, batch.labels
    with torch.no_grad():
        feats = torch.nn.functional.normalize(grouped.visual(x).float(), dim=-1)
        assert grouped.loss(x, routes, y).item() == pytest.approx(
            cross_entropy(feats @ head.T, y, pairs).item(), rel=1e-5)
        assert ordinary.loss(x, routes, y).item() == pytest.approx(
            torch.nn.functional.cross_entropy(feats @ head.T, y).item(), rel=1e-5)


def test_task_key_changes_with_the_groups_data_and_prompts_and_never_with_the_name():
    task = get_task("colors")
    assert task.answer_groups is None
    vqa = get_task("vqa")
    assert task_key(vqa) != task_key(dataclasses.replace(vqa, answer_groups=(0,) * len(vqa.classnames)))
    assert task_key(vqa) != task_key(dataclasses.replace(vqa, answer_groups=None))
    # the key is content: the data, how it is prepared, the prompts; a task's name is only its label
    assert task_key(dataclasses.replace(task, name="colours")) == task_key(task)
    for change in ({"fingerprint": task.fingerprint + "-other"}, {"templates": ("a {}.",)},
                   {"classnames": task.classnames[::-1]}):
        assert task_key(dataclasses.replace(task, **change)) != task_key(task), change
    from paint_ray.caches import eval as eval_cache
    before = task_key(task)
    with pytest.MonkeyPatch.context() as mp:                          # the eval data prepared another way
        mp.setattr(eval_cache, "PREPARATION", eval_cache.PREPARATION + "-other")
        assert task_key(task) != before
    # the embedded world's fingerprints name their generator's task: two generated tasks never share data
    assert task.fingerprint != get_task("shapes").fingerprint


# ---- the embedded world's questions ------------------------------------------------------------------------

def test_embedded_vqa_classes_are_question_answer_prompts_grouped_by_question():
    from paint_ray.tasks.vqa import VQA_SPLIT_SIZES
    task = get_task("vqa")
    assert len(task.classnames) == 6 * 8 + 8 * 6 + 6 * 3 and len(set(task.classnames)) == len(task.classnames)
    assert task.templates == ("{}",) and task.answer_groups is not None
    by_group: dict[int, list[str]] = {}
    for name, g in zip(task.classnames, task.answer_groups):
        by_group.setdefault(g, []).append(name)
    assert len(by_group) == 20
    for names in by_group.values():               # one question per group, one class per answer
        question = names[0].rsplit("?", 1)[0]
        assert all(n.rsplit("?", 1)[0] == question for n in names)
    colours = ("red", "green", "blue", "yellow", "purple", "orange", "white", "cyan")
    assert by_group[task.answer_groups[task.classnames.index("what colour is the square? red")]] == \
        [f"what colour is the square? {c}" for c in colours]
    assert by_group[task.answer_groups[task.classnames.index("how many stars are there? two")]] == \
        ["how many stars are there? one", "how many stars are there? two", "how many stars are there? three"]
    val = task.split("val")
    assert val.images.shape == (VQA_SPLIT_SIZES["val"], 32, 32, 3) and val.labels.max() < len(task.classnames)
    kinds = [task.classnames[y].split()[1] for y in val.labels]             # colour / shape / many
    assert {k: kinds.count(k) for k in set(kinds)} == {"colour": 200, "shape": 200, "many": 200}
    again = get_task("vqa").split("val")
    assert np.array_equal(again.images, val.images) and np.array_equal(again.labels, val.labels)
    # every prompt fits the toy text tower (12 tokens with start and end), so no answer is cut off
    import open_clip
    tokens = open_clip.get_tokenizer(TINY)(list(task.classnames))
    assert int((tokens != 0).sum(-1).max()) <= 12 and bool((tokens == 49407).any(-1).all())


# ---- VQA v2 on a miniature in the official format -------------------------------------------------------------

TRAIN = [  # (question_id, image_id, question, question_type, multiple_choice_answer)
    (10, 1, "what color is the cat?", "what color is the", "white"),
    (11, 1, "is the cat asleep?", "is the", "yes"),
    (20, 2, "what color is the cat?", "what color is the", "black"),
    (21, 2, "how many dogs are there?", "how many", "2"),
    (30, 3, "what color is the car?", "what color is the", "white"),
    (31, 3, "is the car red?", "is the", "no"),
    (32, 3, "how many cats are there?", "how many", "1"),
]
VAL = [
    (40, 4, "what color is the cat?", "what color is the", "black"),
    (41, 4, "how many dogs are there?", "how many", "3"),     # not a train answer of "how many": left out
    (50, 5, "is the dog asleep?", "is the", "yes"),
    (51, 5, "what color is the bus?", "what color is the", "white"),
    (60, 6, "how many cats are there?", "how many", "2"),
    (61, 6, "what is this?", "what is this", "pizza"),        # a question type train never asks: left out
    (70, 7, "is the car red?", "is the", "yes"),
    (71, 7, "what color is the car?", "what color is the", "black"),
]
# the train answers of each type, most frequent first, ties by text
CANDIDATES = {"what color is the": ("white", "black"), "is the": ("no", "yes"), "how many": ("1", "2")}


def write_vqa(root: Path) -> Path:
    base = root / "vqa"
    for split, rows in (("train", TRAIN), ("val", VAL)):
        for image_id in sorted({r[1] for r in rows}):
            path = base / f"{split}2014" / f"COCO_{split}2014_{image_id:012d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(image_id).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
        questions = [{"image_id": i, "question": q, "question_id": qid} for qid, i, q, _, _ in rows]
        annotations = [{"question_id": qid, "image_id": i, "question_type": t, "answer_type": "other",
                        "multiple_choice_answer": a, "answers": [{"answer": a, "answer_confidence": "yes",
                                                                  "answer_id": k} for k in range(1, 11)]}
                       for qid, i, _, t, a in rows]
        (base / f"v2_OpenEnded_mscoco_{split}2014_questions.json").write_text(
            json.dumps({"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {},
                        "data_subtype": f"{split}2014", "questions": questions}))
        (base / f"v2_mscoco_{split}2014_annotations.json").write_text(
            json.dumps({"info": {}, "license": {}, "data_subtype": f"{split}2014", "annotations": annotations}))
    return root


def test_vqav2_loader_reads_the_official_format(tmp_path):
    from paint_ray.cli.data import summary
    from paint_ray.caches.eval import prepare_task
    root = write_vqa(tmp_path)
    task = get_task("vqav2", str(root))
    built = task.loader.built
    kept = {"train": {r[0] for r in TRAIN}, "val+test": {r[0] for r in VAL} - {41, 61}}
    assert {q.question_id for q in built.questions["train"]} == kept["train"]
    assert {q.question_id for s in ("val", "test") for q in built.questions[s]} == kept["val+test"]
    assert built.dropped["train"] == 0 and built.dropped["val"] + built.dropped["test"] == 2
    rows = {r[0]: r for r in TRAIN + VAL}
    images = {}
    for split in ("train", "val", "test"):
        data = task.split(split)
        assert len(data) == len(built.questions[split])
        for q, (path, y) in zip(built.questions[split], data.samples):
            _, image_id, text, qtype, answer = rows[q.question_id]
            source = "train2014" if split == "train" else "val2014"
            assert path.endswith(f"vqa/{source}/COCO_{source}_{image_id:012d}.jpg")
            assert task.classnames[y] == f"question: {text} answer: {answer}"
            group = {task.classnames[c] for c, g in enumerate(task.answer_groups) if g == task.answer_groups[y]}
            assert group == {f"question: {text} answer: {a}" for a in CANDIDATES[qtype]}
            images.setdefault(split, set()).add(image_id)
    assert images["train"] == {1, 2, 3}
    assert not images["val"] & images["test"] and images["val"] | images["test"] == {4, 5, 6, 7}
    assert len(images["val"]) == 2
    # questions of the same text share their group: 8 distinct questions, 2 candidates each
    assert len(set(task.answer_groups)) == 8 and len(task.classnames) == 16
    prepared = prepare_task(task, "train", 32)
    assert tuple(prepared.images.shape) == (7, 3, 32, 32)
    info = summary("vqav2", str(root))
    assert info["num_classes"] == 16 and "val2014 split by image" in info["val_source"]
    assert get_task("vqav2", str(root)).fingerprint == task.fingerprint


def test_vqav2_candidates_keep_the_k_most_frequent_train_answers():
    from paint_ray.tasks.paper.vqa import Question, candidates
    answers = ["2", "2", "2", "1", "1", "3", "3", "4"]
    train = [Question(i, i, "how many?", "how many", a, "train2014") for i, a in enumerate(answers)]
    assert candidates(train, k=3) == {"how many": ("2", "1", "3")}      # "1" and "3" tie: by text


def one_line_error(root: Path) -> str:
    with pytest.raises(PaintRayError) as e:
        get_task("vqav2", str(root))
    message = str(e.value)
    assert message and "\n" not in message
    return message


def test_vqav2_bad_input_is_one_line_naming_what_is_missing_and_what_is_expected(tmp_path):
    assert "give --data-root DIR" in str(pytest.raises(PaintRayError, get_task, "vqav2").value)
    assert "does not exist" in one_line_error(tmp_path / "nowhere")
    root = write_vqa(tmp_path / "a")
    for victim in ("vqa/val2014", "vqa/v2_mscoco_train2014_annotations.json"):
        target = root / victim
        aside = target.with_name(target.name + ".aside")
        target.rename(aside)
        message = one_line_error(root)
        assert f"{target} is missing" in message and "v2_OpenEnded_mscoco_{train,val}2014_questions.json" in message
        aside.rename(target)
    questions = root / "vqa/v2_OpenEnded_mscoco_val2014_questions.json"
    good = questions.read_text()
    expected_format = '{"questions": [{"image_id": int, "question": str, "question_id": int}, …]}'
    for text, expected in (('{"questions": [', ["is not valid JSON", expected_format]),
                           ('{"questions": 3}', ["has no list 'questions'", expected_format]),
                           ('{"questions": [{"image_id": 4, "question_id": 40}]}',
                            ["questions[0] is", expected_format]),
                           ('{"questions": [{"image_id": 4, "question": "why?", "question_id": 99}]}',
                            ["question_id 99", "has no annotation in", "v2_mscoco_val2014_annotations.json"])):
        questions.write_text(text)
        message = one_line_error(root)
        assert str(questions) in message and all(e in message for e in expected), message
    questions.write_text(good)
    assert len(get_task("vqav2", str(root)).classnames) == 16


# ---- experiments/vqa.py end to end -------------------------------------------------------------------------

def _script():
    from conftest import load_script
    return load_script("vqa")


QUICK = ["--local", "--models", TINY, "--steps", "3", "--warmup-steps", "1", "--alphas", "0,1", "--no-mlflow",
         "--quiet"]


@pytest.mark.slow
def test_vqa_script_runs_locally_and_scores_within_each_question(tiny, tmp_path, capsys, monkeypatch):
    from paint_ray.caches.heads import cached_head
    from paint_ray.cli.study import main_for
    from paint_ray.caches.eval import prepare_task
    from paint_ray.training.finetune import accuracy
    from paint_ray.tasks import vqa
    for split, n in {"train": 300, "val": 150, "test": 300}.items():    # small splits (in the fingerprint too)
        monkeypatch.setitem(vqa.VQA_SPLIT_SIZES, split, n)
    script = _script()
    argv = [*QUICK, "--supported", "digits_0to4", "--out", str(tmp_path)]
    assert main_for("vqa", script.PRESETS, script.__doc__, argv, script.report) == 0
    text = capsys.readouterr().out
    assert f"{TINY}: vqa " in text and "supported" in text and "paper: VQA +18 points" in text
    summary = pd.read_parquet(tmp_path / "vqa_summary.parquet")
    assert summary[["patch_zero_shot", "patch_patched", "drop", "digits_0to4_patched"]].notna().all().all()
    rows = pd.read_parquet(tmp_path / "results")
    assert set(rows.eval_task) == {"vqa", "digits_0to4"} and set(rows[rows.eval_task == "vqa"].n) == {150, 300}
    # the backend scored each example against its own question's answers: the zero-shot row equals that
    task = get_task("vqa")
    test = prepare_task(task, "test", 32)
    head = cached_head(tiny, task)
    zero = rows[(rows.eval_task == "vqa") & (rows.split == "test") & (rows.alpha == 0.0)].accuracy.iloc[0]
    grouped = accuracy(tiny.model.visual, head, test, groups=task.answer_groups)
    assert zero == pytest.approx(grouped) and grouped != pytest.approx(accuracy(tiny.model.visual, head, test))


@pytest.mark.slow
def test_vqa_script_paper_preset_reads_a_vqa_v2_miniature(tiny, tmp_path, capsys):
    from paint_ray.cli.study import main_for
    script = _script()
    root = write_vqa(tmp_path / "data")
    argv = [*QUICK, "--preset", "paper", "--data-root", str(root), "--supported", "digits_0to4",
            "--out", str(tmp_path / "out")]
    assert main_for("vqa", script.PRESETS, script.__doc__, argv, script.report) == 0
    assert f"{TINY}: vqav2 " in capsys.readouterr().out
    rows = pd.read_parquet(tmp_path / "out" / "results")
    n = rows[(rows.eval_task == "vqav2")].groupby("split").n.first().to_dict()
    built = get_task("vqav2", str(root)).loader.built
    assert n == {"val": len(built.questions["val"]), "test": len(built.questions["test"])}
