"""A small study on a local multi-node Ray cluster whose worker nodes advertise (logical) GPUs.

The cluster's head runs Ray's dashboard, so the study is also submitted as a Ray job, as a user would.
"""
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import ray

from conftest import TINY, make_study_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 2 * 2**20          # bytes of eval data per evaluator: above one batch (1.5 MiB at 32 px), below the data


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gpu_cluster(tiny):
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    precision = os.environ.get("PAINT_RAY_EVAL_PRECISION")
    os.environ["PAINT_RAY_EVAL_PRECISION"] = "fp32"        # bit-for-bit comparisons; inherited by every node
    dashboard = free_port()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": True,
                                                             "dashboard_port": dashboard})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, nodes, dashboard
    from paint_ray.distributed.evaluators import shutdown_evaluators
    if ray.is_initialized():
        shutdown_evaluators()
        ray.shutdown()
    cluster.shutdown()
    if precision is None:                                    # as the session had it
        os.environ.pop("PAINT_RAY_EVAL_PRECISION", None)
    else:
        os.environ["PAINT_RAY_EVAL_PRECISION"] = precision


def study(tmp_path, cluster, **kw):
    from paint_ray.config import TrialResources
    return make_study_config(tmp_path, name="multi", patch_tasks=["colors", "counting"], address=cluster.address,
                             resources=TrialResources(cpus=1, gpus=1), **kw)


def test_data_stays_on_budgeted_evaluators_and_weights_move(gpu_cluster, tmp_path):
    """Per-evaluator budget below the study's eval data: no evaluator holds more than its budget resident,
    the splits are spread over both nodes, and the rows equal one unlimited in-process evaluator's."""
    import torch

    from paint_ray import live
    from paint_ray.backends.local import LocalBackend
    from paint_ray.pipeline import run_study, study_id
    from paint_ray.results.store import ResultStore
    cluster, nodes, _ = gpu_cluster
    gpu_node_ids = {n.node_id for n in nodes}
    cfg = study(tmp_path / "ray", cluster, eval_memory=BUDGET)
    result = run_study(cfg)
    trial_nodes = set(result.trials["node_id"])
    assert len(result.trials) == 2 and trial_nodes <= gpu_node_ids
    assert len(trial_nodes) == 2, "the two 1-GPU trials should have run on the two GPU nodes"
    evaluators = live.evaluators(study_id(cfg))      # name -> evaluation.inventory.Inventory
    assert len(evaluators) == 2                       # one per GPU
    assert {inv.node_id for inv in evaluators.values()} == gpu_node_ids
    for inv in evaluators.values():
        # the budget covers the weights the evaluator holds and its resident data together
        assert inv.budget == BUDGET and 0 < inv.resident_bytes and inv.used_bytes <= BUDGET
        assert {s.task for s in inv.shards}, "every evaluator holds data"
    assert sum(inv.streamed_bytes for inv in evaluators.values()) > 0, "what fits no budget streams"
    names = [s.name for inv in evaluators.values() for s in inv.shards]
    assert any("@" in n for n in names), "a split larger than a budget is cut into shards"
    assert sorted(result.table()["patch"]) == ["colors", "counting"]
    live.shutdown(study_id(cfg))                      # their GPUs go back to the cluster

    # the same study, one evaluator holding everything resident, in this process (θ1s come from the cache)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                          # as the actors ran: one thread each
    try:
        run_study(study(tmp_path / "local", cluster), LocalBackend("cpu"))
    finally:
        torch.set_num_threads(threads)
    cols = ["weights", "alpha", "eval_task", "split", "accuracy", "n"]
    a = ResultStore(tmp_path / "ray" / "results").read()[cols].sort_values(cols[:4]).reset_index(drop=True)
    b = ResultStore(tmp_path / "local" / "results").read()[cols].sort_values(cols[:4]).reset_index(drop=True)
    assert len(a) == len(b) == 2 * 3 * 2 * 2          # θ1s x α x (own task + shapes) x (val, test)
    assert a.equals(b), "sharded, budgeted, streamed rows differ from one resident evaluator's"


def test_study_submitted_as_a_ray_job(gpu_cluster, tmp_path):
    """`ray job submit -- python experiments/scaling.py ...` against a head started with the dashboard."""
    from ray.job_submission import JobStatus, JobSubmissionClient
    _, _, dashboard = gpu_cluster
    client = JobSubmissionClient(f"http://127.0.0.1:{dashboard}")
    out = tmp_path / "job_out"
    # as on a cluster.yaml cluster: the checkout is on every node and installed there (no working_dir upload)
    entry = (f"{sys.executable} {ROOT / 'experiments' / 'scaling.py'} --models {TINY} --patch colors --supported shapes "
             f"--steps 6 --warmup-steps 1 --batch-size 32 --alphas 0,1 --evaluators 1 --gpus-per-trial 1 "
             f"--seeds 0 --no-mlflow --quiet --out {out}")
    job = client.submit_job(entrypoint=entry)
    for _ in range(300):                              # a bounded wait (10 minutes), not a speed check
        if client.get_job_status(job) in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            break
        time.sleep(2)
    else:
        client.stop_job(job)                          # the job this test submitted, by its id
        pytest.fail("the Ray job did not finish in 10 minutes: " + client.get_job_logs(job)[-2000:])
    logs = client.get_job_logs(job)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, logs[-2000:]
    assert "test accuracy at the α chosen on validation" in logs
    assert (out / "scaling.parquet").is_file()
