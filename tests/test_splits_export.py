"""`paint-ray data splits TASK`: every split's images as CSV (index, path_or_id, label), so splits can be compared."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import paper_fixtures as pf
from paint_ray.cli import main
from paint_ray.tasks import get_task
from paint_ray.tasks.paper.records import PARTITIONS

TASKS = ("mnist", "cifar10", "svhn", "stl10", "dtd", "eurosat", "kitti_distance", "gtsrb", "cars", "sun397")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("split_data")
    for name in TASKS:
        pf.WRITERS[name](root)
    return root


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", TASKS)
def test_each_split_is_written_in_order_with_its_labels(root, tmp_path, name, capsys):
    assert main(["data", "splits", name, "--data-root", str(root), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"partition: {PARTITIONS[name]}" in printed
    task = get_task(name, str(root))
    rows = {s: read(tmp_path / f"{name}-{s}.csv") for s in ("train", "val", "test")}
    ids = {s: [r["path_or_id"] for r in rs] for s, rs in rows.items()}
    for split, rs in rows.items():
        data = task.split(split)
        assert [int(r["index"]) for r in rs] == list(range(len(data)))
        assert [int(r["label"]) for r in rs] == [int(data[i][1]) for i in range(len(data))]
        assert len(set(ids[split])) == len(rs)
        for ident in ids[split]:
            file, _, record = ident.partition("#")
            assert (root / file).is_file() and not Path(file).is_absolute()
            assert record == "" or record.isdigit()
    assert not set(ids["train"]) & set(ids["val"]) and not set(ids["test"]) & (set(ids["train"]) | set(ids["val"]))


def test_record_ids_name_the_record_within_its_file(root, tmp_path):
    assert main(["data", "splits", "mnist", "--data-root", str(root), "--out", str(tmp_path)]) == 0
    written = pf.write_mnist(tmp_path / "again")                        # the same bytes as under `root`
    task = get_task("mnist", str(root))
    for split in ("val", "test"):
        for r in read(tmp_path / f"mnist-{split}.csv"):
            file, _, k = r["path_or_id"].partition("#")
            images = written.extra["train" if "train-" in file else "t10k"]
            assert np.array_equal(np.asarray(task.split(split)[int(r["index"])][0]), images[int(k)])
    # held-out validation: its ids are the validation indices `data check --json` prints
    check = json.loads(_run(["data", "check", "mnist", "--data-root", str(root), "--json"]))
    assert [int(r["path_or_id"].rpartition("#")[2]) for r in read(tmp_path / "mnist-val.csv")] == check["val_indices"]
    assert "partition" in check and check["partition"] == PARTITIONS["mnist"]


def _run(argv: list[str]) -> str:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


def test_two_copies_of_a_dataset_export_the_same_files(root, tmp_path):
    for name in ("dtd", "cifar10"):
        copy = tmp_path / "copy"
        shutil.copytree(root, copy, dirs_exist_ok=True)
        _run(["data", "splits", name, "--data-root", str(root), "--out", str(tmp_path / "a")])
        _run(["data", "splits", name, "--data-root", str(copy), "--out", str(tmp_path / "b")])
        for split in ("train", "val", "test"):
            assert (tmp_path / "a" / f"{name}-{split}.csv").read_text() == \
                (tmp_path / "b" / f"{name}-{split}.csv").read_text()
    ids = [r["path_or_id"] for r in read(tmp_path / "a" / "cifar10-train.csv")]
    assert {i.partition("#")[0] for i in ids} == {f"cifar-10-batches-py/data_batch_{k}" for k in range(1, 6)}


def test_export_errors_are_one_line(root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["data", "splits", "mnist", "--data-root", str(root), "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot be created" in err
    assert main(["data", "splits", "mnsit", "--data-root", str(root)]) == 2
    assert "did you mean 'mnist'" in capsys.readouterr().err
