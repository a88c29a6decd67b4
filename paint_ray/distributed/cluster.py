"""Joining a Ray cluster (or starting a local one), and what the cluster can provide, not only what is up now.

- `connect`: ray.init on `address` / RAY_ADDRESS / a node started with `ray start`, else a new local cluster.
  A driver that runs as a Ray job keeps the job's runtime env: paint_ray adds only the variables the job
  does not set (Ray refuses to merge one key from two places). A cluster with token authentication (on by
  default since Ray 2.59 for `ray start` heads) is joined with the token when one is at hand.
- `capacity`: what the cluster has now and, on an autoscaling cluster, what its node types can add — read
  from the cluster launcher's config on the head (~/ray_bootstrap_config.yaml, or PAINT_RAY_CLUSTER_CONFIG),
  as Ray Tune itself does. Right after `ray up` no GPU node exists yet: decisions are made on the node
  types, and the study then asks the autoscaler for the nodes (`request`) and waits for them (`wait_for`).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import PaintRayError

NAMESPACE = "paint_ray"
# Environment that workers need to find the same caches and tracking server as the driver.
FORWARDED_ENV = ("PAINT_RAY_HOME", "MLFLOW_TRACKING_URI", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
                 "PAINT_RAY_EVAL_PRECISION", "PAINT_RAY_STORAGE", "PAINT_RAY_FAULT", "PAINT_RAY_FAULT_DIR",
                 "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"      # set by Ray for the driver of a submitted job


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


def job_runtime_env() -> dict:
    """The runtime env of the Ray job this driver runs as ({} outside a job)."""
    try:
        return json.loads(os.environ.get(JOB_CONFIG_ENV, "{}")).get("runtime_env") or {}
    except ValueError:
        return {}


def worker_env() -> dict[str, str]:
    """The variables paint_ray forwards to its workers, less those the job already sets (they win)."""
    taken = set((job_runtime_env().get("env_vars") or {}))
    return {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ and k not in taken}


def _token_at_hand() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> dict:
    """ray.init: join `address` / RAY_ADDRESS / a node started with `ray start`, else start a local
    cluster. Returns the cluster's resources. An unreachable address is a one-line PaintRayError."""
    import ray
    if ray.is_initialized():
        return ray.cluster_resources()
    from ..paths import home
    os.environ.setdefault("PAINT_RAY_HOME", str(home()))   # workers must share the driver's cache
    env = worker_env()
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(namespace=NAMESPACE, runtime_env={"env_vars": env} if env else None, log_to_driver=True,
                  configure_logging=True, logging_level="WARNING")
    if address and address not in ("auto", "local") and "://" not in address:
        why = _reachable(address)
        if why:
            raise PaintRayError(f"cannot reach a Ray cluster at {address!r} ({why}); start one with "
                                f"`ray start --head`, fix RAY_ADDRESS/--address, or unset it to run locally")
    for attempt in (1, 2):
        try:
            _init(ray, address, num_cpus, num_gpus, kwargs)
            break
        except (ConnectionError, RuntimeError, ValueError) as e:
            text = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            if "runtime env" in text.lower() or "runtime_env" in text.lower():
                raise PaintRayError(f"cannot start paint_ray's driver inside this Ray job: {text}") from e
            if "authentication" in text.lower() or "auth" in text.lower() and "token" in text.lower():
                if attempt == 1 and not os.environ.get("RAY_AUTH_MODE") and _token_at_hand():
                    os.environ["RAY_AUTH_MODE"] = "token"       # the head asks for its token: we have one
                    continue
                raise PaintRayError(f"the Ray cluster at {address or 'this machine'!r} uses token authentication "
                                    f"({text}); set RAY_AUTH_MODE=token and give its token (RAY_AUTH_TOKEN, or "
                                    f"~/.ray/auth_token: `ray get-auth-token` on the head prints it)") from e
            raise PaintRayError(f"cannot reach a Ray cluster at {address!r} ({text}); start one with `ray start "
                                f"--head`, fix RAY_ADDRESS, or unset it to run locally") from e
    return ray.cluster_resources()


def _init(ray, address, num_cpus, num_gpus, kwargs) -> None:
    import logging
    # a local cluster turns token authentication on by default (Ray 2.59+) and logs a warning that it did:
    # that is the secure default, not something for a study's user to act on
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address == "local":       # a new cluster of this process's own, whatever else runs here (tests)
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)
    elif address:
        ray.init(address=address, **kwargs)
    else:
        try:  # a node started with `ray start` on this machine
            ray.init(address="auto", **kwargs)
        except ConnectionError:
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **kwargs)


# ---- what the cluster can provide --------------------------------------------------------------------
@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_workers: int              # how many the autoscaler may run (1 for the head)


