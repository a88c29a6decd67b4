"""Image-file datasets: Stanford Cars, DTD, Food-101, GTSRB, RESISC45, SUN397, EuroSAT and ImageNet.

Each is read from its published layout. Where a dataset's own files list the images of a split (DTD,
Food-101, RESISC45, SUN397) they are parsed here and labelled through CLIP's fixed class list, so the label
of a class never depends on which other classes happen to be on disk. Orders follow what the PAINT reference
sees (an ImageFolder over the split's images, or torchvision's class), which makes held-out validation
indices identical to the reference's.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch
from torch.utils.data import Subset
from torchvision import datasets as tv
from torchvision.datasets.utils import download_and_extract_archive

from ...errors import PaintRayError
from . import names
from .common import ClassIndex, FileDataset, Official, PaperDataset, Spec, brief, load_mat, read_lines, read_text, shown


def _sorted_like_imagefolder(samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """ImageFolder's order: class folders sorted by name, then files sorted by name within each."""
    return sorted(samples, key=lambda s: (Path(s[0]).parent.name, Path(s[0]).name))


# ---------------------------------------------------------------- Stanford Cars (torchvision's .mat reader)
_CARS_ANNOTATIONS = ("Stanford Cars annotations: a .mat file with 'annotations' (one record per image: bbox_x1, "
                     "bbox_y1, bbox_x2, bbox_y2, class 1..196, fname)")
_CARS_META = "the Stanford Cars meta file: a .mat file with 'class_names' (the 196 class names)"


def _cars_split(root: Path, split: str) -> tv.StanfordCars:
    base = root / "stanford_cars"
    annotations = base / ("devkit/cars_train_annos.mat" if split == "train" else "cars_test_annos_withlabels.mat")
    try:
        data = tv.StanfordCars(root, split=split)
    except Exception as e:  # noqa: BLE001 - find the file that is wrong, and say what it should be
        for path, what, key in ((annotations, _CARS_ANNOTATIONS, "annotations"),
                                (base / "devkit" / "cars_meta.mat", _CARS_META, "class_names")):
            found = load_mat(path, what, squeeze_me=True)
            if key not in found:
                have = sorted(k for k in found if not k.startswith("__"))
                raise PaintRayError(f"{path} has no variable {key!r} (it has {shown(have, 60)}); "
                                    f"expected {what}") from e
        raise PaintRayError(f"{annotations} could not be read as {_CARS_ANNOTATIONS} ({brief(e)})") from e
    for i, (_, label) in enumerate(getattr(data, "_samples", [])):
        if not 0 <= int(label) < len(names.CARS):
            raise PaintRayError(f"{annotations}: record {i} has class {shown(int(label) + 1)}; expected "
                                f"{_CARS_ANNOTATIONS}")
    return data


def _cars(root: Path) -> Official:
    return Official(_cars_split(root, "train"), _cars_split(root, "test"))


def _download_cars(root: Path) -> None:
    for split in ("train", "test"):
        tv.StanfordCars(root, split=split, download=True)


# ---------------------------------------------------------------- DTD: official train + val is train (PAINT)
def _dtd(root: Path) -> Official:
    base = root / "dtd" / "dtd"
    index = ClassIndex("dtd", names.DTD)

    def read(split_file: str) -> list[tuple[str, int]]:
        path = base / "labels" / split_file
        out = []
        for line in read_lines(path, "a DTD split file: one CLASS/IMAGE.jpg per line"):
            cls, _, fname = line.partition("/")
            out.append((str(base / "images" / cls / fname), index(cls, path)))
        return out

    def folder(samples: list[tuple[str, int]]) -> FileDataset:
        # the reference's ImageFolder over one folder holding these images
        return FileDataset(_sorted_like_imagefolder(samples))

    return Official(folder(read("train1.txt") + read("val1.txt")), folder(read("test1.txt")))


def _download_dtd(root: Path) -> None:
    tv.DTD(root, download=True)


# ---------------------------------------------------------------- Food-101: meta/{train,test}.json
def _food101(root: Path) -> Official:
    base = root / "food-101"
    index = ClassIndex("food101", [n.replace(" ", "_") for n in names.FOOD101])

    def read(split: str) -> FileDataset:
        path = base / "meta" / f"{split}.json"
        what = 'a JSON object of class -> image ids, e.g. {"apple_pie": ["apple_pie/1005649", …], …}'
        try:
            meta = json.loads(read_text(path, what))
        except json.JSONDecodeError as e:
            raise PaintRayError(f"food101: {path} is not valid JSON ({e.msg} at line {e.lineno}); "
                                f"expected {what}") from e
        if not isinstance(meta, dict) or not all(isinstance(v, list) and all(isinstance(r, str) for r in v)
                                                 for v in meta.values()):
            raise PaintRayError(f"food101: {path} holds {shown(meta, 60)}; expected {what}")
        # torchvision's order: classes as the JSON lists them, images in listed order
        return FileDataset([(str(base / "images" / f"{rel}.jpg"), index(cls, path))
                            for cls, rels in meta.items() for rel in rels])

    return Official(read("train"), read("test"))


