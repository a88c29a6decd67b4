"""Datasets onto the nodes: `paint-ray data push` copies a data root to the study's storage once, and each node's
setup (cluster.yaml) runs `paint-ray data pull` to copy it onto its own disk, skipping what it already has.

A folder or any URI pyarrow's filesystems read (s3://bucket/prefix, the storage Tune and the θ1s use). Files
keep their relative names; their times need not survive the copy, since a dataset's fingerprint is its
names, sizes and content (common.fingerprint), so every node's copy fingerprints the same and shares its
θ1s and results.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...errors import PaintRayError


def _fs(root: str):
    from pyarrow import fs
    if "://" in root:
        return fs.FileSystem.from_uri(root)
    return fs.LocalFileSystem(), str(Path(root).expanduser().resolve())


def _files(root: str) -> dict[str, int]:
    """Relative name -> size of every file under `root` ({} when it does not exist)."""
    from pyarrow import fs as pafs
    fs, base = _fs(root)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return {}
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return {i.path[len(base):].lstrip("/"): i.size for i in infos if i.type == pafs.FileType.File}


def copy_tree(src: str, dst: str, threads: int = 16) -> tuple[int, int]:
    """Copy every file of `src` missing from `dst` (or of another size there); returns (copied, kept)."""
    have, want = _files(dst), _files(src)
    todo = [name for name, size in want.items() if have.get(name) != size]
    sfs, sbase = _fs(src)
    dfs, dbase = _fs(dst)

    def one(name: str) -> None:
        target = f"{dbase}/{name}"
        dfs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        tmp = f"{target}.part"
        with sfs.open_input_stream(f"{sbase}/{name}") as i, dfs.open_output_stream(tmp) as o:
            while chunk := i.read(1 << 24):
                o.write(chunk)
        dfs.move(tmp, target)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, todo))
    return len(todo), len(want) - len(todo)


def push(data_root: str, uri: str) -> tuple[int, int]:
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise PaintRayError(f"data root {root} does not exist or is not a folder; give the folder holding the datasets")
    return copy_tree(str(root), uri)


def pull(uri: str, data_root: str, optional: bool = False) -> tuple[int, int]:
    if not _files(uri):
        if optional:
            return 0, 0
        raise PaintRayError(f"nothing to pull at {uri}; push the datasets there first: paint-ray data push "
                            f"--data-root DIR --to {uri}")
    Path(data_root).expanduser().mkdir(parents=True, exist_ok=True)
    return copy_tree(uri, data_root)
