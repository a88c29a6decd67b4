"""`paint-ray data check TASK --data-root DIR [--json] [--download]`: is a dataset there, and as expected?

`paint-ray data splits TASK --data-root DIR --out OUT`: every split's file list as CSV, to compare splits exactly.
`paint-ray data push --data-root DIR --to URI` / `paint-ray data pull --from URI --data-root DIR`: a data root
copied to the study's storage once, and from there onto each node (cluster.yaml's setup runs the pull).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import PaintRayError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="inspect the on-disk datasets of the paper's tasks")
    sub = p.add_subparsers(dest="data_command", required=True)
    c = sub.add_parser("check", help="load a task's splits: classes, sizes, a sample label, validation indices")
    c.add_argument("task", help="task name (paint_ray.tasks.task_names())")
    c.add_argument("--data-root", default=None, help="root folder holding the datasets")
    c.add_argument("--json", action="store_true", help="print one JSON object (with the validation indices)")
    c.add_argument("--download", action="store_true",
                   help="first fetch the dataset with torchvision's downloader, where one exists")
    c.set_defaults(func=check)
    e = sub.add_parser("splits", help="write each split's images (path or FILE#record, label) as TASK-SPLIT.csv")
    e.add_argument("task", help="task name (paint_ray.tasks.task_names())")
    e.add_argument("--data-root", default=None, help="root folder holding the datasets")
    e.add_argument("--out", default=".", help="folder to write TASK-train.csv, TASK-val.csv, TASK-test.csv into")
    e.set_defaults(func=splits)
    u = sub.add_parser("push", help="copy a data root to a folder or bucket the cluster's nodes reach")
    u.add_argument("--data-root", required=True, help="the folder holding the datasets")
    u.add_argument("--to", required=True, dest="uri", help="e.g. s3://BUCKET/paint_ray/data, or a shared folder")
    u.set_defaults(func=push)
    d = sub.add_parser("pull", help="copy the datasets pushed to URI into this node's data root (what is there stays)")
    d.add_argument("--from", required=True, dest="uri", help="where `paint-ray data push` put them")
    d.add_argument("--data-root", required=True, help="this node's folder for the datasets")
    d.add_argument("--optional", action="store_true", help="nothing pushed yet is no error (a node's setup)")
    d.set_defaults(func=pull)


def push(args: argparse.Namespace) -> int:
    from ..tasks.paper.sync import push as push_tree
    copied, kept = push_tree(args.data_root, args.uri)
    print(f"pushed {args.data_root} to {args.uri}: {copied} file(s) copied, {kept} already there")
    return 0


def pull(args: argparse.Namespace) -> int:
    from ..tasks.paper.sync import pull as pull_tree
    copied, kept = pull_tree(args.uri, args.data_root, optional=args.optional)
    print(f"pulled {args.uri} into {args.data_root}: {copied} file(s) copied, {kept} already there")
    return 0


def download(name: str, data_root: str | None) -> None:
    """Fetch a paper dataset into data_root with its torchvision downloader; one-line errors otherwise."""
    from ..tasks import get_task
    from ..tasks.paper import PAPER_DATASETS
    if name not in PAPER_DATASETS:
        get_task(name, data_root)       # unknown names: the registry's error with its suggestion
        raise PaintRayError(f"task {name!r} is generated in memory; there is nothing to download")
    dataset = PAPER_DATASETS[name]
    if data_root is None:
        raise PaintRayError(f"--download needs --data-root DIR to download {dataset.spec.title} into")
    if dataset.download is None:
        raise PaintRayError(f"{dataset.spec.title} has no downloader (its files are not publicly fetchable); "
                            f"place them under {data_root} as: {dataset.spec.layout}")
    root = Path(data_root).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
        dataset.download(root)
    except Exception as e:  # noqa: BLE001 - network, checksum and archive errors all become one line
        first = str(e).splitlines()[0] if str(e) else ""
        raise PaintRayError(f"downloading {dataset.spec.title} into {root} failed ({type(e).__name__}: {first})") \
            from e


def summary(name: str, data_root: str | None) -> dict:
    """What `data check` reports: classes, templates, split sizes, item 0's label, held-out indices."""
    from ..tasks import SPLITS, get_task
    from ..tasks.paper.common import brief
    task = get_task(name, data_root)
    out: dict = {"task": task.name, "data_root": str(Path(data_root).expanduser().resolve()) if data_root else None,
                 "fingerprint": task.fingerprint, "num_classes": len(task.classnames),
                 "classes": list(task.classnames), "templates": list(task.templates), "splits": {}}
    for split in SPLITS:
        data = task.split(split)
        label = None
        if len(data):
            try:
                label = int(data[0][1])
            except PaintRayError:
                raise
            except Exception as e:  # noqa: BLE001 - an unreadable item is a data problem: one line, not a traceback
                raise PaintRayError(f"{name}/{split}: cannot read item 0 ({brief(e)})") from e
            if not 0 <= label < len(task.classnames):
                raise PaintRayError(f"{name}/{split}: item 0 has label {label}; expected 0..{len(task.classnames) - 1} "
                                    f"({len(task.classnames)} classes)")
        out["splits"][split] = {"size": len(data), "item0_label": label,
                                "item0_class": task.classnames[label] if label is not None else None}
    from ..tasks.paper.records import PARTITIONS
    out["partition"] = PARTITIONS.get(task.name, "generated in memory with its own seed")
    out["val_indices"] = getattr(task.loader, "val_indices", None)
    out["val_source"] = getattr(task.loader, "val_source", "generated in memory with its own seed")
    return out