def _download_food101(root: Path) -> None:
    tv.Food101(root, download=True)


# ---------------------------------------------------------------- GTSRB (torchvision's reader: folders + CSV)
def _gtsrb(root: Path) -> Official:
    training = root / "gtsrb" / "GTSRB" / "Training"
    found = sorted(p.name for p in training.iterdir() if p.is_dir())
    if len(found) != len(names.GTSRB):
        raise PaintRayError(f"gtsrb: {training} has {len(found)} class folders; expected {len(names.GTSRB)} "
                            f"(00000 … 00042)")
    _check_gtsrb_csv(root / "gtsrb" / "GT-final_test.csv")
    return Official(tv.GTSRB(root, split="train"), tv.GTSRB(root, split="test"))


def _check_gtsrb_csv(path: Path) -> None:
    """GT-final_test.csv as torchvision reads it: ';'-separated, with Filename and ClassId 0..42 columns."""
    what = "GTSRB's test labels: ';'-separated rows with a header naming Filename and ClassId (0..42)"
    rows = list(csv.DictReader(io.StringIO(read_text(path, what)), delimiter=";", skipinitialspace=True))
    if not rows or not {"Filename", "ClassId"} <= set(rows[0]):
        header = read_text(path, what).splitlines()[:1]
        raise PaintRayError(f"gtsrb: {path} has header {shown(header[0] if header else '', 60)}; expected {what}")
    for i, row in enumerate(rows):
        label = (row.get("ClassId") or "").strip()
        if not (label.isdigit() and int(label) < len(names.GTSRB)) or not row.get("Filename"):
            raise PaintRayError(f"gtsrb: {path} row {i + 2} has Filename {shown(row.get('Filename'), 40)}, ClassId "
                                f"{shown(row.get('ClassId'), 20)}; expected {what}")


def _download_gtsrb(root: Path) -> None:
    for split in ("train", "test"):
        tv.GTSRB(root, split=split, download=True)


# ---------------------------------------------------------------- RESISC45: resisc45-{train,test}.txt
def _resisc45(root: Path) -> Official:
    base = root / "resisc45"
    index = ClassIndex("resisc45", [n.replace(" ", "_") for n in names.RESISC45])

    def read(split: str) -> FileDataset:
        path = base / f"resisc45-{split}.txt"
        samples = []
        for fname in read_lines(path, "a RESISC45 split file: one CLASS_NNN.jpg per line"):
            cls = fname.rsplit("_", 1)[0]           # airplane_001.jpg -> airplane
            samples.append((str(base / "NWPU-RESISC45" / cls / fname), index(cls, path)))
        return FileDataset(_sorted_like_imagefolder(samples))

    # The reference holds RESISC45's validation out of train (its val file is unused), so do we.
    return Official(read("train"), read("test"))


# ---------------------------------------------------------------- SUN397: ClassName.txt + partition 1
def _sun397(root: Path) -> Official:
    base = root / "SUN397"
    classes = [c[3:] for c in read_lines(base / "ClassName.txt",       # "/a/abbey" -> "abbey"
                                         "SUN397's class list: one /l/class_name per line, 397 lines")]
    if len(classes) != len(names.SUN397):
        raise PaintRayError(f"sun397: {base / 'ClassName.txt'} lists {len(classes)} classes; expected 397")
    index = ClassIndex("sun397", classes)

    def read(list_file: str) -> FileDataset:
        path = base / list_file
        samples = []
        for line in read_lines(path, "a SUN397 partition file: one /l/class_name/sun_….jpg per line"):
            parts = line.lstrip("/").split("/")
            samples.append((str(base.joinpath(*parts)), index("/".join(parts[1:-1]), path)))
        return FileDataset(samples)

    return Official(read("Training_01.txt"), read("Testing_01.txt"))


_SUN397_PARTITIONS = ("https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip",
                      "29a205c0a0129d21f36cbecfefe81881")


def _download_sun397(root: Path) -> None:
    tv.SUN397(root, download=True)
    if not (root / "SUN397" / "Training_01.txt").is_file():
        url, md5 = _SUN397_PARTITIONS
        download_and_extract_archive(url, download_root=str(root / "SUN397"), md5=md5)


# ---------------------------------------------------------------- EuroSAT: 2750/<Class>/, split 10% / 10% per class
VAL_SHARE = 0.1


def eurosat_split(targets: list[int], n_classes: int) -> dict[str, list[int]]:
    """Per class: a seeded shuffle, then k to val and k to test, k = 10% of all images / classes.

    The reference moved 270 random images per class to val and 270 to test (27,000 images, 10 classes:
    21,600 / 2,700 / 2,700) with an unseeded shuffle; this is the same split, seeded so it is reproducible.
    """
    k = round(VAL_SHARE * len(targets) / n_classes)
    gen = torch.Generator().manual_seed(0)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in range(n_classes):
        members = [i for i, t in enumerate(targets) if t == c]
        perm = torch.randperm(len(members), generator=gen).tolist()
        picked = [members[j] for j in perm]
        out["val"] += picked[:k]
        out["test"] += picked[k:2 * k]
        out["train"] += picked[2 * k:]
    return {s: sorted(v) for s, v in out.items()}   # ImageFolder order, as over the reference's split folders


