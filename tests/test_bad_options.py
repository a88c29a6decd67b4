"""Bad input is one line naming what is wrong and what would be valid.

Garbage dataset files (`paint-ray data check`) and bad fine-tuning settings (`FinetuneConfig.validate`).
"""
from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from paint_ray.cli import main
from paint_ray.errors import PaintRayError
from paint_ray.training.finetune import FinetuneConfig

import paper_fixtures as pf


# ---------------------------------------------------------------- garbage dataset files
def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes())


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def pickled(obj):
    def spoil(path: Path) -> None:
        path.write_bytes(pickle.dumps(obj))
    return spoil


def raw(data: bytes):
    def spoil(path: Path) -> None:
        path.write_bytes(data)
    return spoil


def gzipped(path: Path) -> None:
    path.write_bytes(gzip.compress(path.read_bytes()))


def mat(variables: dict):
    def spoil(path: Path) -> None:
        import scipy.io
        scipy.io.savemat(path, variables)
    return spoil


no_variable = mat({"images": np.zeros((2, 2), np.uint8)})


C10, C100, MN, STL = "cifar-10-batches-py", "cifar-100-python", "MNIST/raw", "stl10/stl10_binary"
BATCH = "a CIFAR-10 batch: a pickled dict with 'data' (N x 3072 uint8"
IMAGES = "expected MNIST images in IDX format: magic 0x00000803"
LABELS = "expected MNIST labels in IDX format: magic 0x00000801"

