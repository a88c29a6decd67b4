"""The paper's datasets, written in miniature in their real formats and loaded through the task registry."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import random_split

from paint_ray.errors import PaintRayError
from paint_ray.tasks import get_task
from paint_ray.tasks.paper import PAPER_DATASETS, PATCH_TASKS, SUPPORTED_TASKS
from paint_ray.tasks.paper.common import held_out
from paint_ray.tasks.paper.kitti import video_splits

import paper_fixtures as pf

HELD_OUT = [n for n in pf.WRITERS if n not in ("eurosat", "kitti_distance")]
CLASS_COUNTS = {"mnist": 10, "svhn": 10, "cifar10": 10, "cifar100": 100, "stl10": 10, "gtsrb": 43, "dtd": 47,
                "eurosat": 10, "food101": 101, "resisc45": 45, "sun397": 397, "cars": 196, "imagenet": 1000,
                "kitti_distance": 4}
TEMPLATE_COUNTS = {"imagenet": 80, "mnist": 1, "svhn": 1, "kitti_distance": 1, "cifar10": 18, "resisc45": 18}


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory) -> tuple[Path, dict[str, pf.Written]]:
    root = tmp_path_factory.mktemp("paper_data")
    return root, {name: write(root) for name, write in pf.WRITERS.items()}


def labels(data) -> list[int]:
    return [int(data[i][1]) for i in range(len(data))]


def one_line_error(fn, *args) -> str:
    with pytest.raises(PaintRayError) as e:
        fn(*args)
    message = str(e.value)
    assert "\n" not in message and message
    return message


def reference_val(n: int) -> list[int]:
    """The reference's split_train_into_train_val, written out: lengths [n - v, v], v = min(10%, 5000), seed 0."""
    val_size = min(int(n * 0.1), 5000)
    _, val = random_split(range(n), [n - val_size, val_size], generator=torch.Generator().manual_seed(0))
    return list(val.indices)


def test_registry_lists_every_paper_task():
    assert set(PATCH_TASKS) == {"cars", "dtd", "eurosat", "gtsrb", "kitti_distance", "mnist", "resisc45", "sun397",
                                "svhn"}
    assert set(SUPPORTED_TASKS) == {"imagenet", "cifar10", "cifar100", "stl10", "food101"}
    assert set(pf.WRITERS) == set(PAPER_DATASETS)


@pytest.mark.parametrize("name", sorted(pf.WRITERS))
def test_loads_classes_templates_and_splits(paper_root, name):
    root, written = paper_root
    task = get_task(name, str(root))
    assert len(task.classnames) == CLASS_COUNTS[name]
    if name != "imagenet":     # CLIP's ImageNet list itself names two classes alike ("missile", …)
        assert len(set(task.classnames)) == CLASS_COUNTS[name]
    assert all(t.count("{}") == 1 for t in task.templates)
    if name in TEMPLATE_COUNTS:
        assert len(task.templates) == TEMPLATE_COUNTS[name]
    w = written[name]
    if name in HELD_OUT:
        n = len(w.train)
        train, val, test = (task.split(s) for s in ("train", "val", "test"))
        assert (len(train), len(val)) == (n - min(int(n * 0.1), 5000), min(int(n * 0.1), 5000))
        assert sorted(train.indices + val.indices) == list(range(n))       # a partition of the official train
        assert labels(train) == [w.train[i] for i in train.indices]
        assert labels(val) == [w.train[i] for i in task.loader.val_indices]
        assert labels(test) == w.test


@pytest.mark.parametrize("name", HELD_OUT)
def test_validation_indices_equal_random_split_of_the_reference(paper_root, name):
    root, written = paper_root
    task = get_task(name, str(root))
    assert task.loader.val_indices == reference_val(len(written[name].train))


def test_held_out_matches_the_reference_on_full_size_mnist_and_imagenet():
    train, val = held_out(60000)
    assert train[0] == 36044              # the reference asserts exactly this for MNISTVal
    assert len(val) == 5000 and len(set(train) | set(val)) == 60000   # min(10%, 5000)
    assert len(held_out(1_281_167)[1]) == 5000


def test_array_formats_decode_to_the_pixels_written(paper_root):
    root, written = paper_root
    mnist = get_task("mnist", str(root)).split("test")
    assert np.array_equal(np.asarray(mnist[0][0]), written["mnist"].extra["t10k"][0])
    svhn = get_task("svhn", str(root)).split("test")
    assert np.array_equal(np.asarray(svhn[0][0]), written["svhn"].extra["test"][:, :, :, 0])
    assert svhn[0][1] == 0                                        # stored as 10
    cifar = get_task("cifar10", str(root)).split("train").dataset
    first = written["cifar10"].extra["first"].reshape(3, 32, 32).transpose(1, 2, 0)     # R, G, B planes
    assert np.array_equal(np.asarray(cifar[0][0]), first)
    stl = get_task("stl10", str(root)).split("test")
    assert np.array_equal(np.asarray(stl[0][0]), written["stl10"].extra["test"][0].transpose(1, 2, 0))


