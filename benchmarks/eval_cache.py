"""Eval cache: build time, and read throughput of a cache hit vs decoding the JPEGs again.

Writes a miniature ImageFolder of `--n` JPEGs (256 px) in a temporary folder, then measures, at 224 px:
  build   decode + resize every JPEG once and write the memory-mapped .npy entry (eval_cache.cached_prepare)
  hit     a later run: open the entry and read every image, batch by batch, as the evaluator does; both
          from the page cache (warm) and after asking the kernel to drop the file's pages (cold, fadvise)
  decode  the same decode path without the cache (eval_cache.decode), i.e. what every run paid before
Both paths produce the same uint8 tensors (checked). The last line is `ratio: X` = cold-hit img/s over
decode img/s. Runs in about a minute on 2 cores with the default --n 2000.

    python benchmarks/eval_cache.py [--n 2000] [--size 224] [--batch 256]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_jpegs(root: Path, n: int, side: int = 256, classes: int = 10) -> None:
    """Photo-like JPEGs (smooth gradients + noise, ~quality 90): decode cost close to real photos."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    for i in range(n):
        a, b, c = rng.uniform(0, 255, 3)
        base = np.stack([a * xx + (255 - a) * yy, b * yy, c * (1 - xx)], -1)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        folder = root / f"class_{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:06d}.jpg", quality=90)


def read_all(images: torch.Tensor, batch: int) -> float:
    """Seconds to read every image once, batch by batch (each batch copied out, as .to(device) would)."""
    t0 = time.perf_counter()
    checksum = 0
    for start in range(0, len(images), batch):
        checksum += int(images[start:start + batch].clone().view(-1)[::4096].sum())
    assert checksum >= 0
    return time.perf_counter() - t0


def drop_from_page_cache(path: Path) -> bool:
    """Ask the kernel to forget this one file's cached pages (no privileges, no effect on other files)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of JPEGs (default 2000)")
    parser.add_argument("--size", type=int, default=224, help="model resolution (default 224)")
    parser.add_argument("--batch", type=int, default=256, help="evaluation batch size for reading")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="paint_ray_bench_") as tmp:
        tmp = Path(tmp)
        os.environ["PAINT_RAY_HOME"] = str(tmp / "home")   # never touch the user's cache
        from torchvision.datasets import ImageFolder

        from paint_ray.caches import eval as eval_cache
        from paint_ray.tasks import Task

        t0 = time.perf_counter()
        write_jpegs(tmp / "jpegs", args.n)
        jpeg_mb = sum(p.stat().st_size for p in (tmp / "jpegs").rglob("*.jpg")) / 1e6
        print(f"wrote {args.n} JPEGs 256x256 ({jpeg_mb:.1f} MB) in {time.perf_counter() - t0:.1f}s; "
              f"decode workers: {eval_cache._workers(args.n)} (cpu_count {os.cpu_count()})")

        dataset = ImageFolder(str(tmp / "jpegs"))
        task = Task("bench", tuple(dataset.classes), ("{}",), lambda split: dataset, f"bench-{tmp.name}")

        t0 = time.perf_counter()
        built = eval_cache.cached_prepare(task, "test", args.size, progress=False)
        build_s = time.perf_counter() - t0
        entry = eval_cache.entry_dir(task, "test", args.size)
        entry_mb = (entry / "images.npy").stat().st_size / 1e6
        print(f"build:  {build_s:6.2f}s  {args.n / build_s:9.0f} img/s  (decode + resize + write {entry_mb:.0f} MB)")
        del built

        warm = []
        for _ in range(3):
            t0 = time.perf_counter()
            hit = eval_cache.cached_prepare(task, "test", args.size, progress=False)
            warm.append(time.perf_counter() - t0 + read_all(hit.images, args.batch))
            del hit
        warm_s = min(warm)
        print(f"hit:    {warm_s:6.2f}s  {args.n / warm_s:9.0f} img/s  (warm page cache, best of 3)")

        cold_ok = drop_from_page_cache(entry / "images.npy")
        t0 = time.perf_counter()
        hit = eval_cache.cached_prepare(task, "test", args.size, progress=False)
        cold_s = time.perf_counter() - t0 + read_all(hit.images, args.batch)
        print(f"hit:    {cold_s:6.2f}s  {args.n / cold_s:9.0f} img/s  "
              f"({'after dropping the entry from the page cache' if cold_ok else 'cold drop unavailable: warm'})")

        t0 = time.perf_counter()
        decoded = eval_cache.decode(dataset, args.size, progress=False)
        decode_s = time.perf_counter() - t0
        print(f"decode: {decode_s:6.2f}s  {args.n / decode_s:9.0f} img/s  (same decode path, no cache)")

        assert torch.equal(decoded.images, hit.images) and torch.equal(decoded.labels, hit.labels), \
            "cache hit and decoding differ"
        print(f"identical uint8 tensors: {tuple(hit.images.shape)}; warm-hit/decode "
              f"{(args.n / warm_s) / (args.n / decode_s):.1f}x")
        del hit
        print(f"ratio: {(args.n / cold_s) / (args.n / decode_s):.1f}")


if __name__ == "__main__":
    main()