# id: (task, file spoiled, how, what the message must say)
GARBAGE = {
    "cifar10-random-bytes": ("cifar10", f"{C10}/data_batch_3", random_bytes, ["not a readable python pickle", BATCH]),
    "cifar10-truncated": ("cifar10", f"{C10}/test_batch", truncate, ["pickle data was truncated", BATCH]),
    "cifar10-empty": ("cifar10", f"{C10}/data_batch_1", raw(b""), ["not a readable python pickle", BATCH]),
    "cifar10-list-pickle": ("cifar10", f"{C10}/data_batch_1", pickled([1, 2, 3]), ["holds a list of 3 items", BATCH]),
    "cifar10-wrong-shape": ("cifar10", f"{C10}/data_batch_2",
                            pickled({"data": np.zeros((4, 100), np.uint8), "labels": [0] * 4}),
                            ["'data' is a uint8 array of shape (4, 100)", BATCH]),
    "cifar10-float-data": ("cifar10", f"{C10}/data_batch_2",
                           pickled({"data": np.zeros((4, 3072)), "labels": [0] * 4}),
                           ["'data' is a float64 array of shape (4, 3072)", BATCH]),
    "cifar10-no-labels": ("cifar10", f"{C10}/data_batch_4", pickled({"data": np.zeros((4, 3072), np.uint8)}),
                          ["has no 'labels' (its keys: ['data'])", BATCH]),
    "cifar10-label-out-of-range": ("cifar10", f"{C10}/test_batch",
                                   pickled({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 9, 57]}),
                                   ["'labels'[2] is 57", "labels 0..9"]),
    "cifar10-too-few-labels": ("cifar10", f"{C10}/test_batch",
                               pickled({"data": np.zeros((3, 3072), np.uint8), "labels": [0, 9]}),
                               ["'labels' is a list of 2 items for 3 images", BATCH]),
    "cifar10-meta": ("cifar10", f"{C10}/batches.meta", random_bytes,
                     ["not a readable python pickle", "expected the CIFAR-10 meta file"]),
    "cifar10-long-string": ("cifar10", f"{C10}/data_batch_5", pickled("x" * 10_000), ["holds a str ('xxx", BATCH]),
    "cifar100-random-bytes": ("cifar100", f"{C100}/train", random_bytes,
                              ["not a readable python pickle", "a CIFAR-100 batch", "'fine_labels' (N labels 0..99)"]),
    "cifar100-truncated": ("cifar100", f"{C100}/test", truncate, ["pickle data was truncated", "a CIFAR-100 batch"]),
    "cifar100-wrong-type": ("cifar100", f"{C100}/test", pickled("hello"), ["holds a str ('hello')",
                                                                           "a CIFAR-100 batch"]),
    "cifar100-meta": ("cifar100", f"{C100}/meta", pickled({"fine_label_names": ["a", "b"]}),
                      ["holds 'fine_label_names' as a list of 2 items", "the 100 class names"]),
    "mnist-random-bytes": ("mnist", f"{MN}/train-images-idx3-ubyte", random_bytes, ["has magic number 0x", IMAGES]),
    "mnist-wrong-magic": ("mnist", f"{MN}/t10k-labels-idx1-ubyte", raw(struct.pack(">II", 2051, 10) + bytes(10)),
                          ["has magic number 0x00000803, not 0x00000801", LABELS]),
    "mnist-truncated-images": ("mnist", f"{MN}/t10k-images-idx3-ubyte", truncate,
                               ["is truncated: its header declares 10 images (7,856 bytes) but it has 3,928 bytes",
                                IMAGES]),
    "mnist-truncated-labels": ("mnist", f"{MN}/train-labels-idx1-ubyte", truncate, ["is truncated", LABELS]),
    "mnist-truncated-header": ("mnist", f"{MN}/train-labels-idx1-ubyte", raw(b"\x00\x00\x08"),
                               ["has 3 bytes, too short for the 8-byte IDX header", LABELS]),
    "mnist-gzip": ("mnist", f"{MN}/t10k-images-idx3-ubyte", gzipped, ["is gzip-compressed", IMAGES]),
    "mnist-wrong-size": ("mnist", f"{MN}/t10k-images-idx3-ubyte",
                         raw(struct.pack(">IIII", 2051, 2, 32, 32) + bytes(2 * 32 * 32)),
                         ["holds 32 x 32 images, not 28 x 28", IMAGES]),
    "mnist-label-count": ("mnist", f"{MN}/t10k-labels-idx1-ubyte", raw(struct.pack(">II", 2049, 3) + bytes(3)),
                          ["holds 3 labels but", "holds 10 images"]),
    "mnist-label-range": ("mnist", f"{MN}/t10k-labels-idx1-ubyte",
                          raw(struct.pack(">II", 2049, 10) + bytes([1] * 9 + [200])),
                          ["has label 200 at position 9", LABELS]),
    "svhn-random-bytes": ("svhn", "svhn/test_32x32.mat", random_bytes, ["not a readable .mat file",
                                                                        "expected an SVHN .mat file"]),
    "svhn-truncated": ("svhn", "svhn/train_32x32.mat", truncate, ["not a readable .mat file", "X (32 x 32 x 3 x N"]),
    "svhn-no-X": ("svhn", "svhn/test_32x32.mat", no_variable, ["has no variable 'X' (it has ['images'])"]),
    "svhn-label-range": ("svhn", "svhn/test_32x32.mat", mat({"X": np.zeros((32, 32, 3, 2), np.uint8),
                                                             "y": np.array([[1], [11]], np.uint8)}),
                         ["y[1] is 11", "y (N labels 1..10, 10 for the digit 0)"]),
    "stl10-random-bytes": ("stl10", f"{STL}/test_X.bin", random_bytes,
                           ["has 5,000 bytes, not a positive multiple of 27,648", "N x 3 x 96 x 96"]),
    "stl10-truncated-labels": ("stl10", f"{STL}/test_y.bin", truncate, ["has 3 labels but test_X.bin holds 6 images"]),
    "stl10-label-range": ("stl10", f"{STL}/train_y.bin", raw(bytes([1] * 11 + [0])),
                          ["train_y.bin: labels[11] is 0", "one byte 1..10 per image"]),
    "cars-meta": ("cars", "stanford_cars/devkit/cars_meta.mat", random_bytes,
                  ["not a readable .mat file", "'class_names' (the 196 class names)"]),
    "cars-annotations": ("cars", "stanford_cars/cars_test_annos_withlabels.mat", no_variable,
                         ["has no variable 'annotations'", "Stanford Cars annotations"]),
    "gtsrb-csv-bytes": ("gtsrb", "gtsrb/GT-final_test.csv", random_bytes, ["is not a text file", "ClassId (0..42)"]),
    "gtsrb-csv-header": ("gtsrb", "gtsrb/GT-final_test.csv", raw(b"a;b\n1;2\n"), ["has header 'a;b'"]),
    "gtsrb-csv-class": ("gtsrb", "gtsrb/GT-final_test.csv", raw(b"Filename;ClassId\n00000.ppm;77\n"),
                        ["row 2 has Filename '00000.ppm', ClassId '77'"]),
    "kitti-zip": ("kitti_distance", "kitti/raw/devkit_object.zip", random_bytes,
                  ["is not a valid zip", "mapping/train_rand.txt"]),
    "food101-json-bytes": ("food101", "food-101/meta/test.json", random_bytes, ["is not a text file", "JSON object"]),
    "food101-json-list": ("food101", "food-101/meta/train.json", raw(b"[1, 2]"), ["holds [1, 2]", "JSON object"]),
    "dtd-split-bytes": ("dtd", "dtd/dtd/labels/test1.txt", random_bytes, ["is not a text file", "DTD split file"]),
    "sun397-classes-bytes": ("sun397", "SUN397/ClassName.txt", random_bytes, ["is not a text file", "397 lines"]),
    "resisc45-split-bytes": ("resisc45", "resisc45/resisc45-test.txt", random_bytes, ["is not a text file",
                                                                                       "RESISC45 split file"]),
}


def spoil(root: Path, case: str) -> tuple[str, Path, list[str]]:
    task, rel, how, says = GARBAGE[case]
    pf.WRITERS[task](root)
    how(root / rel)
    return task, root / rel, says


