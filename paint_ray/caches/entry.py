"""What every cache entry shares: keys by content, one builder per node, atomic builds, unreadable files set aside.

- `key(cache, version, *parts)`: the content key of an entry, through `identity.digest`, with the cache's
  name and version in it, so a change of what a cache stores (a new resize mode, a new format) never finds
  an old entry.
- `lock(path, cache)`: the entry's file lock, acquired (concurrent builders on a node build once).
- `building(path)`: a temporary folder next to `path`; when the block ends without error every file in it
  is fsynced and the folder renamed into place, so a crash or a power cut leaves no half-written entry.
- `read_or_set_aside(path)`: a cached tensor file, or None after moving a corrupt one aside with a warning.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..errors import PaintRayError
from ..identity import digest
from ..models.checkpoints import load_tensors


def key(cache: str, version: str, *parts) -> str:
    """The content key of one entry of `cache`: its version and everything its bytes depend on."""
    return digest([cache, version, *parts])


def lock(path: Path, cache: str):
    """The acquired file lock of a cache entry (one builder per node); a one-line error when the cache's
    folder cannot be written."""
    from filelock import FileLock
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        held = FileLock(str(path) + ".lock")
        held.acquire()
    except OSError as e:
        raise PaintRayError(f"cannot write the {cache} under {path.parent}: {e.strerror or e}; "
                            f"set PAINT_RAY_HOME to a writable folder") from e
    return held


@contextmanager
def building(path: Path, cache: str) -> Iterator[Path]:
    """A temporary folder to build the entry `path` in; published (fsync, rename) only if the block succeeds."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        for f in tmp.iterdir():         # on disk before the rename publishes the entry
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
        if path.exists():               # a stale or corrupt entry under the same key
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise PaintRayError(f"cannot write the {cache} entry {path}: {e.strerror or e}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_or_set_aside(path: Path) -> dict[str, torch.Tensor] | None:
    """A cached tensor file, or None (after moving it aside with a one-line warning) when it is corrupt."""
    if not path.is_file():
        return None
    try:
        return load_tensors(path)
    except PaintRayError:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        print(f"paint-ray: warning: cached {path.parent.name}/{path.name} is corrupt; set aside as {aside.name} "
              f"and recomputed")
        return None
