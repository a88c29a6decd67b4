import re

import numpy as np
import pytest

from paint_ray.tasks import get_task, task_names
from paint_ray.tasks.embedded import COUNTING_CLASSES, DIGIT_SPLITS, SPLIT_SIZES, SUPPORTED_SPLIT_SIZES
from paint_ray.world.corpus import COUNT_WORDS, generate_corpus


def test_corpus_same_seed_identical_other_seed_differs():
    a, b = generate_corpus(300, seed=5, progress=False), generate_corpus(300, seed=5, progress=False)
    c = generate_corpus(300, seed=6, progress=False)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    assert a.images.shape == (300, 32, 32, 3) and a.images.dtype == np.uint8


def test_counting_counts_are_never_captioned_as_counts():
    captions = generate_corpus(3000, seed=0, progress=False).captions
    unseen = [COUNT_WORDS[c] for c in COUNTING_CLASSES]
    # a count word followed by a plural noun is a count; "the digit four" is a digit name, not a count
    counted = [c for c in captions if re.match(rf"^(a photo of )?({'|'.join(unseen)}) \w+s\b", c)]
    assert counted == []
    assert any(re.match(r"^(a photo of )?(two|three) ", c) for c in captions)


@pytest.mark.parametrize("name", ["shapes", "colors", "counting", "typed_digits"])
def test_generated_tasks_deterministic_with_expected_sizes(name):
    task = get_task(name)
    sizes = SUPPORTED_SPLIT_SIZES if name == "shapes" else SPLIT_SIZES   # shapes: the budget views' task
    for split, n in sizes.items():
        data = task.split(split)
        assert len(data) == n
        # counting: scored on counts 4-6 of 1-6, trained on all six
        shown = {3, 4, 5} if name == "counting" and split != "train" else set(range(len(task.classnames)))
        assert set(np.unique(data.labels)) == shown
    again = get_task(name).split("val")
    assert np.array_equal(again.images, task.split("val").images)
    assert not np.array_equal(task.split("val").images[:50], task.split("test").images[:50])


def test_counting_heads_score_every_count_while_images_show_their_own():
    """The patch task is scored on counts 4-6 and trained on 1-6, the control shows counts 1-3, and both are
    scored against one to six: a model patched on counting must still tell four from two."""
    unseen, seen = get_task("counting"), get_task("counting_seen")
    assert unseen.classnames == seen.classnames == ("one", "two", "three", "four", "five", "six")
    assert unseen.templates == seen.templates
    for split in SPLIT_SIZES:
        u, s = unseen.split(split).labels, seen.split(split).labels
        assert set(np.unique(u)) == ({0, 1, 2, 3, 4, 5} if split == "train" else {3, 4, 5})
        assert set(np.unique(s)) == {0, 1, 2}
        counts = np.bincount(u, minlength=6)
        assert counts[counts > 0].min() >= counts.max() - 1        # balanced


def test_digits_is_sklearn_with_disjoint_deterministic_splits():
    from sklearn.datasets import load_digits
    task = get_task("digits")
    parts = {s: task.split(s) for s in DIGIT_SPLITS}
    assert {s: len(p) for s, p in parts.items()} == DIGIT_SPLITS
    assert sum(DIGIT_SPLITS.values()) == len(load_digits().target)
    flat = {s: {p.images[i].tobytes() for i in range(len(p))} for s, p in parts.items()}
    assert not (flat["train"] & flat["test"]) and not (flat["val"] & flat["test"])
    assert task.classnames[3] == "three" and set(np.unique(parts["test"].labels)) == set(range(10))


def test_digit_range_tasks_split_digits_into_disjoint_classes():
    full = get_task("digits").split("test")
    low, high = get_task("digits_0to4"), get_task("digits_5to9")
    assert low.classnames == ("zero", "one", "two", "three", "four")
    assert high.classnames == ("five", "six", "seven", "eight", "nine")
    a, b = low.split("test"), high.split("test")
    assert len(a) + len(b) == len(full)           # every scan lands in exactly one of the two
    assert set(np.unique(a.labels)) == set(range(5)) == set(np.unique(b.labels))
    # relabelled from 0, images unchanged: each of b's scans is a full-task scan of class label + 5
    pos = {full.images[i].tobytes(): int(full.labels[i]) for i in range(len(full))}
    assert all(pos[b.images[i].tobytes()] == b.labels[i] + 5 for i in range(len(b)))


def test_every_task_has_templates_with_one_placeholder():
    for name in ["shapes", "colors", "counting", "digits", "typed_digits", "digits_0to4", "digits_5to9"]:
        task = get_task(name)
        assert all(t.count("{}") == 1 for t in task.templates)
        assert len(set(task.classnames)) == len(task.classnames)


def test_unknown_task_names_valid_choices_and_closest():
    from paint_ray.errors import PaintRayError
    with pytest.raises(PaintRayError) as e:
        get_task("digitz")
    msg = str(e.value)
    assert "'digitz'" in msg and "did you mean 'digits'" in msg and "shapes" in msg and "\n" not in msg
    assert "digits" in task_names()


def test_clip_loss_with_only_own_pairs_positive_is_clips_loss():
    import open_clip
    import torch

    from paint_ray.models.pretrain import clip_loss
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(16, 8, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(16, 8, generator=gen), dim=-1)
    scale = torch.tensor(20.0)
    expected = open_clip.ClipLoss()(img, txt, scale)
    assert torch.allclose(clip_loss(img, txt, scale, torch.arange(16)), expected, atol=1e-6)
    assert torch.equal(clip_loss(img, txt, scale), expected)
    # two items with one caption: each is a positive of the other's text, so the loss differs from CLIP's
    ids = torch.arange(16)
    ids[1] = 0
    shared = clip_loss(img, txt, scale, ids)
    assert not torch.allclose(shared, expected, atol=1e-3)
    # and equals CLIP's loss when the target spreads over both (computed by hand for the two rows)
    logits = scale * img @ txt.T
    target = torch.eye(16)
    target[0, :2] = target[1, :2] = 0.5
    by_hand = (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(shared, by_hand, atol=1e-6)
