"""Where paint_ray caches pretrained embedded models, heads, fine-tuned weights and decoded data: one home per
node. PAINT_RAY_HOME may contain `{node}` (e.g. /shared/cache/{node} on a filesystem every node mounts): a
process that runs as a Ray worker replaces it with its Ray node id, a driver with 'driver'.

May import: errors
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from .errors import PaintRayError


def home() -> Path:
    """PAINT_RAY_HOME (its `{node}` filled in), or ~/.cache/paint_ray (XDG_CACHE_HOME respected)."""
    if os.environ.get("PAINT_RAY_HOME"):
        return Path(os.environ["PAINT_RAY_HOME"].replace("{node}", node_name())).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return (Path(base) / "paint_ray").resolve()


def node_name() -> str:
    """This process's Ray node id when it runs as a Ray worker (a task, an actor, a Tune trial), else 'driver'."""
    import sys
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        if context.worker.mode == ray.WORKER_MODE:
            return context.get_node_id()
    return "driver"


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
