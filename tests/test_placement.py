"""Data stays, weights move: the placement planner, memory budgets, streaming, the weight store and --plan.

No Ray here: the planner and the evaluator are plain Python (the multi-node test runs them on Ray).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from paint_ray.errors import PaintRayError
from paint_ray.evaluation.memory import check_budget, image_bytes, min_budget, parse_bytes
from paint_ray.evaluation.placement import SplitRef, plan

ROOT = Path(__file__).resolve().parents[1]


def splits() -> list[SplitRef]:
    sizes = {("imagenet", "test"): 50000, ("imagenet", "val"): 5000, ("mnist", "test"): 10000,
             ("mnist", "val"): 5000, ("dtd", "test"): 1880, ("dtd", "val"): 376}
    return [SplitRef(t, s, f"{t}-key", 224, n) for (t, s), n in sizes.items()]


def covered(placement, ref: SplitRef) -> list[tuple[int, int]]:
    return [(sh.start, sh.stop) for _, sh in placement.shards_of(ref.ident)]


def test_plan_respects_budgets_covers_every_row_once_and_cuts_at_batches():
    refs = splits()
    total = sum(r.bytes for r in refs)
    budgets = [int(total / 6)] * 4                       # together below the data: some of it must stream
    p = plan(refs, budgets)
    for i, b in enumerate(budgets):
        assert p.resident_bytes(i) <= b
    assert sum(p.streamed_bytes(i) for i in range(4)) > 0
    assert sum(p.load(i) for i in range(4)) == total
    for r in refs:
        ranges = covered(p, r)
        assert ranges[0][0] == 0 and ranges[-1][1] == r.n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))     # contiguous, no overlap
        assert all(start % 512 == 0 for start, _ in ranges)              # same batches as the whole split
    assert len(covered(p, refs[0])) > 1, "ImageNet's test split is larger than a budget: it must be sharded"
    loads = [p.load(i) for i in range(4)]
    assert max(loads) - min(loads) <= image_bytes(50000, 224) / 4, "LPT keeps the evaluators' loads close"


def test_plan_with_room_keeps_everything_resident_and_extends_without_moving():
    refs = splits()
    p = plan(refs[:3], [10 * 2**30] * 2)
    before = [[(h.shard, h.resident) for h in hs] for hs in p.held]
    assert all(h.resident for hs in p.held for h in hs)
    assert all(p.load(i) > 0 for i in range(2)), "both evaluators get data"
    p = plan(refs, [], p)                                 # more splits later: what is placed stays put
    assert all([(h.shard, h.resident) for h in hs][:len(b)] == b for hs, b in zip(p.held, before))
    assert all(p.placed(r.ident) for r in refs)


@pytest.mark.parametrize("text,expected", [("12GiB", 12 * 2**30), ("500MB", 500 * 10**6), ("1.5g", 1.5e9),
                                           ("4096", 4096), (" 2 kib ", 2048)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == int(expected)


@pytest.mark.parametrize("text", ["lots", "12 parsecs", "-3GB", "0", "nan", ""])
def test_parse_bytes_refuses_in_one_line(text):
    with pytest.raises(PaintRayError, match="--eval-memory") as e:
        parse_bytes(text)
    assert "\n" not in str(e.value) and "GiB" in str(e.value)


def test_budget_below_one_batch_is_refused():
    with pytest.raises(PaintRayError, match=r"below one eval batch \(512 images at 224 px"):
        check_budget(min_budget(224) - 1, 224)
    check_budget(min_budget(224), 224)


def test_streamed_shards_give_the_rows_of_one_resident_split(tiny):
    """The same cells, resident whole vs streamed in shards on the CPU: equal correct counts, bit for bit."""
    from paint_ray.caches import heads as cache
    from paint_ray.data import image_size_of
    from paint_ray.caches.eval import prepare_task
    from paint_ray.evaluation.evaluator import Cell, Evaluator
    from paint_ray.training.finetune import visual_state
    from paint_ray.tasks import get_task
    task = get_task("shapes")
    size = image_size_of(tiny.model.visual)
    data = prepare_task(task, "test", size)
    head = cache.cached_head(tiny, task)
    theta1 = {k: v + 0.01 * torch.randn_like(v) for k, v in visual_state(tiny.model.visual).items()}
    whole = Evaluator(tiny.model.visual, batch_size=256)
    whole.add_head("shapes", head)
    whole.add_split("shapes", "test", data)
    whole.add_weights("w", theta1)
    sharded = Evaluator(tiny.model.visual, batch_size=256)
    sharded.add_head("shapes", head)
    sharded.add_weights("w", theta1)
    cuts = [(0, 512), (512, len(data))]
    for a, b in cuts:
        from paint_ray.data import PreparedSplit
        sharded.add_split("shapes", f"test@{a}:{b}", PreparedSplit(data.images[a:b], data.labels[a:b]),
                          resident=False)
    assert sharded.resident_bytes == 0 and whole.resident_bytes > 0
    for alpha in (0.0, 0.5, 1.0):
        ref = whole.evaluate([Cell("w", alpha, "shapes", "test")])[0]
        parts = sharded.evaluate([Cell("w", alpha, "shapes", f"test@{a}:{b}") for a, b in cuts])
        assert sum(r["correct"] for r in parts) == ref["correct"]
        assert sum(r["n"] for r in parts) == ref["n"] == len(data)


def test_weights_travel_by_name_through_the_storage(tmp_path, home):
    from paint_ray.models.checkpoints import load_tensors, save_tensors
    from paint_ray.storage import fetch, publish
    local = home / "finetuned" / "test-weights-store.safetensors"
    save_tensors({"w": torch.arange(6.0)}, local)
    storage = str(tmp_path / "storage")
    name = publish(local, storage)
    assert name == "finetuned/test-weights-store.safetensors"
    assert (tmp_path / "storage" / "weights" / name).is_file()
    local.unlink()                                   # another node: not in its cache, fetched from storage
    got = fetch(name, storage)
    assert got == local and torch.equal(load_tensors(got)["w"], torch.arange(6.0))
    with pytest.raises(PaintRayError, match="neither in this node's cache nor in the storage"):
        fetch("finetuned/absent.safetensors", storage)


def ray_state():
    """Whether Ray is up in this process, and which studies have evaluators (a test must start neither)."""
    import ray
    if not ray.is_initialized():
        return False, []
    from paint_ray.distributed.evaluators import study_names
    return True, study_names()


def test_plan_for_the_paper_preset_on_cluster_yaml(capsys):
    """--plan on cluster.yaml's node types: every resident set fits an A10G with the model, the driver fits
    the head, and nothing starts (no data, no Ray)."""
    from paint_ray.cli.study import main_for
    before = ray_state()
    assert main_for("scaling", _scaling_presets(), argv=["--preset", "paper", "--plan", "--plan-for",
                                                      str(ROOT / "cluster.yaml"), "--out", "/nonexistent/x"]) == 0
    out = capsys.readouterr().out
    assert "8 evaluator(s) (one per GPU)" in out and "published size" in out
    m = re.search(r"largest share of a device's memory held: ([0-9]+)%", out)     # weights and resident data
    assert m and int(m.group(1)) < 60 and "24.00 GiB" in out, out
    m = re.search(r"driver peak memory \(on head\): about ([0-9.]+) GiB.*the node has 32\.00 GiB", out)
    assert m and float(m.group(1)) < 16, out
    assert "imagenet/test@0:" in out, "ImageNet's 7 GB test split is spread over evaluators"
    assert ray_state() == before


def _scaling_presets():
    from conftest import load_script
    return load_script("scaling").PRESETS


@pytest.mark.parametrize("value,message", [
    ("lots", "--eval-memory 'lots' is not a size; give e.g. 16GiB, 500MB or a byte count"),
    ("1MB", "--eval-memory 976.56 KiB is below one eval batch (512 images at 32 px = 1.50 MiB); give at least 1.50 MiB"),
])
def test_bad_eval_memory_is_one_line_before_anything_starts(value, message, tmp_path, capsys):
    """Unparseable, or too small for one eval batch of the study's models: refused before Ray, loading or
    fine-tuning (no output folder is even written)."""
    from paint_ray.cli.study import main_for
    before = ray_state()
    out = tmp_path / "never"
    code = main_for("scaling", _scaling_presets(), argv=["--models", "toy-s", "--eval-memory", value,
                                                         "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"paint-ray: error: {message}"
    assert not out.exists()
    assert ray_state() == before
