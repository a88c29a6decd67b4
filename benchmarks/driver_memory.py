"""The driver's footprint during a study: its peak RSS and the bytes it puts into Ray's object store.

Runs a study script in this process (`runpy`), counting the array payload of every `ray.put` and of every
large argument (≥ 100 KiB, which Ray stores in the object store) passed to a remote call by the driver.
Prints both after the study, with the driver's peak RSS (VmHWM) — Ray's own processes are not counted.

    python benchmarks/driver_memory.py experiments/scaling.py --out scaling_out
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np

INLINE_LIMIT = 100 * 1024          # Ray's max_direct_call_object_size: larger arguments go to plasma
put_bytes = {"put": 0, "args": 0, "calls": 0}


def payload(obj) -> int:
    """Bytes of the arrays and tensors inside `obj` (dicts, lists, tuples walked)."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if type(obj).__module__.startswith("torch") and hasattr(obj, "element_size"):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(payload(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(payload(v) for v in obj)
    if isinstance(obj, bytes | bytearray):
        return len(obj)
    return 0


def instrument() -> None:
    import ray
    import ray.actor
    import ray.remote_function

    real_put = ray.put

    def counting_put(value, *args, **kwargs):
        put_bytes["put"] += payload(value)
        return real_put(value, *args, **kwargs)

    ray.put = counting_put

    def wrap(cls):
        real = cls._remote

        def _remote(self, *args, **kwargs):
            call_args = list(kwargs.get("args") or (args[0] if args else ()) or ())
            call_args += list((kwargs.get("kwargs") or (args[1] if len(args) > 1 else {}) or {}).values())
            for a in call_args:
                size = payload(a)
                if size >= INLINE_LIMIT:
                    put_bytes["args"] += size
            put_bytes["calls"] += 1
            return real(self, *args, **kwargs)

        cls._remote = _remote

    wrap(ray.actor.ActorMethod)
    wrap(ray.remote_function.RemoteFunction)
    wrap(ray.actor.ActorClass)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    script = Path(sys.argv[1]).resolve()
    sys.argv = [str(script), *sys.argv[2:]]
    instrument()
    code = 0
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    total = put_bytes["put"] + put_bytes["args"]
    print(f"driver peak RSS: {peak_rss_mb():.0f} MB")
    print(f"object-store bytes put by the driver: {total / 2**20:.1f} MiB "
          f"(ray.put {put_bytes['put'] / 2**20:.1f} MiB, large call arguments {put_bytes['args'] / 2**20:.1f} MiB, "
          f"{put_bytes['calls']} remote calls)")
    return code


if __name__ == "__main__":
    sys.exit(main())
