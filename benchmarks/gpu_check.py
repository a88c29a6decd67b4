"""Every CUDA path of paint_ray, run and checked in one go: on a GPU when one is at hand, on the CPU in CI.

    python benchmarks/gpu_check.py              # the device there is (cuda when visible), full sizes
    python benchmarks/gpu_check.py --tiny       # small sizes, the CPU unless a GPU is visible (what CI runs)

Needs torch, open_clip and paint_ray's core (no Ray, no MLflow), so it runs on a bare GPU machine. It
builds real open_clip architectures with random weights (ViT-B-32, ViT-B-16, ViT-L-14) and the embedded
toy models' architectures, and checks, asserting what must hold:

- devices: 'cuda' resolves to 'cuda:N'; evaluation decides residency by asking tensors;
- the evaluator's three data paths (resident, streamed from host memory, probe features of a streamed
  shard) give equal correct counts, in bf16 and in fp32, and bf16 evaluation repeats itself exactly;
- θ1s beyond an evaluator's budget are evicted least recently used and come back with equal counts; which
  is faster to bring back, pinned host memory or the node's file;
- fine-tuning: a run checkpointed and resumed in a new process continues the interrupted one (bitwise on
  the CPU; within float tolerance on a GPU), with the optimizer and generator state loaded back from the CPU;
- the on-device RandomResizedCrop equals the CPU's; zero-shot heads encoded on the device equal the CPU's;

and prints eval img/s per model at batch 512 in bf16 and fp32, fine-tuning img/s per precision (fp32,
tf32, bf16) and peak memory per evaluator configuration. Exits non-zero on the first failed check.
"""
from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from paint_ray.data import PreparedSplit, image_size_of  # noqa: E402
from paint_ray.devices import resolve  # noqa: E402
from paint_ray.evaluation.evaluator import ZERO_SHOT, Cell, Evaluator, probe_features  # noqa: E402
from paint_ray.evaluation.residency import WeightCache  # noqa: E402
from paint_ray.evaluation.streaming import branch  # noqa: E402
from paint_ray.models.build import build_clip  # noqa: E402
from paint_ray.training.augment import CropBatch  # noqa: E402
from paint_ray.training.finetune import FinetuneConfig, Finetuner, visual_state  # noqa: E402

FAILED = []


