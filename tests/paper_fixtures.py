"""Miniature copies of the paper's datasets, written in their real on-disk formats.

Each writer puts a few small images per class under `root` exactly where and how the real dataset stores
them (IDX files, .mat files, python pickles, STL-10 binaries, PPM folders + CSV, ImageFolder trees with their
split files, a KITTI devkit zip) and returns the labels it wrote, in the order the loader must list them.
"""
from __future__ import annotations

import json
import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from paint_ray.tasks.paper import names


@dataclass
class Written:
    """Labels as written, in the loader's order: the official train and test splits (or all images)."""
    train: list[int] = field(default_factory=list)
    test: list[int] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def pixels(seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_image(path: Path, seed: int, h: int = 12, w: int = 16) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = pixels(seed, h, w)
    Image.fromarray(arr).save(path)
    return arr


# ---------------------------------------------------------------- MNIST: IDX files (big-endian headers)
def _idx_images(path: Path, images: np.ndarray) -> None:
    path.write_bytes(struct.pack(">IIII", 2051, len(images), 28, 28) + images.astype(np.uint8).tobytes())


def _idx_labels(path: Path, labels: list[int]) -> None:
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + bytes(labels))


def write_mnist(root: Path, n_train: int = 50, n_test: int = 10) -> Written:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = Written()
    for prefix, n, labels in (("train", n_train, out.train), ("t10k", n_test, out.test)):
        rng = np.random.default_rng(len(prefix))
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels.extend(int(y) for y in rng.integers(0, 10, n))
        _idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        _idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out.extra[prefix] = images
    return out


# ---------------------------------------------------------------- SVHN: .mat with X (32x32x3xN), y (digit 0 is 10)
def write_svhn(root: Path, n_train: int = 20, n_test: int = 6) -> Written:
    out = Written()
    for split, n, labels in (("train", n_train, out.train), ("test", n_test, out.test)):
        rng = np.random.default_rng(n)
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        digits = [int(d) for d in rng.integers(0, 10, n)]
        digits[0] = 0                                        # exercise the 10 -> 0 relabelling
        labels.extend(digits)
        (root / "svhn").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(root / "svhn" / f"{split}_32x32.mat",
                         {"X": x, "y": np.array([[10 if d == 0 else d] for d in digits], np.uint8)})
        out.extra[split] = x
    return out


# ---------------------------------------------------------------- CIFAR-10/100: python pickles
def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 8) -> Written:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    out = Written()
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(files):
        n = n_test if name == "test_batch" else per_batch
        rng = np.random.default_rng(100 + k)
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)   # rows: 1024 R, 1024 G, 1024 B
        labels = [int(y) for y in rng.integers(0, 10, n)]
        _pickle(base / name, {"batch_label": name, "labels": labels, "data": data,
                              "filenames": [f"{name}_{i}.png" for i in range(n)]})
        (out.test if name == "test_batch" else out.train).extend(labels)
        out.extra.setdefault("first", data[0])
    _pickle(base / "batches.meta", {"label_names": list(names.CIFAR10), "num_cases_per_batch": per_batch,
                                    "num_vis": 3072})
    return out


