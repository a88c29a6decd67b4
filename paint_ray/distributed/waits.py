"""Every wait on an actor or on the cluster is bounded, and says in one line what it waited for."""
from __future__ import annotations

import os

import ray

from ..errors import PaintRayError

WAIT_S = float(os.environ.get("PAINT_RAY_ACTOR_TIMEOUT", 900))


def gather(pending: list, what: str, study: str = "", timeout: float = WAIT_S) -> list:
    """ray.get with a bound: past it, one line that names what was waited for."""
    try:
        return ray.get(pending, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise PaintRayError(f"waited {timeout:.0f} s for {what}" + (f" (study {study})" if study else "")
                            + " and got no answer; the cluster may be out of the resources they need (`ray status`)"
                            ", or raise PAINT_RAY_ACTOR_TIMEOUT") from None