def check(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILED.append(what)


def model_of(arch: str, image_size: int = 0) -> torch.nn.Module:
    """`arch` with random weights; `image_size` shrinks its input (the same blocks at a fraction of the cost)."""
    import open_clip

    import paint_ray.models.registry  # noqa: F401  (registers the embedded toy configs)
    torch.manual_seed(0)
    cfg = copy.deepcopy(open_clip.get_model_config(arch))
    if image_size:
        cfg["vision_cfg"]["image_size"] = image_size
    return build_clip(cfg, arch)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_split(n: int, size: int, classes: int, seed: int = 0) -> PreparedSplit:
    g = torch.Generator().manual_seed(seed)
    return PreparedSplit(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
                         torch.randint(0, classes, (n,), generator=g))


def head_for(model: torch.nn.Module, classes: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    dim = model.visual.output_dim if hasattr(model.visual, "output_dim") else model.text_projection.shape[1]
    head = torch.randn(classes, dim, generator=g)
    return head / head.norm(dim=-1, keepdim=True) * 100.0


def perturbed(visual: torch.nn.Module, scale: float, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * v.std().clamp(min=1e-3) * torch.randn(v.shape, generator=g)
            for k, v in visual_state(visual).items()}


# ---------------------------------------------------------------------------------------------------------
def check_devices(device: torch.device) -> None:
    check(device.type != "cuda" or device.index is not None, f"resolve() gives a concrete device: {device}")
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    check(branch(x.to(device), device) in ("resident", "host"), "data on the device is read in place")
    if device.type == "cuda":
        check(branch(x, device) == "stream", "host data streams to the GPU")
        check(branch(x.to("cuda"), resolve("cuda")) == "resident",
              "data on 'cuda' is resident for an evaluator on 'cuda:0' (no device-object comparison)")


def check_evaluator(arch: str, device: torch.device, n: int, batch: int, image_size: int = 0) -> None:
    model = model_of(arch, image_size)
    size = image_size_of(model.visual)
    data = random_split(n, size, 10)
    head = head_for(model, 10)
    theta1 = perturbed(model.visual, 0.02, 7)
    counts = {}
    for precision in ("fp32", "bf16"):
        os.environ["PAINT_RAY_EVAL_PRECISION"] = precision
        for resident in (True, False):
            ev = Evaluator(model.visual, device, batch_size=batch)
            ev.add_head("t", head)
            ev.add_split("t", "val", data, resident=resident)
            ev.add_weights("w", theta1)
            rows = ev.evaluate([Cell(ZERO_SHOT, 0.0, "t", "val"), Cell("w", 0.5, "t", "val"), Cell("w", 1.0, "t", "val")])
            counts[(precision, resident)] = [r["correct"] for r in rows]
            if not resident:
                feats = probe_features(ev, "w", 0.5, [("t", "val")], limit=min(16, n))
                check(feats.device.type == device.type and feats.shape[0] == min(16, n),
                      f"{arch}: probe features of a streamed shard computed on {device.type}")
        ev = Evaluator(model.visual, device, batch_size=batch)
        ev.add_head("t", head)
        ev.add_split("t", "val", data)
        ev.add_weights("w", theta1)
        again = [r["correct"] for r in ev.evaluate([Cell(ZERO_SHOT, 0.0, "t", "val"), Cell("w", 0.5, "t", "val"),
                                                     Cell("w", 1.0, "t", "val")])]
        check(again == counts[(precision, True)], f"{arch} {precision}: a second evaluator repeats the counts {again}")
    os.environ.pop("PAINT_RAY_EVAL_PRECISION", None)
    for precision in ("fp32", "bf16"):
        check(counts[(precision, True)] == counts[(precision, False)],
              f"{arch} {precision}: resident and streamed counts are equal {counts[(precision, True)]}")


def check_eviction(arch: str, device: torch.device, n: int, batch: int) -> None:
    """Five θ1s through a budget that keeps one on the device: counts equal an unbounded evaluator's."""
    model = model_of(arch)
    data = random_split(n, image_size_of(model.visual), 10)
    head = head_for(model, 10)
    sets = {f"w{i}": perturbed(model.visual, 0.02, 10 + i) for i in range(5)}
    with tempfile.TemporaryDirectory() as tmp:
        from paint_ray.models.checkpoints import save_tensors
        files = {}
        for k, state in sets.items():
            files[k] = Path(tmp) / f"{k}.safetensors"
            save_tensors(state, files[k])
        one = sum(t.nelement() * t.element_size() for t in next(iter(sets.values())).values())
        results = {}
        for label, room in (("unbounded", 1 << 62), ("one on the device", int(one * 1.5))):
            cache = WeightCache(device, lambda room=room: room, host_room=int(one * 2.5))
            ev = Evaluator(model.visual, device, batch_size=batch, weights=cache, model_id="m")
            ev.add_head("t", head)
            ev.add_split("t", "val", data)
            for k, state in sets.items():
                ev.add_weights(k, state, files=(files[k], None))
            rows = ev.evaluate([Cell(k, a, "t", "val") for k in sets for a in (0.5, 1.0)])
            results[label] = ([r["correct"] for r in rows], cache.device_bytes(), dict(cache.moves))
        check(results["unbounded"][0] == results["one on the device"][0],
              f"{arch}: θ1s evicted and brought back give the unbounded counts; moves {results['one on the device'][2]}")
        check(results["one on the device"][1] <= int(one * 1.5), "the device holds no more θ1 bytes than its room")
        # which is faster to bring a θ1 back: pinned host memory (CUDA) or the node's file
        state = sets["w0"]
        names = list(state)
        dtypes = [state[k].dtype for k in names]
        timings = {}
        for key in ("file", "host") if device.type == "cuda" else ("file",):
            cache = WeightCache(device, lambda: 1 << 62, host_room=1 << 62)
            cache.put("m", key, names, dtypes, state, files=(files["w0"], None) if key == "file" else None)
            entry = cache.held[("m", key)]
            best = float("inf")
            for _ in range(3):
                entry.device = None
                if key == "host":
                    entry.host = ([state[k].pin_memory() for k in names], None)
                synchronize(device)
                t0 = time.perf_counter()
                cache.get("m", key)
                synchronize(device)
                best = min(best, time.perf_counter() - t0)
            timings[key] = best
        if "host" in timings:
            print(f"     {arch}: bringing one θ1 ({one / 2**20:.0f} MiB) back to the GPU: from pinned host memory "
                  f"{1000 * timings['host']:.1f} ms, from the node's file {1000 * timings['file']:.1f} ms "
                  f"(file ÷ pinned {timings['file'] / max(timings['host'], 1e-9):.1f})")
        else:
            print(f"     {arch}: bringing one θ1 ({one / 2**20:.0f} MiB) back from the node's file: "
                  f"{1000 * timings['file']:.1f} ms (on the CPU host memory is the device: nothing to pin)")


def check_resume(device: torch.device, steps: int, batch: int, augments: Sequence[str]) -> None:
    """Fine-tune `steps` uninterrupted and, from the same start, half of them with a checkpoint; resume that
    checkpoint in a NEW process: the same θ at the end. Two child processes for all augmentations (the first
    runs and stops, the second resumes), so each costs one torch start-up, not one per augmentation."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for augment in augments:
            for name in ("uninterrupted", "half", "resumed"):
                (root / augment / name).mkdir(parents=True)
        run = [sys.executable, __file__, "--_resume-child", str(device), ",".join(augments), str(steps), str(batch),
               str(root)]
        for phase in ("start", "resume"):
            r = subprocess.run(run + [phase], capture_output=True, text=True)
            if r.returncode:
                print(r.stdout + r.stderr)
            check(r.returncode == 0, f"fine-tuning child process ({'resumed' if phase == 'resume' else 'whole run'}, "
                                     f"{'/'.join(augments)}) ran")
        from paint_ray.models.checkpoints import load_tensors
        for augment in augments:
            done, resumed = root / augment / "uninterrupted", root / augment / "resumed"
            if not ((done / "visual.safetensors").is_file() and (resumed / "visual.safetensors").is_file()):
                check(False, f"fine-tuning ({augment}) left both runs' weights")
                continue
            a = load_tensors(done / "visual.safetensors")
            b = load_tensors(resumed / "visual.safetensors")
            if device.type == "cpu":
                same = all(torch.equal(a[k], b[k]) for k in a)
            else:
                same = all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)
            check(same, f"fine-tuning ({augment}) resumed in a new process on {device.type} continues the "
                        f"interrupted run ({'bitwise' if device.type == 'cpu' else 'within 1e-5'})")


def _resume_child(device: str, augments: str, steps: int, batch: int, root: str, phase: str) -> None:
    """For each augmentation under `root`/AUGMENT: phase 'start' runs from step 0 to the end into
    `uninterrupted`, and a second run from step 0 to steps // 2 whose trainer state goes to `half`; phase
    'resume' runs from `half`'s trainer state to the end into `resumed`."""
    for augment in augments.split(","):
        _resume_one(device, augment, steps, batch, Path(root) / augment, phase)


def _resume_one(device: str, augment: str, steps: int, batch: int, folder: Path, phase: str) -> None:
    torch.manual_seed(0)
    model = model_of("toy-s")
    size = image_size_of(model.visual)
    if augment == "rrc":
        from paint_ray.caches.train import from_arrays
        import numpy as np
        g = np.random.default_rng(0)
        images = [g.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8)
                  for h, w in g.integers(size, size * 2, (64, 2))]
        train = from_arrays(images, g.integers(0, 10, 64))
    else:
        train = random_split(64, size, 10, seed=3)
    cfg = FinetuneConfig(lr=1e-3, steps=steps, batch_size=batch, warmup_steps=1, augment=augment,
                         order="epochs" if augment == "rrc" else "replacement")

    def tuner() -> Finetuner:
        torch.manual_seed(1)       # whatever the trainer draws from the global generator, each run alike
        return Finetuner(copy.deepcopy(model.visual), head_for(model, 10), train, cfg, device)
    if phase == "resume":
        resumed = tuner()
        assert resumed.restore(folder / "half"), "no trainer state to resume from"
        resumed.run()
        resumed.save(folder / "resumed", trainer=False)
        return
    straight = tuner()             # the reference: never stopped
    straight.run()
    straight.save(folder / "uninterrupted", trainer=False)
    stopped = tuner()              # a second run from the same start, stopped half-way
    stopped.run(until=steps // 2)
    stopped.save(folder / "half", trainer=True)


def check_crop_and_heads(device: torch.device) -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, int(h), int(w)), dtype=torch.uint8, generator=g)
              for h, w in torch.randint(120, 300, (8, 2), generator=g)]
    cpu = CropBatch(images, 112, torch.Generator().manual_seed(1)).resample()
    dev = CropBatch(images, 112, torch.Generator().manual_seed(1)).to(device, non_blocking=device.type == "cuda").resample()
    diff = (cpu - dev.cpu()).abs()
    check(float(diff.max()) <= 1.0, f"the crop batch resampled on {device.type} equals the CPU's (max diff "
                                    f"{float(diff.max()):.0f} grey level, {float((diff > 0).float().mean()):.2e} of pixels)")
    import open_clip

    from paint_ray.models.heads import zero_shot_head
    from paint_ray.tasks import get_task
    model = model_of("toy-s")
    tokenizer = open_clip.get_tokenizer("toy-s")
    task = get_task("shapes")
    on_cpu = zero_shot_head(model, tokenizer, task, "cpu")
    on_dev = zero_shot_head(model, tokenizer, task, device).cpu()
    cos = torch.nn.functional.cosine_similarity(on_cpu, on_dev, dim=-1).min()
    check(float(cos) > 0.9999, f"a head encoded on {device.type} equals the CPU's (min cosine {float(cos):.6f})")
    check(next(model.parameters()).device.type == "cpu", "encoding a head leaves the model where it was")


