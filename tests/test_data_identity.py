"""A paper task's fingerprint is its data's content, not its location; the eval cache follows it.

Datasets are written in their real on-disk formats (paper_fixtures), rewritten in place under the same file
names with other images and labels (the fingerprint must change and prepare_task must serve the new pixels),
and copied to another root (the fingerprint must not change).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from paint_ray.data import prepare
from paint_ray.caches.eval import prepare_task
from paint_ray.tasks import get_task
from paint_ray.tasks.paper import common

import paper_fixtures as pf


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINT_RAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "eval_cache"


def entries(cache_home: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in cache_home.iterdir() if p.is_dir() and p.name.startswith(prefix))


def fingerprint(name: str, root: Path) -> str:
    return get_task(name, str(root)).fingerprint


def rewrite_mnist(root: Path, seed: int) -> tuple[np.ndarray, list[int]]:
    """Other images and labels in the same IDX files (same names, same counts): the test split's."""
    raw = root / "MNIST" / "raw"
    for prefix, n in (("train", 50), ("t10k", 10)):
        rng = np.random.default_rng(seed + n)
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = [int(y) for y in rng.integers(0, 10, n)]
        pf._idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        pf._idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return images, labels


def test_mnist_rewritten_in_place_gets_a_new_fingerprint_and_the_eval_cache_serves_the_new_data(tmp_path, cache_home):
    root = tmp_path / "data"
    written = pf.write_mnist(root)
    before = get_task("mnist", str(root))
    old = prepare_task(before, "test", 32)
    assert old.labels.tolist() == written.test

    new_images, new_labels = rewrite_mnist(root, seed=1234)
    assert new_labels != written.test
    after = get_task("mnist", str(root))
    assert after.fingerprint != before.fingerprint
    fresh = prepare_task(after, "test", 32)
    assert fresh.labels.tolist() == new_labels
    assert torch.equal(fresh.images, prepare(after.split("test"), 32).images)      # the new pixels, decoded
    assert not torch.equal(fresh.images, old.images)
    assert np.array_equal(np.asarray(after.split("test")[0][0]), new_images[0])
    assert len(entries(cache_home, "mnist-test-32px")) == 2                          # a new entry, not the stale one

    # Identity is content: a copy under another root (mtimes kept or not), or the same bytes written anew.
    shutil.copytree(root, tmp_path / "copy")
    shutil.copytree(root, tmp_path / "plain", copy_function=shutil.copyfile)        # new mtimes
    assert fingerprint("mnist", tmp_path / "copy") == fingerprint("mnist", tmp_path / "plain") == after.fingerprint
    hit = prepare_task(get_task("mnist", str(tmp_path / "copy")), "test", 32)
    assert torch.equal(hit.images, fresh.images) and len(entries(cache_home, "mnist-test-32px")) == 2
    pf.write_mnist(tmp_path / "again")
    assert fingerprint("mnist", tmp_path / "again") == before.fingerprint           # the original content


def dtd_images(root: Path) -> list[Path]:
    return sorted((root / "dtd" / "dtd" / "images").rglob("*.jpg"))


def test_dtd_images_and_labels_rewritten_in_place_change_the_fingerprint(tmp_path, cache_home):
    root = tmp_path / "data"
    written = pf.write_dtd(root)
    before = get_task("dtd", str(root))
    old = prepare_task(before, "test", 32)
    assert old.labels.tolist() == written.test

    # Same names, other pixels (and other sizes): the names and sizes, and the sampled content, tell them apart.
    for k, path in enumerate(dtd_images(root)):
        pf.save_image(path, 5000 + k, 10, 14)
    pixels_only = get_task("dtd", str(root))
    assert pixels_only.fingerprint != before.fingerprint
    repainted = prepare_task(pixels_only, "test", 32)
    assert repainted.labels.tolist() == written.test
    assert torch.equal(repainted.images, prepare(pixels_only.split("test"), 32).images)
    assert not torch.equal(repainted.images, old.images)

    # Same file names, other labels: the test list now names the banded images of train1 and test1.
    labels_dir = root / "dtd" / "dtd" / "labels"
    lines = [line for f in ("train1.txt", "test1.txt") for line in (labels_dir / f).read_text().split()
             if line.startswith("banded/")]
    (labels_dir / "test1.txt").write_text("\n".join(lines) + "\n")
    relabelled = get_task("dtd", str(root))
    assert relabelled.fingerprint not in (before.fingerprint, pixels_only.fingerprint)
    fresh = prepare_task(relabelled, "test", 32)
    banded = relabelled.classnames.index("banded")
    assert fresh.labels.tolist() == [banded] * 8 != written.test
    assert torch.equal(fresh.images, prepare(relabelled.split("test"), 32).images)
    assert len(entries(cache_home, "dtd-test-32px")) == 3

    shutil.copytree(root, tmp_path / "copy")             # copy2: the same names, bytes, sizes and mtimes
    assert fingerprint("dtd", tmp_path / "copy") == relabelled.fingerprint


