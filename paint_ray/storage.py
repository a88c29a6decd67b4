"""Weights travel by name through the study's storage: saved once, fetched by whoever needs them.

A weight file (a θ1, a merge, a sequential start point) lives in a node's content-addressed cache under
PAINT_RAY_HOME (`finetuned/<job key>.safetensors`, ...). Whoever writes one publishes it to the storage
every node reaches (a folder, or a URI pyarrow's filesystems read, e.g. s3://bucket/prefix — the same
storage Ray Tune uses); whoever needs one on another node fetches it into its own cache by the same
relative name, verified against the sha256 published beside it. The names are digests of what the weights
were computed from, so a file under a name is never replaced by other content, and the driver passes
names, never tensors. Zero-shot heads travel the same way (caches/heads.py).

May import: errors, paths
"""
from __future__ import annotations

import functools
import hashlib
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


def check_writable(root: str) -> None:
    """One line, before any work, when the storage cannot be written (a placeholder bucket, no credentials,
    a read-only folder): every node writes θ1s and checkpoints there."""
    probe = f"probe-{uuid.uuid4().hex[:12]}"
    try:
        fs, base = _fs(root)
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(f"{base}/{probe}") as out:
            out.write(b"paint_ray")
        fs.delete_file(f"{base}/{probe}")
    except Exception as e:      # pyarrow raises OSError, ArrowInvalid, ... with the service's message
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise PaintRayError(f"storage {root!r} cannot be written ({first}); set PAINT_RAY_STORAGE (or "
                            f"--tune-storage) to a folder or bucket every node of the cluster can write") from None


def relative_name(path: str | Path) -> str:
    """A cache file's name relative to PAINT_RAY_HOME (what nodes agree on)."""
    path = Path(path).resolve()
    try:
        return path.relative_to(home()).as_posix()
    except ValueError:
        raise PaintRayError(f"weights {path} are not in this node's cache ({home()}); only cached weights travel") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def file_digest(path: str | Path, length: int = 16) -> str:
    """The content identity of a file: its sha256, cut to `length` hex characters (hashed once per process
    while the file's size and mtime stay as they were)."""
    st = Path(path).stat()
    return _digest_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)[:length]


@functools.lru_cache(maxsize=4096)
def _digest_of(path: str, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path))


def exists(name: str, root: str) -> bool:
    """Whether the storage holds `name` (published whole: its digest file is written last)."""
    fs, base = _fs(root)
    return fs.get_file_info(f"{base}/weights/{name}.sha256").type.name != "NotFound"


def publish(path: str | Path, root: str) -> str:
    """Copy a cached file to the storage once (a name already there is left as it is: names are content
    keys); returns its name. The bytes go first, then their sha256 beside them, so a reader that finds the
    digest finds the whole file; on a local folder both are fsynced before they are renamed into place."""
    name = relative_name(path)
    fs, base = _fs(root)
    target = f"{base}/weights/{name}"
    if exists(name, root):
        return name
    fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
    digest = _sha256(Path(path))
    for dst, write in ((target, lambda out: _copy_into(Path(path), out)),
                       (f"{target}.sha256", lambda out: out.write(digest.encode()))):
        tmp = f"{dst}.{uuid.uuid4().hex[:8]}.tmp"
        with fs.open_output_stream(tmp) as out:
            write(out)
        if "://" not in root:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        fs.move(tmp, dst)
    return name


def _copy_into(src: Path, out) -> None:
    with open(src, "rb") as f:
        while chunk := f.read(1 << 24):
            out.write(chunk)


def fetch(name: str, root: str | None) -> Path:
    """The node-local path of a cached file: from this node's cache, else copied in from the storage and
    verified against the sha256 it was published with (a mismatch is a one-line error; nothing is kept)."""
    local = home() / name
    if local.is_file():
        return local
    if not root:
        raise PaintRayError(f"weights {name} are not in this node's cache and no storage was given to fetch them")
    fs, base = _fs(root)
    source = f"{base}/weights/{name}"
    if not exists(name, root):
        raise PaintRayError(f"weights {name} are neither in this node's cache nor in the storage {root}")
    with fs.open_input_stream(f"{source}.sha256") as f:
        expected = f.read().decode().strip()
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    h = hashlib.sha256()
    try:
        with fs.open_input_stream(source) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 24):
                h.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        if h.hexdigest() != expected:
            raise PaintRayError(f"weights {name} fetched from {root} have sha256 {h.hexdigest()[:16]}…, not the "
                                f"{expected[:16]}… they were published with; the storage copy is damaged: delete it "
                                f"and rerun")
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return local
