"""Resident vs streamed eval data: the same cells, one run, side by side. No Ray needed.

The split is written to a real eval-cache entry (memory-mapped .npy, as a node's cache holds it). The
resident evaluator copies it onto the device; the streamed one keeps the memory map and streams batches
(pinned memory + a side CUDA stream on GPUs, page-cache reads on CPUs). Both are warmed alike, then timed
in alternating rounds; their correct counts must match. The last line is `ratio: X` (streamed img/s over
resident img/s).

    python benchmarks/streaming.py                               # toy-m, random weights, this CPU
    python benchmarks/streaming.py --model ViT-B-32 --device cuda --n 20000
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toy-m", help="an open_clip architecture (random weights)")
    ap.add_argument("--n", type=int, default=4096, help="images in the split")
    ap.add_argument("--alphas", type=int, default=5, help="α values per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["PAINT_RAY_HOME"] = home               # the cache entry lives (and goes) with this run
        run(args)


def run(args) -> None:
    import open_clip

    import paint_ray.models.registry  # noqa: F401  (registers the toy configs)
    from paint_ray.data import PreparedSplit, image_size_of
    from paint_ray.caches.eval import cached_prepare
    from paint_ray.evaluation.evaluator import Cell, Evaluator
    from paint_ray.devices import eval_precision
    from paint_ray.tasks import ArraySplit, Task

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = open_clip.create_model(args.model, pretrained=None).eval()
    size = image_size_of(model.visual)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, args.n)
    task = Task("bench", tuple(str(i) for i in range(10)), ("{}",), lambda split: ArraySplit(images, labels),
                fingerprint=f"streaming-bench-{args.n}-{size}")
    mapped = cached_prepare(task, "test", size, progress=False)          # memory-mapped cache entry
    dim = model.text_projection.shape[1] if model.text_projection is not None else 512
    head = torch.nn.functional.normalize(torch.randn(10, dim), dim=-1) * 30
    theta1 = {k: v + 0.02 * torch.randn_like(v) for k, v in model.visual.state_dict().items() if v.is_floating_point()}
    evaluators = {}
    for kind, resident in (("resident", True), ("streamed", False)):
        ev = Evaluator(model.visual, device)
        ev.add_head("bench", head)
        ev.add_weights("ft", theta1)
        # resident: a copy in device memory (on the CPU, in RAM, as EvaluatorHost.add_shard makes it)
        data = PreparedSplit(mapped.images.clone(), mapped.labels.clone()) if resident else mapped
        ev.add_split("bench", "test", data, resident=resident)
        evaluators[kind] = ev
    print(f"model {args.model} ({size} px), {args.n:,} images ({args.n * 3 * size * size / 2**20:.0f} MiB uint8), "
          f"device {device} (eval in {eval_precision(device.type)}), torch threads {torch.get_num_threads()}; "
          f"resident holds {evaluators['resident'].resident_bytes / 2**20:.0f} MiB, streamed "
          f"{evaluators['streamed'].resident_bytes / 2**20:.0f} MiB")

    def sweep(ev: Evaluator, alphas: list[float]) -> tuple[float, list[int]]:
        ev.memo.clear()
        start = time.perf_counter()
        rows = ev.evaluate(Cell("ft", a, "bench", "test") for a in alphas)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, [r["correct"] for r in rows]

    for ev in evaluators.values():                        # warm both alike: kernels, page cache
        sweep(ev, [0.5])
    times = {k: [] for k in evaluators}
    counts = {}
    for r in range(args.rounds):
        alphas = [round((i + 1) / (args.alphas + 1) + r * 1e-3, 6) for i in range(args.alphas)]
        for kind in (("resident", "streamed") if r % 2 == 0 else ("streamed", "resident")):
            seconds, correct = sweep(evaluators[kind], alphas)
            times[kind].append(seconds)
            counts.setdefault(r, {})[kind] = correct
    assert all(c["resident"] == c["streamed"] for c in counts.values()), "streamed rows differ from resident rows"
    images_per_round = args.n * args.alphas
    rate = {k: images_per_round / statistics.median(v) for k, v in times.items()}
    for kind in evaluators:
        print(f"{kind:>9}: median {statistics.median(times[kind]):.2f} s per round of {args.alphas} α "
              f"({', '.join(f'{t:.2f}' for t in times[kind])})  {rate[kind]:,.0f} img/s")
    print("correct counts: equal in every round")
    print(f"ratio: {rate['streamed'] / rate['resident']:.2f}")


if __name__ == "__main__":
    main()
