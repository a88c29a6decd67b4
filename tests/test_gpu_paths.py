"""The GPU code paths, checked where no GPU is: placement decisions on the `meta` device (which has tensors
but no arithmetic), resume through the CPU, budgets that count weights, the batched hot paths against their
per-image definitions, and the GPU check script itself in its CPU mode.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
META = torch.device("meta")


# ---- devices: decisions ask the tensor -----------------------------------------------------------------
def test_streaming_branches_are_decided_by_the_tensor_not_by_comparing_devices():
    from paint_ray.evaluation.streaming import batches, branch
    host = torch.zeros(10, 3, 4, 4, dtype=torch.uint8)
    on_meta = torch.zeros(10, 3, 4, 4, dtype=torch.uint8, device="meta")
    # 'cuda:0' data for a 'cuda' evaluator was taken for host data by `images.device == device` (False):
    # the tensor's kind of memory decides instead, whatever index the device object carries
    assert branch(on_meta, torch.device("meta")) == branch(on_meta, torch.device("meta", 0)) == "resident"
    assert branch(host, torch.device("cuda")) == branch(host, torch.device("cuda", 0)) == "stream"
    assert branch(host, torch.device("cpu")) == "host" and branch(host, META) == "copy"
    resident = list(batches(on_meta, torch.arange(10), META, 4))
    assert [len(x) for x, _ in resident] == [4, 4, 2] and all(x._base is on_meta for x, _ in resident)
    copied = list(batches(host, torch.arange(10), META, 4))
    assert all(x.device.type == "meta" and y.device.type == "meta" for x, y in copied)


def test_probe_features_of_a_streamed_shard_reach_the_model_on_its_device(tiny):
    """CKA probes handed a host shard straight to the model: on a GPU that is a device mismatch. On the meta
    device the same mistake raises too, so this sees it without a GPU."""
    from paint_ray.data import PreparedSplit
    from paint_ray.evaluation.evaluator import ZERO_SHOT, Evaluator, probe_features
    ev = Evaluator(tiny.model.visual, META)
    ev.add_split("t", "val", PreparedSplit(torch.zeros(6, 3, 32, 32, dtype=torch.uint8), torch.zeros(6, dtype=torch.long)),
                 resident=False)
    seen = []
    ev.visual.register_forward_pre_hook(lambda _, args: seen.append(args[0].device.type))
    feats = probe_features(ev, ZERO_SHOT, 0.0, [("t", "val")], limit=4)
    assert seen == ["meta"] and feats.device.type == "meta" and feats.shape[0] == 4


def test_resolve_gives_concrete_devices():
    from paint_ray.devices import resolve
    assert resolve("cpu") == torch.device("cpu") and resolve(META).type == "meta"
    assert resolve(None).type == ("cuda" if torch.cuda.is_available() else "cpu")


# ---- resume: checkpoints load to the CPU first ---------------------------------------------------------
def _tuner(tiny, device="cpu", **kw):
    from paint_ray.caches.eval import prepare_task
    from paint_ray.caches.heads import cached_head
    from paint_ray.tasks import get_task
    from paint_ray.training.finetune import FinetuneConfig, Finetuner
    task = get_task("colors")
    cfg = FinetuneConfig(**{"lr": 1e-3, "steps": 6, "batch_size": 16, "warmup_steps": 1, **kw})
    return Finetuner(copy.deepcopy(tiny.model.visual), cached_head(tiny, task), prepare_task(task, "train", 32), cfg,
                     device)


def test_a_checkpoint_resumes_on_another_device_with_its_generator_on_the_cpu(tiny, tmp_path):
    """The retried GPU trial loaded trainer.pt with map_location=device, moving the CPU generator's state to the
    GPU, where Generator.set_state refused it. Restored onto the meta device (not the CPU it was saved on),
    the state must arrive: weights and optimizer on the run's device, the generator state on the CPU."""
    saved = _tuner(tiny).run(until=3)
    saved.save(tmp_path)
    moved = _tuner(tiny, META)
    assert moved.restore(tmp_path) and moved.step == 3
    assert torch.equal(moved.gen.get_state(), saved.gen.get_state())
    assert next(moved.visual.parameters()).device.type == "meta"
    moments = [v for s in moved.opt.state.values() for v in s.values() if torch.is_tensor(v) and v.dim()]
    assert moments and all(m.device.type == "meta" for m in moments)