def _eurosat(root: Path) -> Official:
    folder = root / "eurosat" / "2750"
    full = tv.ImageFolder(str(folder))
    if tuple(full.classes) != names.EUROSAT_FOLDERS:
        raise PaintRayError(f"eurosat: {folder} has class folders {', '.join(full.classes)}; expected "
                            f"{', '.join(names.EUROSAT_FOLDERS)}")
    split = eurosat_split(full.targets, len(names.EUROSAT))
    return Official(Subset(full, split["train"]), Subset(full, split["test"]), val=Subset(full, split["val"]),
                    val_indices=split["val"], val_source=f"eurosat/2750 ({len(full)} images, ImageFolder order): "
                    f"10% per class, seeded shuffle (seed 0)")


def _download_eurosat(root: Path) -> None:
    tv.EuroSAT(root, download=True)


# ---------------------------------------------------------------- ImageNet: train/ and val/ class folders
def _imagenet(root: Path) -> Official:
    out = []
    for split in ("train", "val"):
        folder = root / "imagenet" / split
        data = tv.ImageFolder(str(folder))
        if len(data.classes) != 1000:
            raise PaintRayError(f"imagenet: {folder} has {len(data.classes)} class folders; expected 1000 "
                                f"(one per WordNet id, n01440764 …)")
        out.append(data)
    return Official(out[0], out[1])


DATASETS = [
    PaperDataset("cars", names.CARS, names.TEMPLATES["cars"],
                 Spec("Stanford Cars", ("stanford_cars/devkit/cars_meta.mat",
                                        "stanford_cars/devkit/cars_train_annos.mat",
                                        "stanford_cars/cars_test_annos_withlabels.mat"),
                      ("stanford_cars/cars_train", "stanford_cars/cars_test"),
                      "stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
                      "cars_test_annos_withlabels.mat, cars_train/*.jpg, cars_test/*.jpg}"),
                 _cars, _download_cars),
    PaperDataset("dtd", names.DTD, names.TEMPLATES["dtd"],
                 Spec("DTD", ("dtd/dtd/labels/train1.txt", "dtd/dtd/labels/val1.txt", "dtd/dtd/labels/test1.txt"),
                      ("dtd/dtd/images",), "dtd/dtd/{labels/{train1,val1,test1}.txt, images/CLASS/*.jpg}"),
                 _dtd, _download_dtd),
    PaperDataset("food101", names.FOOD101, names.TEMPLATES["food101"],
                 Spec("Food-101", ("food-101/meta/train.json", "food-101/meta/test.json"), ("food-101/images",),
                      "food-101/{meta/{train,test}.json, images/CLASS/*.jpg}"),
                 _food101, _download_food101),
    PaperDataset("gtsrb", names.GTSRB, names.TEMPLATES["gtsrb"],
                 Spec("GTSRB", ("gtsrb/GT-final_test.csv",), ("gtsrb/GTSRB/Training", "gtsrb/GTSRB/Final_Test/Images"),
                      "gtsrb/{GTSRB/Training/000NN/*.ppm, GTSRB/Final_Test/Images/*.ppm, GT-final_test.csv}"),
                 _gtsrb, _download_gtsrb),
    PaperDataset("resisc45", names.RESISC45, names.TEMPLATES["resisc45"],
                 Spec("RESISC45", ("resisc45/resisc45-train.txt", "resisc45/resisc45-test.txt"),
                      ("resisc45/NWPU-RESISC45",),
                      "resisc45/{resisc45-train.txt, resisc45-test.txt, NWPU-RESISC45/CLASS/*.jpg}"),
                 _resisc45),
    PaperDataset("sun397", names.SUN397, names.TEMPLATES["sun397"],
                 Spec("SUN397", ("SUN397/ClassName.txt", "SUN397/Training_01.txt", "SUN397/Testing_01.txt"),
                      ("SUN397",), "SUN397/{ClassName.txt, Training_01.txt, Testing_01.txt, a/abbey/*.jpg, …}"),
                 _sun397, _download_sun397),
    PaperDataset("eurosat", names.EUROSAT, names.TEMPLATES["eurosat"],
                 Spec("EuroSAT", (), ("eurosat/2750",), "eurosat/2750/{AnnualCrop,Forest,…,SeaLake}/*.jpg"),
                 _eurosat, _download_eurosat),
    PaperDataset("imagenet", lambda: names.imagenet()[0], lambda: names.imagenet()[1],
                 Spec("ImageNet", (), ("imagenet/train", "imagenet/val"),
                      "imagenet/{train,val}/WNID/*.JPEG (1000 class folders each)"),
                 _imagenet),
]