def check_message(line: str, task: str, path: Path, says: list[str]) -> None:
    assert line.startswith(f"paint-ray: error: {task}: ") and "\n" not in line.strip()
    assert str(path) in line and "expected" in line
    for text in says:
        assert text in line, line
    assert "x" * 81 not in line                  # a bad value is echoed in at most ~80 characters


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_garbage_dataset_files_are_one_line_errors(tmp_path, case, capsys):
    task, path, says = spoil(tmp_path / "data", case)
    assert main(["data", "check", task, "--data-root", str(tmp_path / "data")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1
    check_message(out.err.strip(), task, path, says)


def test_the_untouched_fixtures_still_check_fine(tmp_path, capsys):
    for task in ("cifar10", "cifar100", "mnist", "svhn", "stl10"):
        pf.WRITERS[task](tmp_path)
        assert main(["data", "check", task, "--data-root", str(tmp_path)]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- FinetuneConfig.validate
def message(**changes) -> str:
    with pytest.raises(PaintRayError) as e:
        FinetuneConfig(**changes).validate()
    text = str(e.value)
    assert "\n" not in text and text
    return text


def test_defaults_and_boundary_values_are_valid():
    FinetuneConfig().validate()
    FinetuneConfig(batch_size=1, steps=1, lr=1e-12, warmup_steps=0, weight_decay=0.0, label_smoothing=0.0,
                   grad_clip=1e-9, augment_shift=0, seed=0).validate()
    FinetuneConfig(label_smoothing=0.999, seed=2**64 - 1, weight_decay=0, lr=1, grad_clip=5).validate()
    FinetuneConfig(steps=np.int64(30), warmup_steps=np.int64(29), lr=np.float32(1e-3)).validate()


BAD = [  # field, value, flag, what the message must say
    ("batch_size", 0, "--batch-size 0", "an integer of at least 1"),
    ("batch_size", -8, "--batch-size -8", "an integer of at least 1"),
    ("batch_size", 2.5, "--batch-size 2.5", "is not a whole number"),
    ("batch_size", True, "--batch-size True", "is not a whole number"),
    ("steps", 0, "--steps 0", "an integer of at least 1"),
    ("steps", 100.0, "--steps 100.0", "is not a whole number"),
    ("steps", "200", "--steps '200'", "is not a whole number"),
    ("lr", 0.0, "--lr 0.0", "a finite number above 0"),
    ("lr", -1e-4, "--lr -0.0001", "a finite number above 0"),
    ("lr", math.nan, "--lr nan", "is not finite"),
    ("lr", math.inf, "--lr inf", "is not finite"),
    ("lr", "3e-4", "--lr '3e-4'", "is not a number"),
    ("lr", None, "--lr None", "is not a number"),
    ("warmup_steps", -1, "--warmup-steps -1", "an integer of at least 0"),
    ("warmup_steps", 1.5, "--warmup-steps 1.5", "is not a whole number"),
    ("weight_decay", -0.1, "--weight-decay -0.1", "a finite number of at least 0"),
    ("weight_decay", math.nan, "--weight-decay nan", "is not finite"),
    ("weight_decay", -math.inf, "--weight-decay -inf", "is not finite"),
    ("label_smoothing", 1.0, "--label-smoothing 1.0", "a number in [0, 1)"),
    ("label_smoothing", -0.1, "--label-smoothing -0.1", "a number in [0, 1)"),
    ("label_smoothing", math.nan, "--label-smoothing nan", "is not finite"),
    ("grad_clip", 0.0, "--grad-clip 0.0", "a finite number above 0"),
    ("grad_clip", -1.0, "--grad-clip -1.0", "a finite number above 0"),
    ("grad_clip", math.inf, "--grad-clip inf", "is not finite"),
    ("grad_clip", math.nan, "--grad-clip nan", "is not finite"),
    ("augment_shift", -1, "--augment-shift -1", "an integer of at least 0"),
    ("augment_shift", 0.5, "--augment-shift 0.5", "is not a whole number"),
    ("seed", -1, "--seed -1", "an integer from 0 to 2**64 - 1"),
    ("seed", 2**64, f"--seed {2**64}", "an integer from 0 to 2**64 - 1"),
    ("seed", 1.0, "--seed 1.0", "is not a whole number"),
]


@pytest.mark.parametrize("field, value, shown, says", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_each_bad_setting_is_named_with_its_value_and_what_is_valid(field, value, shown, says):
    changes = {field: value}
    if field == "warmup_steps" and isinstance(value, float):
        changes["steps"] = 200
    text = message(**changes)
    assert text.startswith(shown + " "), text
    assert says in text and "give" in text


def test_steps_at_or_below_the_warmup_never_leave_it():
    assert message(steps=3, warmup_steps=500) == (
        "--steps 3 is at or below the warm-up of 500 steps: the learning rate would never leave the warm-up; "
        "give --steps above 500 or a smaller --warmup-steps")
    assert message(steps=20, warmup_steps=20).startswith("--steps 20 is at or below the warm-up of 20 steps")
    FinetuneConfig(steps=21, warmup_steps=20).validate()
    FinetuneConfig(steps=1, warmup_steps=0).validate()


def test_where_prefixes_the_message_and_long_values_are_cut():
    with pytest.raises(PaintRayError) as e:
        FinetuneConfig(lr=math.nan).validate("study config experiments/x.yaml")
    assert str(e.value).startswith("study config experiments/x.yaml: --lr nan is not finite")
    text = message(lr="9" * 500)
    assert "9" * 80 not in text and len(text) < 200
