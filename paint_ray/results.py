"""The results record: a Parquet dataset of one row per evaluated cell, appended part by part.

Each flush writes a new part file atomically, so a killed process loses only the cells it had not yet
flushed, and a rerun reads the keys already present and skips them.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .errors import PaintRayError

SCHEMA = pa.schema([
    ("study", pa.string()), ("model", pa.string()), ("pretrained", pa.string()),
    ("patch_tasks", pa.string()), ("mode", pa.string()), ("trial", pa.string()),
    ("alpha", pa.float64()), ("eval_task", pa.string()), ("split", pa.string()),
    ("accuracy", pa.float64()), ("n", pa.int64()), ("seconds", pa.float64()), ("created", pa.float64()),
])
KEY = ["study", "model", "pretrained", "patch_tasks", "mode", "trial", "alpha", "eval_task", "split"]


def ensure_writable(directory: str | Path) -> Path:
    """Create `directory` and prove it is writable, before any expensive work starts."""
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PaintRayError(f"output directory {path} is not writable ({e.strerror or e}); "
                            f"give a writable --out") from e
    return path.resolve()


def cell_row(base: dict, cell: dict) -> dict:
    """A store row from shared keys (study, model, ...) and an evaluator cell or result row."""
    row = {**base, "trial": cell["weights"], "alpha": cell["alpha"], "eval_task": cell["task"], "split": cell["split"]}
    row.update({k: cell[k] for k in ("accuracy", "n", "seconds") if k in cell})
    return row


def row_key(row: dict) -> tuple:
    return tuple(round(row[k], 6) if k == "alpha" else row[k] for k in KEY)


class ResultStore:
    def __init__(self, directory: str | Path):
        self.dir = ensure_writable(directory)

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def read(self) -> pd.DataFrame:
        """All rows (one per key: a duplicate from a crashed rerun keeps its first copy)."""
        if not self.parts():
            return SCHEMA.empty_table().to_pandas()
        table = ds.dataset([str(p) for p in self.parts()], schema=SCHEMA, format="parquet").to_table()
        frame = table.to_pandas().sort_values("created", kind="stable")
        frame["alpha"] = frame["alpha"].round(6)
        return frame.drop_duplicates(KEY).reset_index(drop=True)

    def keys(self) -> set[tuple]:
        frame = self.read()
        return {tuple(r) for r in frame[KEY].itertuples(index=False)}

    def append(self, rows: Iterable[dict]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        now = time.time()
        rows = [{**{f.name: None for f in SCHEMA}, "created": now, **r} for r in rows]
        for r in rows:
            r["alpha"] = round(float(r["alpha"]), 6)
        table = pa.Table.from_pylist([{f.name: r[f.name] for f in SCHEMA} for r in rows], schema=SCHEMA)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.dir / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, self.dir / name)
        except OSError as e:
            raise PaintRayError(f"cannot write results to {self.dir} ({e.strerror or e})") from e
        return len(rows)
