"""KITTI distance: how far is the nearest car? Four classes from KITTI's object-detection training set.

Follows the PAINT reference (itself after VTAB): the label is the bucket of the smallest forward distance
(z, metres) of any Car/Van/Truck in the label file, thresholds [-100, 8, 20, 999] (10,000 when there is
none); train/val/test are split by video, 10% of videos each to val and test, numpy seed 123, using the
devkit's mapping files. Class names are CLIP's whole sentences, the template is '{}'.
"""
from __future__ import annotations

import collections
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets.utils import download_and_extract_archive

from ...errors import PaintRayError
from . import names
from .common import Official, PaperDataset, Spec, brief, shown

THRESHOLDS = np.array([-100.0, 8.0, 20.0, 999.0])
VEHICLES = ("Car", "Van", "Truck")
_PERCENT_VAL_VIDEOS = _PERCENT_TEST_VIDEOS = 10
_URL = "https://s3.eu-central-1.amazonaws.com/avg-kitti/"
_ARCHIVES = ("data_object_image_2.zip", "data_object_label_2.zip", "devkit_object.zip")


def distance_label(label_file: Path) -> int:
    """Bucket of the nearest vehicle's z distance (a KITTI label line: type, …, location x y z at 11:14)."""
    dists = [10000.0]
    for line in label_file.read_text().splitlines():
        fields = line.split(" ")
        if fields and fields[0] in VEHICLES:
            dists.append(float(fields[13]))
    return int(np.max(np.where(THRESHOLDS - min(dists) < 0)))


def _mapping(raw: Path) -> tuple[list[int], list[str]]:
    """train_rand.txt (1-based line ids) and train_mapping.txt's lines, read from the devkit zip."""
    zpath = raw / "devkit_object.zip"
    wanted = ("mapping/train_rand.txt", "mapping/train_mapping.txt")
    expected = "KITTI's devkit_object.zip with mapping/train_rand.txt and mapping/train_mapping.txt"
    try:
        with zipfile.ZipFile(zpath) as z:
            raw_bytes = {n: z.read(n) for n in z.namelist() if n in wanted}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
        raise PaintRayError(f"kitti_distance: {zpath} is not a valid zip ({brief(e)}); expected {expected}") from e
    if len(raw_bytes) != 2:
        raise PaintRayError(f"kitti_distance: {zpath} lacks {' or '.join(w for w in wanted if w not in raw_bytes)}; "
                            f"expected {expected}")
    read = {}
    for n, data in raw_bytes.items():
        try:
            read[n] = data.decode()
        except UnicodeDecodeError as e:
            raise PaintRayError(f"kitti_distance: {zpath}:{n} is not text (byte 0x{data[e.start]:02x} at offset "
                                f"{e.start}); expected {expected}") from e
    mapping = read[wanted[1]].splitlines()
    ids = []
    for x in read[wanted[0]].split(","):
        if x.strip():
            if not x.strip().isdigit() or not 1 <= int(x) <= len(mapping):
                raise PaintRayError(f"kitti_distance: {zpath}:{wanted[0]} lists {shown(x.strip(), 40)}; expected "
                                    f"comma-separated line numbers 1..{len(mapping)} of {wanted[1]}")
            ids.append(int(x) - 1)
    for i in set(ids):
        if len(mapping[i].split(" ")) < 2:
            raise PaintRayError(f"kitti_distance: {zpath}:{wanted[1]} line {i + 1} is {shown(mapping[i], 60)}; "
                                f"expected 'DATE DRIVE FRAME' per line")
    return ids, mapping


def video_splits(line_ids: list[int], mapping_lines: list[str]) -> dict[str, list[int]]:
    """Image ids per split, by video: the reference's _build_splits, order for order."""
    video_to_image: dict[str, list[int]] = collections.defaultdict(list)
    for image_id, line_id in enumerate(line_ids):
        video_to_image[mapping_lines[line_id].split(" ")[1]].append(image_id)
    rng = np.random.RandomState(123)   # what np.random.seed(123) gives the reference's np.random.choice
    n_test = max(1, _PERCENT_TEST_VIDEOS * len(video_to_image) // 100)
    n_val = max(1, _PERCENT_VAL_VIDEOS * len(video_to_image) // 100)
    test = set(rng.choice(sorted(video_to_image), n_test, replace=False))
    val = set(rng.choice(sorted(set(video_to_image) - test), n_val, replace=False))
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for video, images in video_to_image.items():
        out["test" if video in test else "val" if video in val else "train"].extend(images)
    return out


class KittiDistance(Dataset):
    """(PIL image, distance bucket) for the given image ids of KITTI's object training set."""

    def __init__(self, raw: Path, image_ids: list[int]):
        self.raw, self.image_ids = raw, list(image_ids)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        stem = f"{self.image_ids[i]:06d}"
        with Image.open(self.raw / "training" / "image_2" / f"{stem}.png") as img:
            image = img.convert("RGB")
        return image, distance_label(self.raw / "training" / "label_2" / f"{stem}.txt")


def _kitti(root: Path) -> Official:
    raw = root / "kitti" / "raw"
    splits = video_splits(*_mapping(raw))
    return Official(KittiDistance(raw, splits["train"]), KittiDistance(raw, splits["test"]),
                    val=KittiDistance(raw, splits["val"]), val_indices=splits["val"],
                    val_source="KITTI object training image ids: 10% of videos (numpy seed 123)")


def _download_kitti(root: Path) -> None:
    for name in _ARCHIVES:
        download_and_extract_archive(_URL + name, download_root=str(root / "kitti" / "raw"), filename=name)


DATASETS = [
    PaperDataset("kitti_distance", names.KITTI, names.TEMPLATES["kitti_distance"],
                 Spec("KITTI", ("kitti/raw/devkit_object.zip",),
                      ("kitti/raw/training/image_2", "kitti/raw/training/label_2"),
                      "kitti/raw/{devkit_object.zip (mapping/train_rand.txt, mapping/train_mapping.txt), "
                      "training/image_2/NNNNNN.png, training/label_2/NNNNNN.txt}"),
                 _kitti, _download_kitti),
]
