"""The results record: a Parquet dataset of one row per evaluated cell, appended part by part.

A row's key is content: the digest of the model's weights (θ0), the key of the weight set (θ1 and where
α = 0 starts), α, the per-block schedule ('' for the global α; else its group coefficients,
weights/schedule.py), the eval task's data-and-prompt digest, the split, the eval precision and device
type, and the schema version. The schedule is a key column of its own, beside α, rather than part of the
weight set's key: the weight set is what an evaluator fetches and holds (one θ1 however many schedules it
is evaluated under), the schedule like α is how that θ1 is interpolated. Parts written before the column
existed hold global-α rows only and read as schedule ''. Names (study, model spec, task name, mode) ride along for reading, never for
reuse. Each flush writes a new part file atomically (temp + fsync + rename), so a killed process loses
only the cells it had not yet flushed, and a rerun reads the keys present and skips them.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import PaintRayError
from ..faults import armed, fire_once
from ..identity import SCHEMA_VERSION, digest
from ..paths import ensure_writable

SCHEMA = pa.schema([
    ("schema", pa.string()), ("model_digest", pa.string()), ("weights", pa.string()), ("alpha", pa.float64()),
    ("schedule", pa.string()),
    ("task_key", pa.string()), ("split", pa.string()), ("precision", pa.string()), ("device", pa.string()),
    # for reading: what the digests above were computed from, by name
    ("study", pa.string()), ("model", pa.string()), ("pretrained", pa.string()), ("patch_tasks", pa.string()),
    ("mode", pa.string()), ("trial", pa.string()), ("eval_task", pa.string()),
    ("accuracy", pa.float64()), ("n", pa.int64()), ("seconds", pa.float64()), ("created", pa.float64()),
])
KEY = ["schema", "model_digest", "weights", "alpha", "schedule", "task_key", "split", "precision", "device"]


def row_key(row: dict) -> tuple:
    return tuple(round(float(row[k]), 6) if k == "alpha" else row[k] for k in KEY)


class ResultStore:
    """The results folder. Parts are immutable once renamed into place, so each is parsed once per store
    and kept: a search round's read parses only the parts written since the last read (its own and any
    another process added), and a part that is gone, or rewritten in place, is dropped or parsed anew."""

    def __init__(self, directory: str | Path):
        self.dir = ensure_writable(directory)
        self.written = 0          # parts this store has written (the driver-exit fault point counts them)
        self.parsed = 0           # parts this store has parsed (each once while it is unchanged)
        self._tables: dict[str, tuple[tuple[int, int], pa.Table]] = {}

    def parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def read(self, schedules: bool = False) -> pd.DataFrame:
        """All rows of this schema (one per key: a duplicate from a crashed rerun keeps its first copy): the
        global-α rows, and with `schedules` the per-block schedule rows too (a reader of α frontiers never
        sees a schedule row under its α)."""
        tables = self._current_tables()
        if not tables:
            return SCHEMA.empty_table().to_pandas()
        frame = pa.concat_tables(tables).to_pandas()
        frame = frame[frame["schema"] == SCHEMA_VERSION].sort_values("created", kind="stable")
        frame["alpha"] = frame["alpha"].round(6)
        frame["schedule"] = frame["schedule"].fillna("")      # parts from before the column: global α
        if not schedules:
            frame = frame[frame["schedule"] == ""]
        return frame.drop_duplicates(KEY).reset_index(drop=True)

    def _current_tables(self) -> list[pa.Table]:
        """Every readable part as a table, parsing only the parts not seen before (or changed since)."""
        kept: dict[str, tuple[tuple[int, int], pa.Table]] = {}
        for path in self.parts():
            try:
                st = path.stat()
            except FileNotFoundError:                      # set aside by another reader meanwhile
                continue
            signature = (st.st_size, st.st_mtime_ns)
            hit = self._tables.get(path.name)
            if hit is not None and hit[0] == signature:
                kept[path.name] = hit
                continue
            table = self._read_part(path)
            self.parsed += 1
            if table is not None:
                kept[path.name] = (signature, table)
        self._tables = kept
        return [t for _, t in kept.values()]

    def _read_part(self, path: Path) -> pa.Table | None:
        """One part, or None after setting aside a part that is unreadable (a power cut mid-write) or of
        an older schema, with a one-line warning: its cells are then recomputed."""
        try:
            table = pq.read_table(path)
            if "schedule" not in table.column_names:          # written before schedules: global α rows
                table = table.append_column("schedule", pa.nulls(len(table), pa.string()))
            return table.select([f.name for f in SCHEMA]).cast(SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError, OSError) as e:
            aside = path.with_name(path.name + ".unreadable")
            os.replace(path, aside)
            print(f"paint-ray: warning: results part {path.name} is unreadable or of an older schema "
                  f"({type(e).__name__}); set aside as {aside.name}, its cells will be recomputed")
            return None

    def keys(self) -> set[tuple]:
        frame = self.read(schedules=True)
        return {row_key(r) for r in frame[KEY].to_dict("records")}

    def append(self, rows: Iterable[dict]) -> int:
        rows = list(rows)
        if not rows:
            return 0
        now = time.time()
        rows = [{**{f.name: None for f in SCHEMA}, "schema": SCHEMA_VERSION, "created": now, **r} for r in rows]
        for r in rows:
            r["alpha"] = round(float(r["alpha"]), 6)
            r["schedule"] = r["schedule"] or ""
        table = pa.Table.from_pylist([{f.name: r[f.name] for f in SCHEMA} for r in rows], schema=SCHEMA)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.dir / f".{name}.tmp"
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / name)
        except OSError as e:
            raise PaintRayError(f"cannot write results to {self.dir} ({e.strerror or e})") from e
        self.written += 1
        after = armed("driver-exit-after-parts")
        if after and self.written >= int(after):          # a test's crash point: the rerun must lose nothing
            fire_once("driver-exit-after-parts", digest(str(self.dir)))
        return len(rows)
