"""Pretraining steps/s of the embedded toy CLIPs in fp32 against bf16 autocast, side by side in one run
(alternating, the median of several steps each, after a warm-up step).

    python benchmarks/pretrain_precision.py [--models toy-s,toy-m,toy-l] [--device cpu|cuda] [--steps 6]

Pretraining runs bf16 autocast on a GPU and fp32 on a CPU (models/pretrain.py). This measures whether bf16
would pay on this CPU too: a step is a forward and backward pass of a 256-item batch through both towers,
the multi-positive loss and an AdamW update, exactly as `pretrain` takes it. Prints one `ratio:` line per
model (bf16 steps/s ÷ fp32 steps/s) and, last, the overall `ratio:` (geometric mean).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import open_clip  # noqa: E402
import torch  # noqa: E402

from paint_ray.models.pretrain import clip_loss  # noqa: E402
from paint_ray.models.registry import CONFIG_DIR, EMBEDDED  # noqa: E402


def _seconds_per_step(model: open_clip.CLIP, opt: torch.optim.Optimizer, batch: tuple, bf16: bool,
                      steps: int) -> float:
    x, tokens, ids = batch
    times = []
    for _ in range(steps + 1):          # the first step warms the allocator and the kernels' caches
        start = time.perf_counter()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            img_f, txt_f, scale = model(x, tokens)
            loss = clip_loss(img_f, txt_f, scale, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="toy-s,toy-m,toy-l")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = torch.device(args.device)
    ratios = []
    for name in args.models.split(","):
        cfg = json.loads((CONFIG_DIR / f"{name}.json").read_text())
        torch.manual_seed(0)
        model = open_clip.CLIP(**cfg).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        n = EMBEDDED[name].batch_size
        size = cfg["vision_cfg"]["image_size"]
        batch = (torch.randn(n, 3, size, size, device=device),
                 torch.randint(0, 400, (n, cfg["text_cfg"]["context_length"]), device=device),
                 torch.randint(0, n // 2, (n,), device=device))
        best = {False: math.inf, True: math.inf}
        for _ in range(args.repeats):                       # alternate, so a slow spell hits both sides
            for bf16 in (False, True):
                best[bf16] = min(best[bf16], _seconds_per_step(model, opt, batch, bf16, args.steps))
        ratio = best[False] / best[True]
        ratios.append(ratio)
        print(f"{name}: fp32 {best[False]:.3f} s/step, bf16 autocast {best[True]:.3f} s/step")
        print(f"ratio: {ratio:.2f}  ({name}, bf16 steps/s / fp32 steps/s)")
    print(f"ratio: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}")


if __name__ == "__main__":
    main()
