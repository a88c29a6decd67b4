"""The README's cluster workflow on the closest real things: Ray's fake autoscaling provider (nodes added on
demand, logical GPUs), one PAINT_RAY_HOME per simulated node, storage shared by the nodes (a folder, then s3://
on a local S3 server), cluster.yaml's own head setup commands, token authentication on as Ray ships it, and the
`ray` CLI's job submission as the README writes it.

The test starts its own head (own ports, own temp dir) and ends only the processes it started, by pid.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import TINY

pytestmark = [pytest.mark.ray, pytest.mark.slow]

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny):
    _end_local_ray()
    c = FakeCluster(tmp_path_factory.mktemp("fake_cluster"))
    try:
        yield c
    finally:
        c.stop()


STUDY = ["experiments/scaling.py", "--models", TINY, "--patch", "colors", "--supported", "shapes", "--steps", "8",
         "--warmup-steps", "1", "--batch-size", "16", "--seeds", "0", "--alphas", "0,0.5,1", "--quiet", "--no-mlflow"]


LIVE = """
import json
import paint_ray.live as live
study = live.connect()
table = live.studies()
print("EVALUATORS", json.dumps(sorted(set(table.node))), len(table))
rows = live.sweep("%s", alphas=[0.25], splits=["val"])
print("ROWS", len(rows), sorted(set(rows.eval_task)))
""" % TINY


def test_study_on_an_autoscaling_cluster_asks_for_gpu_nodes_runs_there_and_lets_them_go(cluster):
    """Right after `ray up` no GPU node is up: the study decides GPU use from the node types, asks the autoscaler
    for nodes, runs its trials and evaluators there (each node with a home of its own), a separate Python
    session reaches the live evaluators as the README shows, and once they have been idle for
    --keep-evaluators they end and the autoscaler removes the workers."""
    [head] = cluster.nodes()
    assert head["gpus"] == 0                                                # only the CPU head at first
    out = cluster.tmp / "study"
    r = cluster.run(*STUDY, "--out", str(out), "--keep-evaluators", "45s", "--evaluators", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    import pandas as pd
    trials = pd.concat(pd.read_json(p, lines=True) for p in (cluster.storage).rglob("result.json"))
    gpu_nodes = {n["id"] for n in cluster.nodes() if n["gpus"]}
    assert set(trials.node_id) <= gpu_nodes and head["id"] not in set(trials.node_id)   # trials ran on GPU workers
    live = cluster.run("-c", LIVE, timeout=300)                            # `live` from a separate process
    assert live.returncode == 0, live.stdout[-2000:] + live.stderr[-3000:]
    line = next(x for x in live.stdout.splitlines() if x.startswith("EVALUATORS "))
    where = json.loads(line[len("EVALUATORS "):].rsplit(" ", 1)[0])
    assert where and set(where) <= gpu_nodes and line.endswith(" 2")       # both evaluators, on GPU workers
    assert "ROWS 2 ['colors', 'shapes']" in live.stdout                   # swept there, nothing reloaded
    # node-local state: each worker node has its own home, with its own eval cache and fetched weights
    homes = {p.name for p in cluster.homes.iterdir()}
    assert "driver" in homes and len(homes - {"driver"}) >= 1, homes
    assert list((cluster.storage / "weights" / "finetuned").glob("*.safetensors.sha256"))
    assert any(list((cluster.homes / h / "eval_cache").glob("*")) for h in homes - {"driver"})
    # the evaluators end after 45 s idle; then the autoscaler removes the idle GPU workers
    deadline = time.time() + 300
    while time.time() < deadline and len(cluster.nodes()) > 1:
        time.sleep(5)
    assert len(cluster.nodes()) == 1, "the GPU workers did not idle out after the evaluators ended"


def test_two_studies_on_one_cluster_both_finish_without_killing_each_others_evaluators(cluster):
    procs = [subprocess.Popen([sys.executable, *STUDY, "--out", str(cluster.tmp / f"two{i}"), "--keep-evaluators",
                               "15s", "--evaluators", "1", "--lr", f"{1e-3 * (i + 1)}"],
                              env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, outs):
        assert p.returncode == 0, stdout[-2000:] + stderr[-2000:]
    for i in range(2):
        assert (cluster.tmp / f"two{i}" / "scaling.parquet").is_file()


@pytest.fixture
def gpu_head(tmp_path_factory, tiny):
    """A second fake cluster whose head has the (logical) GPU and no worker nodes. Every fake node shares this
    machine's disk and Ray's session folder: a worker node's runtime-env agent unpacks a job's --working-dir
    afresh into the one folder the head's job driver runs in, deleting the driver's working directory under
    it (Tune then fails in os.getcwd()). Real nodes each have their own disk, so the job step is tested where
    nothing but the job's own processes, on one node, use its working dir; the multi-node parts are the
    autoscaling test's."""
    _end_local_ray()
    c = FakeCluster(tmp_path_factory.mktemp("gpu_head"), head_gpus=1, max_workers=0)
    try:
        yield c
    finally:
        c.stop()


