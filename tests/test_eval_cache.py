"""The on-disk eval cache: decoded once, read back memory-mapped, keyed on everything the bytes depend on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from paint_ray.caches import eval as eval_cache
from paint_ray.data import prepare
from paint_ray.caches.eval import prepare_task
from paint_ray.errors import PaintRayError
from paint_ray.tasks import ArraySplit, Task, get_task

import paper_fixtures as pf


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PAINT_RAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "eval_cache"


class CountingImages:
    """A map-style dataset of real PNG files that counts how often an image is decoded."""

    def __init__(self, paths, labels):
        self.paths, self.labels, self.decoded = paths, labels, 0

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        self.decoded += 1
        with Image.open(self.paths[i]) as img:
            return img.convert("RGB"), self.labels[i]


class CountingLoader:
    def __init__(self, data):
        self.data, self.calls = data, 0

    def __call__(self, split):
        self.calls += 1
        return self.data


def png_task(tmp_path, n=12, fingerprint="pngs-v1", size=(20, 14)) -> tuple[Task, CountingLoader]:
    paths = []
    for i in range(n):
        pf.save_image(tmp_path / "pngs" / f"{i}.png", i, *size)
        paths.append(tmp_path / "pngs" / f"{i}.png")
    loader = CountingLoader(CountingImages(paths, [i % 3 for i in range(n)]))
    return Task("pngs", ("a", "b", "c"), ("{}",), loader, fingerprint), loader


def entries(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir() if p.is_dir()) if cache_dir.exists() else []


def test_hit_returns_identical_arrays_without_decoding_again(tmp_path, cache_home):
    task, loader = png_task(tmp_path)
    first = eval_cache.cached_prepare(task, "test", 16, progress=False)
    assert loader.data.decoded == 12 and first.images.dtype == torch.uint8
    assert first.images.shape == (12, 3, 16, 16)
    in_memory = prepare(loader.data, 16)                                # the uncached path, same pixels
    assert torch.equal(first.images, in_memory.images) and torch.equal(first.labels, in_memory.labels)
    [entry] = entries(cache_home)
    mtime = (cache_home / entry / "images.npy").stat().st_mtime_ns
    decoded = loader.data.decoded
    second = eval_cache.cached_prepare(task, "test", 16, progress=False)
    assert loader.data.decoded == decoded                                  # nothing decoded
    assert (cache_home / entry / "images.npy").stat().st_mtime_ns == mtime  # nothing rewritten
    assert torch.equal(second.images, first.images) and torch.equal(second.labels, first.labels)
    assert isinstance(np.load(cache_home / entry / "images.npy", mmap_mode="r"), np.memmap)


def test_every_preprocessing_parameter_is_in_the_key(tmp_path, cache_home, monkeypatch):
    task, loader = png_task(tmp_path)
    eval_cache.cached_prepare(task, "test", 16, progress=False)
    eval_cache.cached_prepare(task, "test", 24, progress=False)          # another image size
    assert loader.data.decoded == 24 and len(entries(cache_home)) == 2
    assert eval_cache.cached_prepare(task, "test", 24, progress=False).images.shape[-1] == 24
    eval_cache.cached_prepare(task, "val", 16, progress=False)           # another split
    other = Task(task.name, task.classnames, task.templates, task.loader, "pngs-v2")
    eval_cache.cached_prepare(other, "test", 16, progress=False)         # other files on disk
    monkeypatch.setattr(eval_cache, "RESIZE_MODE", "bilinear+center-crop")
    eval_cache.cached_prepare(task, "test", 16, progress=False)          # another resize mode
    assert loader.data.decoded == 12 * 5 and len(entries(cache_home)) == 5


def test_prepare_task_routes_files_through_the_cache_and_arrays_through_memory(tmp_path, cache_home):
    task, loader = png_task(tmp_path)
    a = prepare_task(task, "test", 16)
    b = prepare_task(task, "test", 16)
    assert loader.calls == 1 and loader.data.decoded == 12    # the hit does not even list the split
    assert torch.equal(a.images, b.images) and len(entries(cache_home)) == 1
    arrays = ArraySplit(np.zeros((4, 16, 16, 3), np.uint8), np.arange(4))
    in_memory = Task("arrays", ("x",), ("{}",), lambda split: arrays, "arrays-v1")
    assert prepare_task(in_memory, "test", 16).images.shape == (4, 3, 16, 16)
    assert len(entries(cache_home)) == 1                      # ArraySplits never touch the disk


def test_a_paper_task_is_cached_and_equals_the_decoded_files(tmp_path, cache_home):
    pf.write_dtd(tmp_path / "data")
    task = get_task("dtd", str(tmp_path / "data"))
    cached = prepare_task(task, "val", 32)
    assert torch.equal(cached.images, prepare(task.split("val"), 32).images)
    assert cached.labels.tolist() == [task.split("val")[i][1] for i in range(len(task.split("val")))]
    assert [e.split("-")[:3] for e in entries(cache_home)] == [["dtd", "val", "32px"]]


def test_worker_processes_decode_identically(tmp_path, cache_home):
    task, loader = png_task(tmp_path, n=600, size=(6, 5))     # above the threshold for DataLoader workers
    assert eval_cache._workers(600) >= 1
    cached = eval_cache.cached_prepare(task, "train", 8, progress=False)
    assert torch.equal(cached.images, prepare(loader.data, 8).images)
    assert cached.labels.tolist() == [i % 3 for i in range(600)]


def test_a_failed_build_leaves_nothing_behind(tmp_path, cache_home):
    task, loader = png_task(tmp_path)
    loader.data.paths[5].write_bytes(b"\x89PNG truncated")
    with pytest.raises(PaintRayError) as e:
        eval_cache.cached_prepare(task, "test", 16, progress=False)
    assert "item 5" in str(e.value) and "\n" not in str(e.value)
    assert entries(cache_home) == []                          # neither an entry nor a temporary folder
    pf.save_image(loader.data.paths[5], 5, 20, 14)
    assert eval_cache.cached_prepare(task, "test", 16, progress=False).images.shape[0] == 12


def test_a_corrupt_entry_is_rebuilt(tmp_path, cache_home):
    task, loader = png_task(tmp_path)
    first = eval_cache.cached_prepare(task, "test", 16, progress=False).images.clone()   # off the memory map
    [entry] = entries(cache_home)
    (cache_home / entry / "images.npy").write_bytes(b"garbage")
    again = eval_cache.cached_prepare(task, "test", 16, progress=False)
    assert loader.data.decoded == 24 and torch.equal(again.images, first)


def test_a_task_without_fingerprint_is_decoded_but_never_cached(tmp_path, cache_home):
    task, loader = png_task(tmp_path, fingerprint="")
    first = prepare_task(task, "test", 16)
    assert torch.equal(prepare_task(task, "test", 16).images, first.images)
    assert loader.data.decoded == 24 and entries(cache_home) == []
