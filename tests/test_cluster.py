"""The README's cluster workflow on the closest real things: Ray's fake autoscaling provider (nodes added on
demand, logical GPUs), one PAINT_RAY_HOME per simulated node, storage shared by the nodes, and token
authentication on as Ray ships it: a study that asks for GPU nodes and lets them go, two studies on one
cluster, bad cluster input. The job step and the head setup commands are in test_cluster_job.py.

The test starts its own head (own ports, own temp dir, fake_cluster.py) and ends only the processes it
started, by pid.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import TINY

from fake_cluster import ROOT, STUDY, FakeCluster, _end_local_ray

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny):
    _end_local_ray()
    c = FakeCluster(tmp_path_factory.mktemp("fake_cluster"))
    try:
        yield c
    finally:
        c.stop()



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
    assert len(cluster.wait_until_nodes(1, timeout=300)) == 1, \
        "the GPU workers did not idle out after the evaluators ended"


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



def test_bad_cluster_input_is_one_line_before_fine_tuning(cluster, tmp_path):
    r = cluster.run(*STUDY, "--out", str(tmp_path / "a"), "--evaluators", "5")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr[-2000:]
    assert "--evaluators 5 needs 5 GPUs" in r.stderr and "at most 2" in r.stderr
    blocked = tmp_path / "a-file"                 # a storage under a file: nobody can write there, root included
    blocked.write_text("")
    r = cluster.run(*STUDY, "--out", str(tmp_path / "b"), env={"PAINT_RAY_STORAGE": str(blocked / "tune")})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cannot be written" in r.stderr, r.stderr[-2000:]
    assert not list((tmp_path / "b").rglob("*.safetensors"))

