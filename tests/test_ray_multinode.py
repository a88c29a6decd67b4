"""A small study on a local multi-node Ray cluster whose worker nodes advertise (logical) GPUs."""
import pytest
import ray

from conftest import TINY


@pytest.fixture
def gpu_cluster(tiny):
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    yield cluster, nodes
    from paint_ray.distributed.evaluators import shutdown_evaluators
    if ray.is_initialized():
        shutdown_evaluators()
        ray.shutdown()
    cluster.shutdown()


def test_trials_and_evaluators_spread_over_gpu_nodes(gpu_cluster, tmp_path):
    from paint_ray import live
    from paint_ray.config import TrialResources
    from paint_ray.config import StudyConfig
    from paint_ray.pipeline import run_study
    cluster, nodes = gpu_cluster
    gpu_node_ids = {n.node_id for n in nodes}
    cfg = StudyConfig(name="multi", models=[TINY], patch_tasks=["colors", "counting"], supported=["shapes"],
                      alphas=[0.0, 0.5, 1.0], out=str(tmp_path), address=cluster.address, progress=False,
                      search_space={"lr": [3e-3], "steps": [30], "batch_size": [32], "warmup_steps": [2]},
                      resources=TrialResources(cpus=1, gpus=1))
    result = run_study(cfg)
    trial_nodes = set(result.trials["node_id"])
    assert len(result.trials) == 2 and trial_nodes <= gpu_node_ids
    assert len(trial_nodes) == 2, "the two 1-GPU trials should have run on the two GPU nodes"
    from paint_ray.pipeline import study_id
    evaluators = live.evaluators(study_id(cfg))
    assert len(evaluators) == 2                       # one per GPU
    assert {inv["node_id"] for inv in evaluators.values()} == gpu_node_ids
    assert sorted(result.table()["patch"]) == ["colors", "counting"]
