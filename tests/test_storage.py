"""The study's storage, as a folder and as s3:// on a local S3-compatible server (moto, started by these tests
on 127.0.0.1): files published once with their sha256 and fetched verified, storage that cannot be written
refused in one line, and datasets pushed once and pulled onto a node with the same fingerprint.
"""
from __future__ import annotations

import pytest

import paper_fixtures as pf


@pytest.fixture
def node(tmp_path, monkeypatch):
    """This process as a fresh node: its own PAINT_RAY_HOME."""
    monkeypatch.setenv("PAINT_RAY_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("kind", ["folder", "s3"])
def test_published_files_come_back_verified_and_a_damaged_copy_is_refused(kind, request, node, tmp_path, monkeypatch):
    import torch

    from paint_ray.errors import PaintRayError
    from paint_ray.models.checkpoints import load_tensors, save_tensors
    from paint_ray.storage import exists, fetch, publish
    root = str(tmp_path / "storage") if kind == "folder" else request.getfixturevalue("s3") + f"/{tmp_path.name}"
    save_tensors({"w": torch.arange(10.0)}, node / "finetuned" / "abc.safetensors")
    name = publish(node / "finetuned" / "abc.safetensors", root)
    assert name == "finetuned/abc.safetensors" and exists(name, root)
    monkeypatch.setenv("PAINT_RAY_HOME", str(tmp_path / "other-node"))        # another node: not in its cache
    got = fetch(name, root)
    assert got.parent.parent == tmp_path / "other-node" and torch.equal(load_tensors(got)["w"], torch.arange(10.0))
    from pyarrow import fs as pafs
    fs, base = (pafs.LocalFileSystem(), root) if kind == "folder" else pafs.FileSystem.from_uri(root)
    with fs.open_output_stream(f"{base}/weights/{name}") as out:              # the storage copy is damaged
        out.write(b"not the published bytes")
    monkeypatch.setenv("PAINT_RAY_HOME", str(tmp_path / "third-node"))
    with pytest.raises(PaintRayError, match="have sha256 .* not the .* they were published with"):
        fetch(name, root)
    assert not (tmp_path / "third-node" / name).exists()                       # nothing half-fetched is kept


def test_storage_that_cannot_be_written_is_one_line(tmp_path, s3):
    from paint_ray.errors import PaintRayError
    from paint_ray.storage import check_writable
    check_writable(str(tmp_path / "fine"))
    check_writable(s3 + "/prefix")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    for bad in (str(blocked / "tune"), "s3://no-such-bucket-here/tune"):
        with pytest.raises(PaintRayError, match="cannot be written") as e:
            check_writable(bad)
        assert "\n" not in str(e.value) and "PAINT_RAY_STORAGE" in str(e.value)


def test_datasets_pushed_to_s3_and_pulled_onto_a_node_keep_their_fingerprint(tmp_path, s3, capsys):
    from paint_ray.cli import main
    from paint_ray.tasks import get_task
    pf.write_eurosat(tmp_path / "data", per_class=2)
    uri = f"{s3}/data-{tmp_path.name}"
    assert main(["data", "push", "--data-root", str(tmp_path / "data"), "--to", uri]) == 0
    assert main(["data", "pull", "--from", uri, "--data-root", str(tmp_path / "node")]) == 0
    assert main(["data", "pull", "--from", uri, "--data-root", str(tmp_path / "node")]) == 0    # again: nothing to copy
    out = capsys.readouterr().out
    assert "0 file(s) copied" in out.strip().splitlines()[-1]
    assert get_task("eurosat", str(tmp_path / "node")).fingerprint == get_task("eurosat", str(tmp_path / "data")).fingerprint
    assert main(["data", "pull", "--from", f"{s3}/nothing-here", "--data-root", str(tmp_path / "x")]) == 2
    assert "nothing to pull" in capsys.readouterr().err
    assert main(["data", "pull", "--optional", "--from", f"{s3}/nothing-here", "--data-root", str(tmp_path / "x")]) == 0
