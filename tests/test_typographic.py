"""Typographic attacks: deterministic, confined to the text band, never the true class; attacked tasks."""
from __future__ import annotations

import numpy as np
import pytest

from paint_ray.errors import PaintRayError
from paint_ray.tasks import ArraySplit, Task, get_task, task_names
from paint_ray.tasks.embedded import SUPPORTED_SPLIT_SIZES, shapes_task
from paint_ray.tasks.typographic import TypographicAttack, attacked_task
from paint_ray.world import render


@pytest.fixture(scope="module")
def shapes():
    """The first 50 validation images of `shapes`, their labels and class names."""
    task = shapes_task()
    split = task.split("val")
    return split.images[:50], split.labels[:50], task.classnames


def test_same_seed_same_arrays_other_seed_other_words(shapes):
    images, labels, names = shapes
    a, wrong_a = TypographicAttack(seed=0).apply_with_labels(images, labels, names)
    b, wrong_b = TypographicAttack(seed=0).apply_with_labels(images, labels, names)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(wrong_a, wrong_b)
    c, wrong_c = TypographicAttack(seed=1).apply_with_labels(images, labels, names)
    assert (wrong_c != wrong_a).any()
    assert not np.array_equal(c, a)


def test_word_of_an_image_does_not_depend_on_how_many_are_attacked(shapes):
    images, labels, names = shapes
    attack = TypographicAttack(seed=3)
    np.testing.assert_array_equal(attack.apply(images[:20], labels[:20], names),
                                  attack.apply(images, labels, names)[:20])


@pytest.mark.parametrize("position,box", [("bottom", (0, 0, 0)), ("top", (0, 0, 0)), ("bottom", None)])
def test_only_the_text_band_changes(shapes, position, box):
    images, labels, names = shapes
    attack = TypographicAttack(position=position, box_color=box)
    before = images.copy()
    out = attack.apply(images, labels, names)
    np.testing.assert_array_equal(images, before)  # the input is not modified
    band = attack.band(images.shape[1])
    outside = np.ones(images.shape[1], dtype=bool)
    outside[band] = False
    np.testing.assert_array_equal(out[:, outside], images[:, outside])
    assert all((out[i, band] != images[i, band]).any() for i in range(len(images)))


def test_written_word_is_a_wrong_class_and_is_what_is_returned(shapes):
    images, labels, names = shapes
    out, wrong = TypographicAttack().apply_with_labels(images, labels, names)
    assert (wrong != labels).all()
    assert ((wrong >= 0) & (wrong < len(names))).all()
    for i in range(len(images)):
        np.testing.assert_array_equal(out[i], render.write_text(images[i], names[wrong[i]]))
        assert not np.array_equal(out[i], render.write_text(images[i], names[labels[i]]))


def test_misleading_labels_cover_every_wrong_class():
    labels = np.arange(600) % 6
    wrong = TypographicAttack().misleading_labels(labels, 6)
    assert (wrong != labels).all()
    for y in range(6):
        assert set(wrong[labels == y]) == set(range(6)) - {y}
    # With two classes the only wrong one is the other.
    np.testing.assert_array_equal(TypographicAttack().misleading_labels(np.array([0, 1, 1, 0]), 2), [1, 0, 0, 1])


def test_attacked_task_keeps_labels_names_and_templates(shapes):
    base = shapes_task()
    attack = TypographicAttack(seed=2)
    task = attacked_task(base, attack)
    assert task.name == "shapes_attacked"
    assert (task.classnames, task.templates) == (base.classnames, base.templates)
    assert task.fingerprint.startswith(base.fingerprint) and "seed2" in task.fingerprint
    assert task.fingerprint != attacked_task(base, TypographicAttack(seed=1)).fingerprint
    val, base_val = task.split("val"), base.split("val")
    assert isinstance(val, ArraySplit) and len(val) == len(base_val)
    np.testing.assert_array_equal(val.labels, base_val.labels)
    np.testing.assert_array_equal(val.images[:50], attack.apply(*shapes))


def test_registry_has_attacked_embedded_tasks():
    assert {"shapes_attacked", "colors_attacked", "digits_attacked"} <= set(task_names())
    task = get_task("shapes_attacked")
    assert task.name == "shapes_attacked" and task.classnames == render.SHAPES
    assert [len(task.split(s)) for s in ("train", "val", "test")] == list(SUPPORTED_SPLIT_SIZES.values())


def test_mixed_task_attacks_half_its_training_images_and_all_of_val_and_test():
    full, mixed, clean = get_task("shapes_attacked"), get_task("shapes_attacked_mixed"), get_task("shapes")
    assert mixed.name == "shapes_attacked_mixed" and mixed.fingerprint != full.fingerprint
    for split in ("val", "test"):
        assert np.array_equal(mixed.split(split).images, full.split(split).images)
    train, attacked, plain = mixed.split("train").images, full.split("train").images, clean.split("train").images
    is_attacked = np.array([np.array_equal(m, a) and not np.array_equal(a, p)
                            for m, a, p in zip(train, attacked, plain)])
    is_clean = np.array([np.array_equal(m, p) for m, p in zip(train, plain)])
    assert (is_attacked | is_clean).all() and is_attacked.sum() == len(train) // 2
    assert is_attacked[1::2].all() and is_clean[0::2].all()        # spread evenly by index, not a block
    assert np.array_equal(mixed.split("train").labels, full.split("train").labels)
    with pytest.raises(PaintRayError, match=r"train_fraction 0: expected a number in \(0, 1\]"):
        attacked_task(clean, TypographicAttack(), train_fraction=0)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(PaintRayError, match=r"^unknown text position 'middle'.*valid: bottom, top$"):
        TypographicAttack(position="middle")
    with pytest.raises(PaintRayError, match="at least 2 classes, got 1"):
        TypographicAttack().misleading_labels(np.zeros(3, dtype=np.int64), 1)
    lazy = Task("lazy", ("a", "b"), ("{}",), lambda split: [(np.zeros((32, 32, 3), np.uint8), 0)])
    with pytest.raises(PaintRayError, match="needs in-memory splits; task 'lazy' split 'val' is a list"):
        attacked_task(lazy, TypographicAttack()).split("val")
