"""A Ray head started by `ray start` with Ray's fake autoscaling provider, for the cluster tests
(test_cluster.py: autoscaling, two studies, bad input; test_cluster_job.py: the README's job step and the head
setup commands). Each head has its own ports and temp dir, and only the processes it started are ended, by pid.
"""
from __future__ import annotations


import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pids: set[int]) -> set[int]:
    import psutil
    out = set()
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.add(pid)
            out |= {c.pid for c in p.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
    return out


def _ours(marker: str) -> set[int]:
    """Processes whose command line names our own temp dir (only our head's), and everything they started."""
    import psutil
    mine = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                mine.add(p.info["pid"])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return _descendants(mine)


def _end(pids: set[int]) -> None:
    import psutil
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
            procs[-1].terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)      # then SIGKILL: a head process that ignores SIGTERM
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


class FakeCluster:
    """A head started by `ray start` with Ray's fake autoscaling provider: a CPU head and GPU worker nodes
    (logical GPUs) that the autoscaler adds on demand and removes once idle, like cluster.yaml's."""

    def __init__(self, tmp: Path, idle_minutes: float = 0.25, head_gpus: int = 0, max_workers: int = 2):
        self.tmp = tmp
        self.port, self.dashboard = free_port(), free_port()
        # our marker: every head process names it; short, since Ray's socket paths under it must fit 107 bytes
        self.temp_dir = Path(tempfile.mkdtemp(prefix="prc-"))
        self.config = tmp / "cluster.yaml"
        self.config.write_text(yaml.safe_dump({
            "cluster_name": "paint-ray-test", "max_workers": max_workers, "upscaling_speed": 1.0,
            "idle_timeout_minutes": idle_minutes,
            "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                         "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{self.port}"},
            "available_node_types": {
                "ray.head.default": {"resources": {"CPU": 1, **({"GPU": head_gpus} if head_gpus else {})},
                                     "max_workers": 0, "node_config": {}},
                "gpu_worker": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": max_workers,
                               "node_config": {}}},
            "head_node_type": "ray.head.default", "auth": {"ssh_user": "ray"}, "file_mounts": {},
            "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
            "head_start_ray_commands": [], "worker_start_ray_commands": [], "initialization_commands": [],
            # what `ray up` adds to the config it hands the head's autoscaler
            "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
            "rsync_filter": []}))
        self.homes = tmp / "homes"
        self.storage = tmp / "storage"
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                    "PAINT_RAY_HOME": str(self.homes / "{node}"), "PAINT_RAY_STORAGE": str(self.storage),
                    "PAINT_RAY_CLUSTER_CONFIG": str(self.config), "PAINT_RAY_EVAL_PRECISION": "fp32",
                    "RAY_ADDRESS": f"127.0.0.1:{self.port}", "PYTHONPATH": str(ROOT),
                    # as with an activated environment: a job's `python` is this one
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "AUTOSCALER_METRIC_PORT": str(free_port()), "PAINT_RAY_CLUSTER_WAIT": "300",
                    "PAINT_RAY_ACTOR_TIMEOUT": "300"}
        # the token step of the README (`ray get-auth-token --generate`), into this cluster's own file
        self.env.pop("RAY_AUTH_TOKEN", None)
        token = tmp / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env["RAY_AUTH_TOKEN_PATH"] = str(token)
        r = subprocess.run([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                            "--num-cpus", "1", "--num-gpus", str(head_gpus), f"--autoscaling-config={self.config}",
                            f"--temp-dir={self.temp_dir}", "--include-dashboard=true",
                            f"--dashboard-port={self.dashboard}", "--dashboard-host=127.0.0.1",
                            # every port of our own: other clusters may run on this machine
                            *(f"--{flag}={free_port()}" for flag in (
                                "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                                "metrics-export-port", "ray-client-server-port", "object-manager-port",
                                "node-manager-port"))],
                           env=self.env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        self.address = f"127.0.0.1:{self.port}"

    def run(self, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, cwd=ROOT)

    def nodes(self) -> list[dict]:
        out = self.run("-c", "import json, ray; ray.init(address='auto', logging_level='ERROR', log_to_driver=False); "
                             "print('NODES', json.dumps([{'id': n['NodeID'], 'gpus': n['Resources'].get('GPU', 0)} "
                             "for n in ray.nodes() if n['Alive']]))", timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("NODES "))[6:])

    def wait_until_nodes(self, count: int, timeout: float = 300) -> list[dict]:
        """Poll from ONE driver process (not a Ray start per poll) until `count` nodes are alive or `timeout`
        passes; the nodes alive at the end."""
        out = self.run("-c", "import json, time, ray; ray.init(address='auto', logging_level='ERROR', "
                             "log_to_driver=False)\n"
                             f"deadline = time.time() + {timeout}\n"
                             "while True:\n"
                             "    alive = [{'id': n['NodeID'], 'gpus': n['Resources'].get('GPU', 0)} "
                             "for n in ray.nodes() if n['Alive']]\n"
                             f"    if len(alive) == {count} or time.time() > deadline: break\n"
                             "    time.sleep(2)\n"
                             "print('NODES', json.dumps(alive))", timeout=timeout + 120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("NODES "))[6:])

    def stop(self) -> None:
        _end(_ours(str(self.temp_dir)))
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _end_local_ray() -> None:
    """This session's own local Ray, if one is up: a fake cluster needs the machine."""
    import ray
    if ray.is_initialized():
        from paint_ray.distributed.evaluators import shutdown_evaluators
        shutdown_evaluators()
        ray.shutdown()



STUDY = ["experiments/scaling.py", "--models", TINY, "--patch", "colors", "--supported", "shapes", "--steps", "8",
         "--warmup-steps", "1", "--batch-size", "16", "--seeds", "0", "--alphas", "0,0.5,1", "--quiet", "--no-mlflow"]

