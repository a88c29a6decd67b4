"""The README's job step (`ray job submit` with token auth, a runtime env and s3:// storage on a local S3
server) on a fake head with a logical GPU, and cluster.yaml's own head setup commands. A file apart from
test_cluster.py so that pytest-xdist can run the two on different workers (each is minutes of cluster work).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from fake_cluster import (
    RAY,
    ROOT,
    STUDY,
    FakeCluster,
    _descendants,
    _end_local_ray,
    free_port,
)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


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