def test_eurosat_folder_copy_keeps_and_any_file_change_renews_the_fingerprint(tmp_path):
    pf.write_eurosat(tmp_path / "a", per_class=3)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    first = fingerprint("eurosat", tmp_path / "a")
    assert fingerprint("eurosat", tmp_path / "b") == first and str(tmp_path) not in first
    river = tmp_path / "a" / "eurosat" / "2750" / "River"
    pf.save_image(river / "River_2.jpg", 999, 8, 8)                          # rewritten in place
    second = fingerprint("eurosat", tmp_path / "a")
    assert second != first
    (river / "River_3.jpg").rename(river / "River_9.jpg")                    # renamed
    third = fingerprint("eurosat", tmp_path / "a")
    assert third not in (first, second)
    (river / "River_9.jpg").unlink()                                         # removed
    assert fingerprint("eurosat", tmp_path / "a") not in (first, second, third)
    assert fingerprint("eurosat", tmp_path / "b") == first                   # the copy is untouched


def test_large_folders_are_scanned_once_per_process_while_their_folders_are_unchanged(tmp_path, monkeypatch):
    scans = []
    real = common._folder_identity
    monkeypatch.setattr(common, "_folder_identity", lambda name, folder: scans.append(folder) or real(name, folder))
    monkeypatch.setattr(common, "MEMO_MIN_FILES", 5)                        # these 30 images count as large
    monkeypatch.setattr(common, "_FOLDER_MEMO", {})
    pf.write_eurosat(tmp_path, per_class=3)
    first = fingerprint("eurosat", tmp_path)
    assert fingerprint("eurosat", tmp_path) == first and len(scans) == 1   # memoised
    river = tmp_path / "eurosat" / "2750" / "River"
    (river / "River_1.jpg").rename(river / "River_7.jpg")                   # a folder's mtime changes: rescan
    renamed = fingerprint("eurosat", tmp_path)
    assert renamed != first and len(scans) == 2
    time.sleep(0.05)
    pf.save_image(river / "River_2.jpg", 999, 8, 8)                          # in place: the documented gap
    assert fingerprint("eurosat", tmp_path) == renamed and len(scans) == 2
    common.forget_fingerprints()
    assert fingerprint("eurosat", tmp_path) != renamed and len(scans) == 3
    monkeypatch.setattr(common, "MEMO_MIN_FILES", 10_000)                   # small trees: rescanned every time
    common.forget_fingerprints()
    fingerprint("eurosat", tmp_path)
    fingerprint("eurosat", tmp_path)
    assert len(scans) == 5


def test_index_files_above_the_hash_limit_enter_by_size_and_their_edges_not_their_mtime(tmp_path, monkeypatch):
    pf.write_mnist(tmp_path)
    first = fingerprint("mnist", tmp_path)
    monkeypatch.setattr(common, "HASH_LIMIT", 100)                          # the image files are now "large"
    by_edges = fingerprint("mnist", tmp_path)
    assert by_edges != first
    raw = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    st = raw.stat()
    os.utime(raw, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))             # only the time changes: same data
    assert fingerprint("mnist", tmp_path) == by_edges
    data = bytearray(raw.read_bytes())
    data[-1] ^= 0xFF                                                        # the last byte changes
    raw.write_bytes(bytes(data))
    assert fingerprint("mnist", tmp_path) != by_edges


def test_a_copy_without_mtimes_fingerprints_the_same_and_full_mode_hashes_every_byte(tmp_path, monkeypatch):
    pf.write_eurosat(tmp_path / "a", per_class=3)
    shutil.copytree(tmp_path / "a", tmp_path / "plain", copy_function=shutil.copyfile)   # new mtimes
    sampled = fingerprint("eurosat", tmp_path / "a")
    assert fingerprint("eurosat", tmp_path / "plain") == sampled
    monkeypatch.setenv("PAINT_RAY_FINGERPRINT", "full")
    full = fingerprint("eurosat", tmp_path / "a")
    assert full != sampled and fingerprint("eurosat", tmp_path / "plain") == full
    monkeypatch.setenv("PAINT_RAY_FINGERPRINT", "fast")
    with pytest.raises(Exception, match="PAINT_RAY_FINGERPRINT='fast' is not one of sampled, full"):
        fingerprint("eurosat", tmp_path / "a")