def _text(s: dict) -> str:
    shown = ", ".join(repr(c) for c in s["classes"][:8]) + (", …" if s["num_classes"] > 8 else "")
    lines = [f"{s['task']}: {s['data_root'] or '(in memory)'}  [{s['fingerprint']}]",
             f"classes ({s['num_classes']}): {shown}",
             f"templates ({len(s['templates'])}): {s['templates'][0]!r}" + (", …" if len(s["templates"]) > 1 else "")]
    for split, info in s["splits"].items():
        sample = f"item 0: label {info['item0_label']} ({info['item0_class']!r})" if info["size"] else "empty"
        lines.append(f"{split:>5}: {info['size']:>8,} images   {sample}")
    lines.append(f"partition: {s['partition']}")
    n_val = len(s["val_indices"]) if s["val_indices"] is not None else 0
    lines.append(f"  val: {n_val:,} indices from {s['val_source']}" if s["val_indices"] is not None
                 else f"  val: {s['val_source']}")
    return "\n".join(lines)


def check(args: argparse.Namespace) -> int:
    if args.download:
        download(args.task, args.data_root)
    s = summary(args.task, args.data_root)
    print(json.dumps(s) if args.json else _text(s))
    return 0


def export_splits(name: str, data_root: str | None, out: str | Path) -> dict[str, Path]:
    """Write OUT/NAME-{train,val,test}.csv (columns index, path_or_id, label; one row per item in split order);
    returns the paths. Paths are relative to the data root, so two copies of a dataset give equal files."""
    import csv

    from ..tasks import SPLITS, get_task
    from ..tasks.paper.records import records
    task = get_task(name, data_root)
    root = getattr(task.loader, "root", None)
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PaintRayError(f"--out {str(folder)!r} cannot be created ({e.strerror or e}); give a writable folder") \
            from e
    written = {}
    for split in SPLITS:
        rows = records(task.split(split), root, name, split)
        path = folder / f"{name}-{split}.csv"
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "path_or_id", "label"])
            writer.writerows((i, ident, label) for i, (ident, label) in enumerate(rows))
        tmp.replace(path)
        written[split] = path
    return written


def splits(args: argparse.Namespace) -> int:
    from ..tasks.paper.records import PARTITIONS
    written = export_splits(args.task, args.data_root, args.out)
    for split, path in written.items():
        n = sum(1 for _ in open(path)) - 1
        print(f"{split:>5}: {n:>8,} rows  {path}")
    print(f"partition: {PARTITIONS.get(args.task, 'generated in memory with its own seed')}")
    return 0
