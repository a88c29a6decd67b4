"""Joining a Ray cluster, or starting a local one sized to the machine."""
from __future__ import annotations

import os

from ..errors import PaintRayError

NAMESPACE = "paint_ray"
# Environment that workers need to find the same caches and tracking server as the driver.
FORWARDED_ENV = ("PAINT_RAY_HOME", "MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
                 "PAINT_RAY_EVAL_PRECISION")


def _reachable(address: str, timeout: float = 3.0) -> str | None:
    """None if a TCP connection to host:port succeeds, else why not (Ray itself waits minutes to say so)."""
    import socket
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return "not HOST:PORT"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as e:
        return e.strerror or type(e).__name__


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> dict:
    """ray.init: join `address` / RAY_ADDRESS / a node started with `ray start`, else start a local
    cluster. Returns the cluster's resources. An unreachable address is a one-line PaintRayError."""
    import ray
    if ray.is_initialized():
        return ray.cluster_resources()
    from ..paths import home
    os.environ.setdefault("PAINT_RAY_HOME", str(home()))   # workers must share the driver's cache
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(namespace=NAMESPACE, runtime_env={"env_vars": env}, log_to_driver=True,
                  configure_logging=True, logging_level="WARNING")
    if address and address not in ("auto", "local"):
        why = _reachable(address)
        if why:
            raise PaintRayError(f"cannot reach a Ray cluster at {address!r} ({why}); start one with "
                                f"`ray start --head`, fix RAY_ADDRESS/--address, or unset it to run locally")
    try:
        if address == "local":       # a new cluster of this process's own, whatever else runs here (tests)
            ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
        elif address:
            ray.init(address=address, **kwargs)
        else:
            try:  # a node started with `ray start` on this machine
                ray.init(address="auto", **kwargs)
            except ConnectionError:
                ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise PaintRayError(f"cannot reach a Ray cluster at {address!r} ({str(e).splitlines()[0][:160]}); "
                            f"start one with `ray start --head`, fix RAY_ADDRESS, or unset it to run locally") from e
    return ray.cluster_resources()