def throughput(archs: list[str], device: torch.device, batch: int, repeats: int, train_batch: int) -> None:
    for arch in archs:
        model = model_of(arch)
        size = image_size_of(model.visual)
        data = random_split(batch * repeats, size, 1000)
        head = head_for(model, 1000)
        line = []
        for precision in ("bf16", "fp32"):
            os.environ["PAINT_RAY_EVAL_PRECISION"] = precision
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            ev = Evaluator(model.visual, device, batch_size=batch)
            ev.add_head("t", head)
            ev.add_split("t", "val", PreparedSplit(data.images[:batch], data.labels[:batch]))
            ev.add_split("t", "all", data)
            ev.evaluate([Cell(ZERO_SHOT, 0.0, "t", "val")])           # warm-up
            synchronize(device)
            t0 = time.perf_counter()
            ev.memo.clear()
            ev.evaluate([Cell(ZERO_SHOT, 0.0, "t", "all")])
            synchronize(device)
            rate = len(data) / (time.perf_counter() - t0)
            peak = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""
            line.append(f"{precision} {rate:,.0f} img/s{peak}")
        os.environ.pop("PAINT_RAY_EVAL_PRECISION", None)
        print(f"     eval {arch} @{size}px, batch {batch}: " + "; ".join(line))
        rates = []
        for precision in ("fp32", "tf32", "bf16"):
            train = random_split(train_batch * 2, size, 1000, seed=5)
            cfg = FinetuneConfig(lr=1e-5, steps=repeats + 1, batch_size=train_batch, warmup_steps=1, augment_shift=0,
                                 precision=precision)
            tuner = Finetuner(copy.deepcopy(model.visual), head, train, cfg, device)
            tuner.run(until=1)
            synchronize(device)
            t0 = time.perf_counter()
            tuner.run()
            synchronize(device)
            rates.append(f"{precision} {repeats * train_batch / (time.perf_counter() - t0):,.0f} img/s")
        print(f"     fine-tune {arch}, batch {train_batch}: " + "; ".join(rates))
        del model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when visible)")
    p.add_argument("--tiny", action="store_true", help="small sizes (what CI runs on the CPU)")
    p.add_argument("--_resume-child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._resume_child:
        d, augments, steps, batch, root, phase = args._resume_child
        _resume_child(d, augments, int(steps), int(batch), root, phase)
        return 0
    device = resolve(args.device)
    t0 = time.time()
    print(f"paint_ray GPU check on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'the CPU'} "
          f"({device}), torch {torch.__version__}{', tiny sizes' if args.tiny else ''}")
    sections = []

    def timed(name, fn, *a, **k):
        t = time.time()
        fn(*a, **k)
        sections.append(f"{name} {time.time() - t:.0f} s")

    timed("devices", check_devices, device)
    archs = ["toy-s", "ViT-B-32"] if args.tiny else ["toy-s", "toy-m", "toy-l", "ViT-B-32", "ViT-B-16", "ViT-L-14"]
    for arch in archs[:2] if args.tiny else ["toy-m", "ViT-B-32", "ViT-L-14"]:
        # tiny: a real ViT-B-32 at 64 px (its 12 blocks of width 768 on 5 tokens): the paths, not the cost
        timed(f"evaluator {arch}", check_evaluator, arch, device, n=24 if args.tiny else 1000,
              batch=8 if args.tiny else 512, image_size=64 if args.tiny and arch.startswith("ViT") else 0)
    timed("eviction", check_eviction, "toy-s" if args.tiny else "ViT-B-16", device, n=16 if args.tiny else 512,
          batch=8 if args.tiny else 512)
    timed("resume shift, rrc", check_resume, device, steps=6 if args.tiny else 40, batch=8 if args.tiny else 32,
          augments=("shift", "rrc"))
    timed("crop and heads", check_crop_and_heads, device)
    timed("throughput", throughput, archs[:1] if args.tiny else archs, device, batch=8 if args.tiny else 512,
          repeats=2 if args.tiny else 8, train_batch=8 if args.tiny else 128)
    print("time per section: " + ", ".join(sections))
    print(f"{len(FAILED)} failed checks; {time.time() - t0:.0f} s")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