def test_known_labels_by_name(paper_root):
    root, _ = paper_root
    sun = get_task("sun397", str(root))
    assert {sun.classnames[y] for y in labels(sun.split("test"))} == set(pf.SUN_PICKS)
    food = get_task("food101", str(root))
    assert [food.classnames[y] for y in labels(food.split("test"))] == ["apple pie"] * 2 + ["cup cakes"] * 2 + \
        ["waffles"] * 2
    dtd = get_task("dtd", str(root))
    assert [dtd.classnames[y] for y in labels(dtd.split("test"))] == ["banded"] * 4 + ["polka-dotted"] * 4 + \
        ["zigzagged"] * 4
    assert get_task("gtsrb", str(root)).classnames[14] == "stop"
    assert get_task("cars", str(root)).classnames[195] == "smart fortwo Convertible 2012"


def test_eurosat_is_split_per_class_into_train_val_test(paper_root):
    root, _ = paper_root
    task = get_task("eurosat", str(root))
    train, val, test = (task.split(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (80, 10, 10)       # 27,000 -> 21,600 / 2,700 / 2,700 scaled
    assert sorted(train.indices + val.indices + test.indices) == list(range(100))
    assert sorted(labels(val)) == list(range(10)) and sorted(labels(test)) == list(range(10))
    assert task.loader.val_indices == val.indices == sorted(val.indices)
    assert task.classnames[0] == "annual crop land" and task.classnames[9] == "lake or sea"


def _reference_kitti_splits(line_ids, mapping_lines):
    """The reference's _build_splits, with its global numpy seeding, for comparison."""
    import collections
    video_to_image = collections.defaultdict(list)
    for image_id, line_id in enumerate(line_ids):
        video_to_image[mapping_lines[line_id].split(" ")[1]].append(image_id)
    state = np.random.get_state()
    np.random.seed(seed=123)
    n_test = max(1, 10 * len(video_to_image) // 100)
    n_val = max(1, 10 * len(video_to_image) // 100)
    test_videos = set(np.random.choice(sorted(list(video_to_image.keys())), n_test, replace=False))
    val_videos = set(np.random.choice(sorted(list(set(video_to_image.keys()) - set(test_videos))), n_val,
                                      replace=False))
    out = {"train": [], "val": [], "test": []}
    for k, v in video_to_image.items():
        out["test" if k in test_videos else "val" if k in val_videos else "train"].extend(v)
    np.random.set_state(state)
    return out


def test_kitti_distance_labels_and_video_splits(paper_root):
    root, written = paper_root
    w = written["kitti_distance"]
    task = get_task("kitti_distance", str(root))
    assert task.templates == ("{}",) and task.classnames[3] == "a photo i took with no car."
    line_ids = [r - 1 for r in w.extra["rand"]]
    expected = _reference_kitti_splits(line_ids, w.extra["mapping"])
    assert video_splits(line_ids, w.extra["mapping"]) == expected
    video_of = {i: w.extra["mapping"][line_ids[i]].split(" ")[1] for i in range(len(line_ids))}
    seen: dict[str, str] = {}
    for split in ("train", "val", "test"):
        data = task.split(split)
        assert data.image_ids == expected[split]
        assert labels(data) == [w.extra["labels"][i] for i in data.image_ids]
        for i in data.image_ids:
            assert seen.setdefault(video_of[i], split) == split       # no video crosses splits
    assert task.loader.val_indices == expected["val"] and len(expected["val"]) == 3   # one video of 3 frames
    assert sorted(set(w.extra["labels"])) == [0, 1, 2, 3]


def test_same_files_same_task_and_changed_files_new_fingerprint(tmp_path):
    pf.write_mnist(tmp_path)
    a, b = get_task("mnist", str(tmp_path)), get_task("mnist", str(tmp_path))
    assert a.fingerprint == b.fingerprint and a.loader.val_indices == b.loader.val_indices
    assert labels(a.split("train")) == labels(b.split("train"))
    raw = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    os.utime(raw, ns=(raw.stat().st_atime_ns, raw.stat().st_mtime_ns + 10**9))
    assert get_task("mnist", str(tmp_path)).fingerprint == a.fingerprint     # same bytes, same data
    data = raw.read_bytes()
    raw.write_bytes(data[:8] + bytes((y + 1) % 10 for y in data[8:]))         # other labels, same name and size
    assert get_task("mnist", str(tmp_path)).fingerprint != a.fingerprint
    pf.write_eurosat(tmp_path, per_class=3)
    before = get_task("eurosat", str(tmp_path)).fingerprint
    os.rename(tmp_path / "eurosat/2750/River/River_1.jpg", tmp_path / "eurosat/2750/River/River_9.jpg")
    assert get_task("eurosat", str(tmp_path)).fingerprint != before    # folder contents changed


def test_missing_data_root_and_no_data_root_are_one_line_errors(tmp_path):
    message = one_line_error(get_task, "mnist", str(tmp_path / "nowhere"))
    assert "nowhere" in message and "does not exist" in message
    message = one_line_error(get_task, "cars", None)
    assert "--data-root" in message and "stanford_cars" in message


@pytest.mark.parametrize("name, missing", [
    ("mnist", "MNIST/raw/t10k-labels-idx1-ubyte"),
    ("sun397", "SUN397/Testing_01.txt"),
    ("cars", "stanford_cars/devkit/cars_meta.mat"),
    ("kitti_distance", "kitti/raw/devkit_object.zip"),
    ("gtsrb", "gtsrb/GT-final_test.csv"),
])
def test_one_missing_file_is_named_with_the_expected_layout(tmp_path, name, missing):
    pf.WRITERS[name](tmp_path)
    (tmp_path / missing).unlink()
    message = one_line_error(get_task, name, str(tmp_path))
    assert str(tmp_path / missing) in message and "expected under" in message


def test_task_name_typo_suggests_the_task():
    message = one_line_error(get_task, "mnsit", "/tmp")
    assert "did you mean 'mnist'" in message


def test_malformed_datasets_are_one_line_errors(tmp_path):
    pf.write_gtsrb(tmp_path)
    (tmp_path / "gtsrb/GTSRB/Training/00042/00000_00000.ppm").unlink()
    (tmp_path / "gtsrb/GTSRB/Training/00042").rmdir()
    assert "42 class folders" in one_line_error(get_task("gtsrb", str(tmp_path)).split, "train")
    pf.write_sun397(tmp_path)
    lines = (tmp_path / "SUN397/ClassName.txt").read_text().splitlines()
    (tmp_path / "SUN397/ClassName.txt").write_text("\n".join(lines[:-1]) + "\n")
    assert "expected 397" in one_line_error(get_task("sun397", str(tmp_path)).split, "test")
    pf.write_food101(tmp_path)
    (tmp_path / "food-101/meta/test.json").write_text('{"not_a_food": ["not_a_food/1"]}')
    assert "unknown class 'not_a_food'" in one_line_error(get_task("food101", str(tmp_path)).split, "test")


def test_an_unreadable_image_is_a_one_line_error_when_decoded(tmp_path, monkeypatch):
    from paint_ray.caches.eval import prepare_task
    monkeypatch.setenv("PAINT_RAY_HOME", str(tmp_path / "home"))
    pf.write_dtd(tmp_path)
    victim = (tmp_path / "dtd/dtd/labels/test1.txt").read_text().split()[0]      # e.g. zigzagged/zigzagged_0025.jpg
    (tmp_path / "dtd/dtd/images" / victim).write_bytes(b"not a jpeg")
    message = one_line_error(prepare_task, get_task("dtd", str(tmp_path)), "test", 16)
    assert Path(victim).name in message and "dtd/test" in message
    assert not [p for p in (tmp_path / "home" / "eval_cache").iterdir() if p.is_dir()]   # no entry, no temp


def data_check(argv, home: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    """`paint-ray data check ARGS` in this process, with its own cache home."""
    from conftest import run_main

    from paint_ray.cli import main
    monkeypatch.setenv("PAINT_RAY_HOME", str(home))
    return run_main(main, ["data", "check", *argv], capsys)


def test_cli_data_check_text_and_json(paper_root, tmp_path, capsys, monkeypatch):
    root, written = paper_root
    code, out, err = data_check(["mnist", "--data-root", str(root)], tmp_path, capsys, monkeypatch)
    assert code == 0, err
    assert "classes (10)" in out and "train:" in out and "test:" in out
    assert f"item 0: label {written['mnist'].test[0]}" in out
    code, out, err = data_check(["mnist", "--data-root", str(root), "--json"], tmp_path, capsys, monkeypatch)
    assert code == 0, err
    report = json.loads(out)                           # --json prints one JSON object and nothing else
    assert report["num_classes"] == 10 and report["splits"]["val"]["size"] == 5
    assert report["splits"]["test"]["item0_label"] == written["mnist"].test[0]
    assert report["val_indices"] == reference_val(50)


def test_cli_data_check_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    from conftest import one_line_error
    code, out, err = data_check(["svhn", "--data-root", str(tmp_path / "missing")], tmp_path, capsys, monkeypatch)
    assert "missing" in one_line_error(code, err) and out == ""
    from paint_ray.cli import main
    assert main(["data", "check", "resisc45", "--data-root", str(tmp_path), "--download"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no downloader" in err and "resisc45-train.txt" in err
    assert main(["data", "check", "mnsit", "--data-root", str(tmp_path)]) == 2
    assert "did you mean 'mnist'" in capsys.readouterr().err
