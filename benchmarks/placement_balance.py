"""Placement by work against placement by bytes: max ÷ mean evaluator busy time on an embedded sweep whose
supported tasks are evaluated under every weight set and each patch task under its own few.

    python benchmarks/placement_balance.py [--evaluators 4] [--sets 8]

The evaluators are EvaluatorHosts in this process (the Ray actors' class), each with one thread; their units
run one after another and each evaluator's busy time is the sum of its units' wall time. The same units,
rows and counts come out of both placements; only who does them changes. Prints `ratio:` last: the busy-time
imbalance by bytes ÷ by work (above 1: placing by work finishes sooner).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from paint_ray.evaluation import placement  # noqa: E402
from paint_ray.evaluation.host import EvaluatorHost  # noqa: E402
from paint_ray.evaluation.sweep import InProcess, Rows, Sweeper  # noqa: E402
from paint_ray.evaluation.weight_set import WeightSet  # noqa: E402
from paint_ray.models.checkpoints import save_tensors  # noqa: E402
from paint_ray.models.registry import load_model  # noqa: E402
from paint_ray.paths import home  # noqa: E402
from paint_ray.training.finetune import visual_state  # noqa: E402


def busy(loaded, sets, alphas, n, by_work: bool) -> tuple[list[float], dict]:
    torch.set_num_threads(1)
    hosts = [EvaluatorHost("cpu", threads=1, budget=1 << 40) for _ in range(n)]
    for h in hosts:
        h.add_loaded(loaded)
    sweeper = Sweeper(InProcess(hosts), None, None)
    real = placement.plan
    if not by_work:               # the previous rule: every split weighs its bytes, whatever is evaluated on it
        sweeper_plan = lambda splits, budgets, existing=None, batch=512, work=None: real(splits, budgets, existing, batch)
        import paint_ray.evaluation.sweep as sweep_module
        sweep_module.plan = sweeper_plan
    try:
        work = {ws: [(a, t, s) for a in alphas for t in ws.eval_tasks for s in ("val", "test")] for ws in sets}
        units, parent, by_key = sweeper.plan_units(work)
    finally:
        import paint_ray.evaluation.sweep as sweep_module
        sweep_module.plan = real
    seconds = defaultdict(float)
    counts = {}
    rows = Rows(parent, lambda m, rs: counts.update({(r["weights"], r["alpha"], r["task"], r["split"]): r["correct"]
                                                     for r in rs}))
    for i, model_id, cells in units:
        t0 = time.perf_counter()
        out = hosts[i].evaluate(model_id, [(c.weights, c.alpha, c.task, c.split) for c in cells])
        seconds[i] += time.perf_counter() - t0
        rows.add(i, model_id, out)
    return [seconds[i] for i in range(n)], counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--evaluators", type=int, default=4)
    p.add_argument("--sets", type=int, default=8, help="weight sets (θ1s) per patch task")
    p.add_argument("--model", default="toy-s")
    args = p.parse_args()
    loaded = load_model(args.model, progress=False)
    patch_tasks = ["digits", "counting", "typed_digits"]
    supported = ["shapes", "colors"]
    base = visual_state(loaded.model.visual)
    sets = []
    for t in patch_tasks:
        for k in range(args.sets):
            g = torch.Generator().manual_seed(hash((t, k)) % 2**31)
            state = {n: v + 0.01 * torch.randn(v.shape, generator=g) for n, v in base.items()}
            path = home() / "bench" / f"{t}-{k}.safetensors"
            save_tensors(state, path)
            sets.append(WeightSet(loaded.ref, f"bench/{t}-{k}.safetensors", f"{t}-{k}", t, "single",
                                  tuple([t, *supported])))
    alphas = [0.0, 0.5, 1.0]
    result = {}
    for label, by_work in (("by bytes", False), ("by work", True)):
        seconds, counts = busy(loaded, sets, alphas, args.evaluators, by_work)
        imbalance = max(seconds) / (sum(seconds) / len(seconds))
        result[label] = (imbalance, counts)
        print(f"placement {label}: busy seconds per evaluator {', '.join(f'{s:.1f}' for s in seconds)}; "
              f"max ÷ mean {imbalance:.2f}")
    assert result["by bytes"][1] == result["by work"][1], "the placements gave different counts"
    print(f"same {len(result['by work'][1])} cells and counts either way ({len(sets)} weight sets, {args.evaluators} "
          f"evaluators, {args.model})")
    print(f"ratio: {result['by bytes'][0] / result['by work'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
