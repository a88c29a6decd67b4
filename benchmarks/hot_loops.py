"""Fine-tuning steps/s and sweep img/s of the hot loops as they are, against the loops they replaced, side by
side in one run (alternating, best of several repeats each).

    python benchmarks/hot_loops.py [--device cpu|cuda] [--repeats 3]

Replaced (kept here, as they were, to measure against):
- fine-tuning: a float(loss) host read every step; the random shift as a Python loop over images; the
  reference crop as one interpolate call and one pageable host-to-device copy per image; batches drawn and
  copied in the step (no pinned buffer, no prefetch);
- evaluation: the normalisation's mean and std built as new device tensors for every batch, and the head
  matmul left to autocast (bf16 where the eval precision is bf16).
Prints one `ratio:` line per loop and, last, the overall `ratio:` (geometric mean, new ÷ old).
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from paint_ray.data import PreparedSplit, image_size_of  # noqa: E402
from paint_ray.devices import inference_autocast, resolve  # noqa: E402
from paint_ray.evaluation.evaluator import ZERO_SHOT, Cell, Evaluator  # noqa: E402
from paint_ray.models.normalize import mean_std  # noqa: E402
from paint_ray.training import finetune as ft  # noqa: E402
from paint_ray.training.augment import crop_params  # noqa: E402


def _old_shift(x, max_shift, generator):
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    offs = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offs.tolist())])


def _old_input(images, visual, dtype=torch.float32):
    mean, std = mean_std(visual)
    mean_t = torch.tensor(mean, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    return (images.to(dtype) / 255.0 - mean_t) / std_t


def _old_crops(images, size, generator, device):
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    for k, image in enumerate(images):
        top, left, h, w = crop_params(int(image.shape[1]), int(image.shape[2]), generator)
        crop = image[None, :, top:top + h, left:left + w].to(device)
        out[k] = torch.nn.functional.interpolate(crop.float(), size=(size, size), mode="bicubic",
                                                 align_corners=False, antialias=True)[0]
    return out.round_().clamp_(0, 255)


class OldFinetuner(ft.Finetuner):
    """The loop as it was: draws, gathers, host copies and the loss read, all inside the step."""

    def run(self, until=None, every=0, callback=None, progress=False, desc=""):
        until = self.cfg.steps if until is None else min(until, self.cfg.steps)
        self.visual.train()
        while self.step < until:
            picks = self._drawn() if self.cfg.order != "epochs" else self._shuffled(self.step)
            routes, start = [], 0
            for name, idx in picks:
                routes.append((name, slice(start, start + len(idx))))
                start += len(idx)
            y = torch.cat([self.train[name].labels[idx] for name, idx in picks]).to(self.device)
            if self.cfg.augment == "rrc":
                ims = [im for name, idx in picks for im in ft._images(self.train[name], idx)]
                x = _old_input(_old_crops(ims, image_size_of(self.visual), self.gen, self.device), self.visual)
            else:
                x = torch.cat([self.train[name].images[idx] for name, idx in picks]).to(self.device)
                x = _old_input(_old_shift(x, self.cfg.augment_shift, self.gen), self.visual)
            loss = self.loss(x, routes, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.visual.parameters(), self.cfg.grad_clip)
            self.opt.step()
            self.sched.step()
            self.step += 1
            self._last = float(loss.detach())          # the host read of every step
        return self


class OldEvaluator(Evaluator):
    @torch.inference_mode()
    def _correct(self, task, split):
        data, head = self.splits[(task, split)], self.heads[task]
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for a in range(0, len(data), self.batch_size):
            x = _old_input(data.images[a:a + self.batch_size], self.visual)
            labels = data.labels[a:a + self.batch_size].to(self.device)
            with inference_autocast(self.device):
                f = self.visual(x)
                f = f / f.norm(dim=-1, keepdim=True)
                logits = f.float() @ head.T
            correct += (logits.argmax(-1) == labels).sum()
        return correct, len(data)


def model():
    import open_clip

    import paint_ray.models.registry  # noqa: F401
    from paint_ray.models.build import build_clip
    torch.manual_seed(0)
    return build_clip(open_clip.get_model_config("toy-m"), "toy-m")


def time_finetune(cls, m, train, head, cfg, device, steps):
    tuner = cls(copy.deepcopy(m.visual), head, train, cfg, device)
    tuner.run(until=2)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tuner.run(until=2 + steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def time_eval(cls, m, data, head, device):
    ev = cls(m.visual, device)
    ev.add_head("t", head)
    ev.add_split("t", "s", data)
    ev.evaluate([Cell(ZERO_SHOT, 0.0, "t", "s")])
    ev.memo.clear()
    t0 = time.perf_counter()
    ev.evaluate([Cell(ZERO_SHOT, 0.0, "t", "s")])
    return len(data) / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    args = p.parse_args()
    device = resolve(args.device)
    m = model()
    g = torch.Generator().manual_seed(0)
    head = torch.randn(10, m.visual.output_dim)
    head = head / head.norm(dim=-1, keepdim=True) * 50
    size = image_size_of(m.visual)
    shift_train = PreparedSplit(torch.randint(0, 256, (2000, 3, size, size), dtype=torch.uint8, generator=g),
                                torch.randint(0, 10, (2000,), generator=g))
    from paint_ray.caches.train import from_arrays
    import numpy as np
    rng = np.random.default_rng(0)
    rrc_train = from_arrays([rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
                             for h, w in rng.integers(size + 4, size + 12, (500, 2))], rng.integers(0, 10, 500))
    loops = {
        "fine-tune, shift, batch 64 (steps/s)": lambda cls: time_finetune(
            cls, m, shift_train, head, ft.FinetuneConfig(steps=10**6, batch_size=64, warmup_steps=1), device, args.steps),
        "fine-tune, rrc, batch 64 (steps/s)": lambda cls: time_finetune(
            cls, m, rrc_train, head, ft.FinetuneConfig(steps=10**6, batch_size=64, warmup_steps=1, augment="rrc",
                                                      order="epochs"), device, args.steps),
        "sweep, 4,096 images (img/s)": lambda cls: time_eval(cls, m, PreparedSplit(shift_train.images[:4096 // 2].repeat(2, 1, 1, 1),
                                                                                  shift_train.labels[:2048].repeat(2)),
                                                             head, device),
    }
    classes = {"fine-tune": (OldFinetuner, ft.Finetuner), "sweep": (OldEvaluator, Evaluator)}
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"hot loops on {device} ({cpu or 'unknown CPU'}, {torch.get_num_threads()} threads), best of {args.repeats}")
    ratios = []
    for label, run in loops.items():
        old_cls, new_cls = classes[label.split(",")[0]]
        old, new = [], []
        for _ in range(args.repeats):          # alternating: a slow spell of the host hits both
            old.append(run(old_cls))
            new.append(run(new_cls))
        ratio = max(new) / max(old)
        ratios.append(ratio)
        print(f"{label}: before {max(old):,.1f}, after {max(new):,.1f}; ratio: {ratio:.2f}")
    print(f"ratio: {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