@dataclass(frozen=True)
class Capacity:
    """The cluster's resources now, and its node types when it autoscales (none: what is up is all)."""
    now: dict[str, float]
    node_types: tuple[NodeType, ...] = field(default=())
    config: str = ""

    @property
    def autoscales(self) -> bool:
        return bool(self.node_types)

    def most(self, resource: str) -> float:
        """The most of `resource` the cluster can ever hold at once."""
        if not self.autoscales:
            return self.now.get(resource, 0.0)
        return max(self.now.get(resource, 0.0), sum(t.resources.get(resource, 0.0) * t.max_workers
                                                    for t in self.node_types))

    def per_node(self, resource: str) -> float:
        """The most of `resource` one node can have (what one trial or actor can reserve)."""
        if not self.autoscales:
            import ray
            return max((n["Resources"].get(resource, 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
        return max((t.resources.get(resource, 0.0) for t in self.node_types), default=0.0)


def cluster_config_path() -> Path | None:
    """The autoscaler's cluster config on this node, if this is the head of a launched cluster."""
    given = os.environ.get("PAINT_RAY_CLUSTER_CONFIG")
    if given:
        return Path(given).expanduser()
    default = Path("~/ray_bootstrap_config.yaml").expanduser()
    return default if default.is_file() else None


def node_types(path: Path) -> tuple[NodeType, ...]:
    import yaml
    try:
        spec = yaml.safe_load(path.read_text())
        types = spec["available_node_types"]
        head = spec.get("head_node_type")
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise PaintRayError(f"cluster config {path} is not a readable Ray cluster file with available_node_types "
                            f"({type(e).__name__}); unset PAINT_RAY_CLUSTER_CONFIG or fix it") from None
    return tuple(NodeType(name, {k: float(v) for k, v in (t.get("resources") or {}).items()},
                          1 if name == head else int(t.get("max_workers", spec.get("max_workers", 0))))
                 for name, t in types.items())


def capacity() -> Capacity:
    import ray
    path = cluster_config_path()
    return Capacity(ray.cluster_resources(), node_types(path) if path else (), str(path or ""))


def request(bundles: list[dict]) -> None:
    """Ask the autoscaler for room for these bundles now (replaces the last request; [] withdraws it)."""
    from ray.autoscaler.sdk import request_resources
    request_resources(bundles=bundles)


def wait_for(resource: str, amount: float, timeout: float, what: str, progress: bool = True) -> None:
    """Wait, with a progress line and a bound, until the cluster holds `amount` of `resource` in all."""
    import ray
    from tqdm.auto import tqdm
    have = ray.cluster_resources().get(resource, 0.0)
    if have >= amount:
        return
    deadline = time.time() + timeout
    with tqdm(total=int(amount), initial=int(have), desc=f"waiting for {what} to join the cluster",
              unit=resource, disable=not progress, leave=False) as bar:
        while have < amount:
            if time.time() > deadline:
                raise PaintRayError(f"waited {timeout:.0f} s for {what} ({amount:g} {resource}); the cluster has "
                                    f"{have:g} — see `ray status` and the autoscaler's log "
                                    f"(/tmp/ray/session_latest/logs/monitor.*), or raise PAINT_RAY_CLUSTER_WAIT")
            time.sleep(2.0)
            now = ray.cluster_resources().get(resource, 0.0)
            bar.update(int(now) - int(have))
            have = now


def _node_fingerprints(tasks: list[str], data_root: str | None) -> dict[str, str]:
    """task -> its data fingerprint as this node sees it, or 'error: …' (runs on each node)."""
    from ..tasks import get_task
    out = {}
    for t in tasks:
        try:
            out[t] = get_task(t, data_root).fingerprint
        except PaintRayError as e:
            out[t] = f"error: {e}"
    return out


def check_nodes(data_root: str | None, tasks: list[str], study: str = "") -> None:
    """One line, before any fine-tuning, when a node that is up lacks the study's data or holds other data
    than this one (nodes the autoscaler adds later provision it in their setup commands: cluster.yaml)."""
    if not data_root:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ..tasks import get_task
    from .waits import gather
    here = {t: get_task(t, data_root).fingerprint for t in tasks}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    probe = ray.remote(num_cpus=0)(_node_fingerprints)
    calls = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
             .remote(tasks, data_root) for n in nodes]
    for node, seen in zip(nodes, gather(calls, f"the data check on {len(nodes)} node(s)", study)):
        for t, fp in seen.items():
            if fp != here[t]:
                where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
                raise PaintRayError(f"{where} " + (fp.removeprefix("error: ") if fp.startswith("error: ") else
                                    f"holds other data for {t!r} under --data-root {data_root} than this one "
                                    f"({fp} vs {here[t]})") + "; give every node the same data (paint-ray data "
                                    "pull, see cluster.yaml)")
