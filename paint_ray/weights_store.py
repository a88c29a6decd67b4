"""Weights travel by name through the study's storage: saved once, fetched by whoever needs them.

A weight file (a θ1, a merge, a sequential start point) lives in a node's content-addressed cache under
PAINT_RAY_HOME (`finetuned/<job key>.safetensors`, ...). Whoever writes one publishes it to the storage
every node reaches (a folder, or a URI pyarrow's filesystems read, e.g. s3://bucket/prefix — the same
storage Ray Tune uses); whoever needs one on another node fetches it into its own cache by the same
relative name. The names are digests of what the weights were computed from, so a file under a name is
never replaced by other content, and the driver passes names, never tensors.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from .errors import PaintRayError
from .paths import home


def _fs(root: str):
    """(filesystem, base path) for a local folder or a URI."""
    from pyarrow import fs
    if "://" in root:
        return fs.FileSystem.from_uri(root)
    return fs.LocalFileSystem(), str(Path(root).expanduser().resolve())


def relative_name(path: str | Path) -> str:
    """A cache file's name relative to PAINT_RAY_HOME (what nodes agree on)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(home()).as_posix()
    except ValueError:
        raise PaintRayError(f"weights {path} are not in this node's cache ({home()}); only cached weights travel") from None


def publish(path: str | Path, root: str) -> str:
    """Copy a cached weight file to the storage (once: an existing name is left as it is); returns its name."""
    name = relative_name(path)
    fs, base = _fs(root)
    target = f"{base}/weights/{name}"
    if fs.get_file_info(target).type.name != "NotFound":
        return name
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
    with open(path, "rb") as src, fs.open_output_stream(tmp) as dst:
        while chunk := src.read(1 << 24):
            dst.write(chunk)
    fs.move(tmp, target)
    return name


def fetch(name: str, root: str | None) -> Path:
    """The node-local path of a weight file: from this node's cache, else copied in from the storage."""
    local = home() / name
    if local.is_file():
        return local
    if not root:
        raise PaintRayError(f"weights {name} are not in this node's cache and no storage was given to fetch them")
    fs, base = _fs(root)
    source = f"{base}/weights/{name}"
    if fs.get_file_info(source).type.name == "NotFound":
        raise PaintRayError(f"weights {name} are neither in this node's cache nor in the storage {root}")
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with fs.open_input_stream(source) as src, open(tmp, "wb") as dst:
        while chunk := src.read(1 << 24):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, local)
    return local