def test_the_readme_job_step_runs_as_written_with_token_auth_a_runtime_env_and_s3_storage(gpu_head, s3):
    """`ray job submit` with the token step, a --working-dir and a --runtime-env-json that sets env_vars: the
    driver adds its variables to the job's runtime env instead of replacing it (Ray refuses two of one key).
    The job's storage is s3:// on a local S3 server: pyarrow's S3 filesystem carries the Tune experiment and
    the θ1s (with their sha256), and the trial and evaluator processes reach it with the job's AWS settings."""
    import boto3
    cluster = gpu_head
    bucket = s3.removeprefix("s3://")
    aws = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                      "AWS_DEFAULT_REGION")}
    runtime = json.dumps({"env_vars": {"PAINT_RAY_HOME": str(cluster.homes / "{node}"), "PAINT_RAY_EVAL_PRECISION": "fp32",
                                       "PAINT_RAY_STORAGE": f"{s3}/job", **aws}})
    cmd = [RAY, "job", "submit", "--working-dir", str(ROOT), "--runtime-env-json", runtime, "--",
           "python", *STUDY, "--out", str(cluster.tmp / "job"), "--keep-evaluators", "15s", "--evaluators", "1",
           "--lr", "2e-3"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                       env={**cluster.env, "RAY_ADDRESS": f"http://127.0.0.1:{cluster.dashboard}"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout.lower() and (cluster.tmp / "job" / "scaling.parquet").is_file()
    client = boto3.client("s3", endpoint_url=aws["AWS_ENDPOINT_URL"], aws_access_key_id="test",
                          aws_secret_access_key="test", region_name="us-east-1")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="job/")["Contents"]]
    assert any(k.startswith("job/weights/finetuned/") and k.endswith(".safetensors") for k in keys)
    assert any(k.endswith(".safetensors.sha256") for k in keys)
    assert any("/checkpoint_" in k for k in keys) and any(k.endswith("result.json") for k in keys)


def test_bad_cluster_input_is_one_line_before_fine_tuning(cluster, tmp_path):
    r = cluster.run(*STUDY, "--out", str(tmp_path / "a"), "--evaluators", "5")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert "--evaluators 5 needs 5 GPUs" in r.stderr and "at most 2" in r.stderr
    blocked = tmp_path / "a-file"                 # a storage under a file: nobody can write there, root included
    blocked.write_text("")
    r = cluster.run(*STUDY, "--out", str(tmp_path / "b"), env={"PAINT_RAY_STORAGE": str(blocked / "tune")})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot be written" in r.stderr, r.stderr[-2000:]
    assert not list((tmp_path / "b").rglob("*.safetensors"))


def test_head_setup_commands_of_cluster_yaml_start_one_mlflow_server_however_often_they_run(tmp_path):
    spec = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path), "PAINT_RAY_MLFLOW_PORT": str(port),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for _ in range(2):
        for command in spec["head_setup_commands"]:
            r = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
    pid_file = tmp_path / "paint_ray_runs" / "mlflow.pid"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as h:
                    if h.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the MLflow server never answered")
        import psutil
        server = psutil.Process(int(pid_file.read_text()))
        mine = _descendants({server.pid})
        servers = [p for p in psutil.process_iter(["pid", "cmdline"])
                   if p.info["cmdline"] and str(tmp_path) in " ".join(p.info["cmdline"]) and
                   "mlflow" in " ".join(p.info["cmdline"]) and "server" in p.info["cmdline"]]
        assert [p.pid for p in servers if p.pid not in mine] == [], "a second MLflow server was started"
    finally:
        if pid_file.is_file():
            pid = int(pid_file.read_text())
            try:
                os.killpg(os.getpgid(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