def test_a_job_resumed_in_a_new_process_from_its_on_disk_checkpoint_continues_the_interrupted_one(tiny, home,
                                                                                                      tmp_path):
    """Through the code path Tune uses (training.run_job with report/resume): a first process reports its
    first checkpoint and dies; a second process resumes from that folder. The θ1 equals an uninterrupted run's."""
    import os
    import shutil
    script = ROOT / "tests" / "resume_child.py"
    for h in ("home", "home2"):                                    # the tiny model, not pretrained again
        shutil.copytree(home / "models", tmp_path / h / "models")
    env = {**os.environ, "PAINT_RAY_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, str(script), "crash", str(tmp_path / "ckpt")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 3, r.stdout + r.stderr                     # died right after its first checkpoint
    assert (tmp_path / "ckpt" / "trainer.pt").is_file()
    r = subprocess.run([sys.executable, str(script), "resume", str(tmp_path / "ckpt")], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed_from 4" in r.stdout
    r = subprocess.run([sys.executable, str(script), "whole", str(tmp_path / "unused")], env={**env, "PAINT_RAY_HOME": str(tmp_path / "home2")},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    from paint_ray.models.checkpoints import load_tensors
    resumed = load_tensors(next((tmp_path / "home" / "finetuned").glob("*.safetensors")))
    whole = load_tensors(next((tmp_path / "home2" / "finetuned").glob("*.safetensors")))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)


# ---- memory: weights are inside the budget -------------------------------------------------------------
def test_an_evaluator_budget_counts_its_weights_and_keeps_data_out_of_their_room(tiny):
    from paint_ray.caches.eval import task_key
    from paint_ray.evaluation.host import EvaluatorHost
    from paint_ray.evaluation.memory import image_bytes, tensor_bytes
    from paint_ray.tasks import get_task
    keys = {t: task_key(get_task(t)) for t in ("shapes", "colors")}
    probe = EvaluatorHost("cpu", budget=1 << 40)
    probe.add_loaded(tiny)
    probe.load_heads(tiny.digest, list(keys.items()), None, None)
    fixed, tower = probe.fixed_bytes(), tensor_bytes(probe.evaluators[tiny.digest].theta0)
    assert fixed >= 2 * tower                                      # θ0 and the live θα both count
    shard = image_bytes(500, 32)                                   # one val split
    host = EvaluatorHost("cpu", budget=fixed + tower + shard + 1024)
    host.add_loaded(tiny)
    host.load_heads(tiny.digest, list(keys.items()), None, None)
    placed = [host.add_shard(tiny.digest, {"task": t, "split": "val", "key": k, "image_size": 32, "start": 0,
                                           "stop": 500, "total": 500}, None, True) for t, k in keys.items()]
    assert placed == [True, False]                                 # the second would eat the θ1's room: it streams
    inv = host.inventory()
    assert inv.weight_bytes == host.fixed_bytes() and inv.resident_bytes <= inv.budget - inv.weight_bytes - tower


def test_theta1s_beyond_the_room_are_evicted_least_recently_used_and_counts_do_not_change(tiny, tmp_path):
    from paint_ray.caches.eval import prepare_task
    from paint_ray.caches.heads import cached_head
    from paint_ray.evaluation.evaluator import Cell, Evaluator
    from paint_ray.evaluation.residency import WeightCache
    from paint_ray.models.checkpoints import save_tensors
    from paint_ray.tasks import get_task
    from paint_ray.training.finetune import visual_state
    task = get_task("shapes")
    base = visual_state(tiny.model.visual)
    sets, files = {}, {}
    for i in range(4):
        g = torch.Generator().manual_seed(i)
        sets[f"w{i}"] = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        files[f"w{i}"] = tmp_path / f"w{i}.safetensors"
        save_tensors(sets[f"w{i}"], files[f"w{i}"])
    one = sum(t.nelement() * t.element_size() for t in base.values())
    counts = {}
    for label, room in (("all", 1 << 40), ("one", one + one // 2)):
        cache = WeightCache(torch.device("cpu"), lambda room=room: room)
        ev = Evaluator(tiny.model.visual, "cpu", weights=cache, model_id="m")
        ev.add_head("shapes", cached_head(tiny, task))
        ev.add_split("shapes", "val", prepare_task(task, "val", 32))
        for k, state in sets.items():
            ev.add_weights(k, state, files=(files[k], None))
            assert cache.device_bytes() <= room
        rows = ev.evaluate([Cell(k, a, "shapes", "val") for k in sets for a in (0.5, 1.0)])
        counts[label] = ([r["correct"] for r in rows], dict(cache.moves))
        assert cache.device_bytes() <= room
    assert counts["all"][0] == counts["one"][0]
    assert counts["one"][1]["dropped"] >= 3 and counts["one"][1]["from_file"] >= 3 and counts["all"][1]["dropped"] == 0


def test_the_plan_counts_every_theta1_an_evaluator_receives_and_fits_the_a10g(capsys):
    from paint_ray.cli.study import main_for
    sys.path.insert(0, str(ROOT / "experiments"))
    import scaling
    assert main_for("scaling", scaling.PRESETS, None, ["--preset", "paper", "--plan", "--plan-for",
                                                      str(ROOT / "cluster.yaml")]) == 0
    out = capsys.readouterr().out
    assert "receives 27 θ1" in out                                 # ImageNet holders get every θ1 of the study
    share = int(out.split("largest share of a device's memory held: ")[1].split("%")[0])
    assert share <= 90, out[-1500:]


# ---- hot paths: batched, and equal to what they replace ------------------------------------------------
def test_the_gathered_shift_equals_shifting_each_image():
    from paint_ray.models.normalize import random_shift
    x = torch.randint(0, 256, (9, 3, 12, 12), dtype=torch.uint8)
    offs = torch.randint(0, 7, (9, 2), generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (3,) * 4)
    each = torch.stack([padded[i, :, dy:dy + 12, dx:dx + 12] for i, (dy, dx) in enumerate(offs.tolist())])
    assert torch.equal(random_shift(x, 3, offsets=offs), each)
    assert torch.equal(random_shift(x, 3, torch.Generator().manual_seed(3)), each)    # same draws from the generator


def test_the_head_matmul_runs_in_fp32_under_bf16_autocast(tiny):
    from paint_ray.models.heads import batch_logits
    from paint_ray.models.normalize import to_model_input
    x = to_model_input(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), tiny.model.visual)
    head = torch.randn(1000, tiny.model.visual.output_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = batch_logits(tiny.model.visual, head, x)
        features = tiny.model.visual(x).float()
    features = features / features.norm(dim=-1, keepdim=True)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, features @ head.T, atol=1e-5)     # a bf16 matmul would be off by ~1e-2


def test_tf32_is_a_named_recipe_option_that_enters_the_theta1_key():
    from paint_ray.training.finetune import FinetuneConfig
    from paint_ray.errors import PaintRayError
    assert FinetuneConfig(precision="tf32").as_dict() != FinetuneConfig().as_dict()
    FinetuneConfig(precision="tf32").validate()
    with pytest.raises(PaintRayError, match="fp32, tf32, bf16"):
        FinetuneConfig(precision="fp16").validate()


# ---- the GPU check script, in the mode CI runs it in --------------------------------------------------
@pytest.mark.slow
def test_the_gpu_check_script_runs_every_branch_it_can_on_the_cpu(tmp_path):
    import os
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu"],
                       capture_output=True, text=True, timeout=1200, env={**os.environ, "PAINT_RAY_HOME": str(tmp_path)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "0 failed checks" in r.stdout and "FAIL" not in r.stdout
    assert r.stdout.count("continues the interrupted run (bitwise)") == 2          # shift and rrc
    assert "resident and streamed counts are equal" in r.stdout