def write_cifar100(root: Path, n_train: int = 20, n_test: int = 6) -> Written:
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    out = Written()
    for name, n, labels in (("train", n_train, out.train), ("test", n_test, out.test)):
        rng = np.random.default_rng(n)
        labels.extend(int(y) for y in rng.integers(0, 100, n))
        _pickle(base / name, {"filenames": [f"{i}.png" for i in range(n)], "fine_labels": labels,
                              "coarse_labels": [y // 5 for y in labels],
                              "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)})
    _pickle(base / "meta", {"fine_label_names": [n.replace(" ", "_") for n in names.CIFAR100],
                            "coarse_label_names": [f"super{i}" for i in range(20)]})
    return out


# ---------------------------------------------------------------- STL-10: raw uint8 binaries, column-major
def write_stl10(root: Path, n_train: int = 12, n_test: int = 6) -> Written:
    base = root / "stl10" / "stl10_binary"
    base.mkdir(parents=True, exist_ok=True)
    out = Written()
    for split, n, labels in (("train", n_train, out.train), ("test", n_test, out.test)):
        rng = np.random.default_rng(n)
        chw = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        labels.extend(int(y) for y in rng.integers(0, 10, n))
        (base / f"{split}_X.bin").write_bytes(np.ascontiguousarray(chw.transpose(0, 1, 3, 2)).tobytes())
        (base / f"{split}_y.bin").write_bytes(bytes(y + 1 for y in labels))   # stored 1-based
        out.extra[split] = chw
    (base / "class_names.txt").write_text("\n".join(names.STL10) + "\n")
    return out


# ---------------------------------------------------------------- GTSRB: PPM folders per class id + test CSV
def write_gtsrb(root: Path, n_test: int = 6) -> Written:
    base = root / "gtsrb"
    out = Written()
    for c in range(43):
        per = 2 if c < 3 else 1
        for k in range(per):
            save_image(base / "GTSRB" / "Training" / f"{c:05d}" / f"00000_{k:05d}.ppm", c * 10 + k)
            out.train.append(c)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(n_test):
        c = (i * 7) % 43
        save_image(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", 1000 + i)
        rows.append(f"{i:05d}.ppm;16;12;1;1;15;11;{c}")
        out.test.append(c)
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return out


# ---------------------------------------------------------------- DTD: images/CLASS + labels/{train,val,test}1.txt
DTD_CLASSES = ("banded", "polka-dotted", "zigzagged")


def write_dtd(root: Path, per_file: int = 4) -> Written:
    base = root / "dtd" / "dtd"
    out = Written()
    lists: dict[str, list[str]] = {"train1": [], "val1": [], "test1": []}
    k = 0
    for split in lists:
        for cls in reversed(DTD_CLASSES):              # written out of order: the loader sorts
            for _ in range(per_file):
                k += 1
                fname = f"{cls}_{k:04d}.jpg"
                save_image(base / "images" / cls / fname, k)
                lists[split].append(f"{cls}/{fname}")
    for split, lines in lists.items():
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    key = lambda line: (line.split("/")[0], line.split("/")[1])  # noqa: E731
    out.train = [names.DTD.index(line.split("/")[0]) for line in sorted(lists["train1"] + lists["val1"], key=key)]
    out.test = [names.DTD.index(line.split("/")[0]) for line in sorted(lists["test1"], key=key)]
    return out


# ---------------------------------------------------------------- EuroSAT: eurosat/2750/<Class>/<Class>_N.jpg
def write_eurosat(root: Path, per_class: int = 10) -> Written:
    out = Written()
    for c, cls in enumerate(names.EUROSAT_FOLDERS):
        for i in range(1, per_class + 1):
            save_image(root / "eurosat" / "2750" / cls / f"{cls}_{i}.jpg", c * 100 + i, 8, 8)
    # ImageFolder order: classes sorted (the list is), files sorted as strings within a class
    out.train = [c for c in range(len(names.EUROSAT_FOLDERS)) for _ in range(per_class)]
    return out


# ---------------------------------------------------------------- Food-101: meta/{train,test}.json + images/CLASS
FOOD_CLASSES = ("apple_pie", "cup_cakes", "waffles")


def write_food101(root: Path, n_train: int = 4, n_test: int = 2) -> Written:
    base = root / "food-101"
    out = Written()
    for split, n, labels in (("train", n_train, out.train), ("test", n_test, out.test)):
        meta = {}
        folders = [name.replace(" ", "_") for name in names.FOOD101]
        for c, cls in enumerate(FOOD_CLASSES):
            ids = [1000 * c + i + (0 if split == "train" else 500) for i in range(n)]
            for image_id in ids:
                save_image(base / "images" / cls / f"{image_id}.jpg", image_id)
            meta[cls] = [f"{cls}/{image_id}" for image_id in ids]
            labels += [folders.index(cls)] * n
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta))
    (base / "meta" / "classes.txt").write_text("\n".join(FOOD_CLASSES) + "\n")
    return out


# ---------------------------------------------------------------- RESISC45: NWPU-RESISC45/CLASS + split files
RESISC_CLASSES = ("airplane", "baseball_diamond", "wetland")


def write_resisc45(root: Path, n_train: int = 5, n_test: int = 2) -> Written:
    base = root / "resisc45"
    out = Written()
    files: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for cls in RESISC_CLASSES:
        for i in range(1, n_train + n_test + 2):
            fname = f"{cls}_{i:03d}.jpg"
            save_image(base / "NWPU-RESISC45" / cls / fname, i, 8, 8)
            split = "train" if i <= n_train else "test" if i <= n_train + n_test else "val"
            files[split].append(fname)
    for split, lines in files.items():
        (base / f"resisc45-{split}.txt").write_text("\n".join(reversed(lines)) + "\n")
    labels = [n.replace(" ", "_") for n in names.RESISC45]
    out.train = [labels.index(c) for c in RESISC_CLASSES for _ in range(n_train)]
    out.test = [labels.index(c) for c in RESISC_CLASSES for _ in range(n_test)]
    return out


# ---------------------------------------------------------------- SUN397: ClassName.txt + Training_01/Testing_01
def sun397_class_paths() -> list[str]:
    """A ClassName.txt in the real format; one class is nested (apartment_building/outdoor) as in SUN397."""
    paths = [f"/{n[0]}/{n.replace(' ', '_')}" for n in names.SUN397]
    paths[names.SUN397.index("apartment building outdoor")] = "/a/apartment_building/outdoor"
    return paths


SUN_PICKS = ("abbey", "apartment building outdoor", "youth hostel")


def write_sun397(root: Path, n_train: int = 4, n_test: int = 2) -> Written:
    base = root / "SUN397"
    base.mkdir(parents=True, exist_ok=True)
    paths = sun397_class_paths()
    (base / "ClassName.txt").write_text("\n".join(paths) + "\n")
    out = Written()
    lists: dict[str, list[str]] = {"Training_01.txt": [], "Testing_01.txt": []}
    for cls in SUN_PICKS:
        c = names.SUN397.index(cls)
        for i in range(n_train + n_test):
            rel = f"{paths[c]}/sun_{c:03d}{i:04d}.jpg"
            save_image(base.joinpath(*rel.strip("/").split("/")), c + i)
            target = "Training_01.txt" if i < n_train else "Testing_01.txt"
            lists[target].append(rel)
            (out.train if i < n_train else out.test).append(c)
    for fname, lines in lists.items():
        (base / fname).write_text("\n".join(lines) + "\n")
    return out


# ---------------------------------------------------------------- Stanford Cars: devkit .mat annotations
def _annotations(rows: list[tuple[str, int]]) -> np.ndarray:
    dtype = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    arr = np.zeros((1, len(rows)), dtype=dtype)
    for i, (fname, cls) in enumerate(rows):
        arr[0, i] = (np.uint8(1), np.uint8(1), np.uint8(15), np.uint8(11), np.uint8(cls + 1), fname)
    return arr


def write_cars(root: Path, n_train: int = 12, n_test: int = 4) -> Written:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat",
                     {"class_names": np.array(list(names.CARS), dtype=object).reshape(1, -1)})
    out = Written()
    for split, n, labels in (("train", n_train, out.train), ("test", n_test, out.test)):
        rows = []
        for i in range(n):
            cls = (i * 37) % 196
            fname = f"{i + 1:05d}.jpg"
            save_image(base / f"cars_{split}" / fname, i + (0 if split == "train" else 500))
            rows.append((fname, cls))
            labels.append(cls)
        target = base / "devkit" / "cars_train_annos.mat" if split == "train" else \
            base / "cars_test_annos_withlabels.mat"
        scipy.io.savemat(target, {"annotations": _annotations(rows)})
    return out


# ---------------------------------------------------------------- ImageNet: 1000 WNID folders in train/ and val/
def write_imagenet(root: Path, extra_train: int = 0) -> Written:
    out = Written()
    for split, labels in (("train", out.train), ("val", out.test)):
        for c in range(1000):
            wnid = f"n{c:08d}"
            k = 1 + (extra_train if split == "train" and c == 0 else 0)
            for i in range(k):
                save_image(root / "imagenet" / split / wnid / f"{wnid}_{i}.JPEG", c, 4, 4)
                labels.append(c)
    return out


# ---------------------------------------------------------------- KITTI: image_2, label_2, devkit mapping zip
def kitti_label_line(kind: str, z: float) -> str:
    return f"{kind} 0.00 0 -1.58 587.01 173.33 614.12 200.12 1.65 1.67 3.64 -0.65 1.71 {z:.2f} -1.59"


# Per image: the objects in its label file; nearest Car/Van/Truck decides the label.
KITTI_OBJECTS = [
    [("Car", 5.0), ("Pedestrian", 2.0)],          # 0: car on my side (<= 8 m)
    [("Van", 12.0), ("Car", 30.0)],               # 1: nearby (8-20 m)
    [("Truck", 45.0)],                             # 2: in the distance (20-999 m)
    [("Pedestrian", 3.0), ("DontCare", -1.0)],    # 3: no car
]


def write_kitti(root: Path, n_videos: int = 6, frames: int = 3) -> Written:
    raw = root / "kitti" / "raw"
    n = n_videos * frames
    rng = np.random.default_rng(7)
    order = rng.permutation(n)                      # train_rand.txt: image id -> mapping line (1-based)
    mapping = [f"2011_09_26 2011_09_26_drive_{v:04d}_sync {f:010d}" for v in range(n_videos) for f in range(frames)]
    out = Written()
    labels = []
    for image_id in range(n):
        objects = KITTI_OBJECTS[image_id % 4]
        save_image(raw / "training" / "image_2" / f"{image_id:06d}.png", image_id, 10, 30)
        (raw / "training" / "label_2").mkdir(parents=True, exist_ok=True)
        (raw / "training" / "label_2" / f"{image_id:06d}.txt").write_text(
            "\n".join(kitti_label_line(k, z) for k, z in objects) + "\n")
        labels.append(image_id % 4)
    with zipfile.ZipFile(raw / "devkit_object.zip", "w") as z:
        z.writestr("mapping/train_rand.txt", ",".join(str(int(i) + 1) for i in order))
        z.writestr("mapping/train_mapping.txt", "\n".join(mapping) + "\n")
        z.writestr("readme.txt", "devkit")
    out.extra = {"labels": labels, "rand": [int(i) + 1 for i in order], "mapping": mapping}
    return out


WRITERS = {
    "mnist": write_mnist, "svhn": write_svhn, "cifar10": write_cifar10, "cifar100": write_cifar100,
    "stl10": write_stl10, "gtsrb": write_gtsrb, "dtd": write_dtd, "eurosat": write_eurosat,
    "food101": write_food101, "resisc45": write_resisc45, "sun397": write_sun397, "cars": write_cars,
    "imagenet": write_imagenet, "kitti_distance": write_kitti,
}
