"""`--plan`: where a study's eval data and weights would go, and what each machine needs — without Ray work.

Split sizes come from the data on disk when `--data-root` has it, else from the paper datasets' published
sizes (validation held out as the reference code does: min(10% of train, 5,000)). The cluster is this
machine, or the node types of a Ray cluster launcher file (`--plan-for cluster.yaml`), with memory sizes
of known cloud instance types. Placement is the one the Ray backend would make (placement.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import PaintRayError
from .memory import CPU_FRACTION, EVAL_BATCH, GPU_FRACTION, available_host_bytes, format_bytes
from .placement import Placement, SplitRef, plan

GiB = 2**30
# (vCPUs, RAM GiB, GPUs, GiB per GPU, GPU) of instance types cluster.yaml files use
INSTANCES = {
    "m5.xlarge": (4, 16, 0, 0, ""), "m5.2xlarge": (8, 32, 0, 0, ""), "m5.4xlarge": (16, 64, 0, 0, ""),
    "r5.2xlarge": (8, 64, 0, 0, ""),
    "g5.xlarge": (4, 16, 1, 24, "A10G"), "g5.2xlarge": (8, 32, 1, 24, "A10G"), "g5.4xlarge": (16, 64, 1, 24, "A10G"),
    "g5.12xlarge": (48, 192, 4, 24, "A10G"), "g5.48xlarge": (192, 768, 8, 24, "A10G"),
    "g6.xlarge": (4, 16, 1, 24, "L4"), "g6.2xlarge": (8, 32, 1, 24, "L4"),
    "p3.2xlarge": (8, 61, 1, 16, "V100"), "p4d.24xlarge": (96, 1152, 8, 40, "A100"),
    "p4de.24xlarge": (96, 1152, 8, 80, "A100"), "p5.48xlarge": (192, 2048, 8, 80, "H100"),
}
# (train, test) of the paper datasets as published; val is held out of train unless given here
PAPER_SIZES = {
    "cars": (8144, 8041), "dtd": (3760, 1880), "eurosat": (21600, 2700), "gtsrb": (26640, 12630),
    "kitti_distance": (6347, 711), "mnist": (60000, 10000), "resisc45": (18900, 6300), "sun397": (19850, 19850),
    "svhn": (73257, 26032), "imagenet": (1281167, 50000), "cifar10": (50000, 10000), "cifar100": (50000, 10000),
    "stl10": (5000, 8000), "food101": (75750, 25250),
}
OWN_VAL = {"eurosat": 2700, "resisc45": 6300}


@dataclass(frozen=True)
class NodeType:
    name: str
    count: int
    cpus: int
    ram: int            # bytes
    gpus: int
    gpu_memory: int     # bytes per GPU
    gpu: str = ""
    head: bool = False


def split_rows(task: str, split: str, data_root: str | None) -> tuple[int, str]:
    """(rows, where the figure comes from) of one eval split."""
    from ..tasks import get_task
    try:
        return len(get_task(task, data_root).split(split)), "on disk" if task in PAPER_SIZES else "generated"
    except PaintRayError:
        if task not in PAPER_SIZES:
            raise
    train, test = PAPER_SIZES[task]
    val = OWN_VAL.get(task) or min(int(train * 0.1), 5000)
    return (test if split == "test" else val), "published size"


def cluster_from_yaml(path: str) -> list[NodeType]:
    import yaml
    try:
        spec = yaml.safe_load(Path(path).read_text())
        types = spec["available_node_types"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise PaintRayError(f"--plan-for {path!r} is not a readable Ray cluster file with available_node_types "
                            f"({type(e).__name__})") from None
    nodes = []
    for name, t in types.items():
        kind = (t.get("node_config") or {}).get("InstanceType", "")
        cpus, ram, gpus, gmem, gpu = INSTANCES.get(kind, (0, 0, 0, 0, ""))
        res = t.get("resources") or {}
        gpus = int(res.get("GPU", gpus))
        if gpus and not gmem:
            raise PaintRayError(f"node type {name!r} ({kind or 'no InstanceType'}) has GPUs of unknown memory; "
                                f"known instance types: {', '.join(sorted(INSTANCES))}")
        head = name == spec.get("head_node_type")
        count = 1 if head else int(t.get("max_workers", spec.get("max_workers", 1)))
        nodes.append(NodeType(name, count, int(res.get("CPU", cpus)), ram * GiB, gpus, gmem * GiB, gpu, head))
    return nodes


def this_machine() -> list[NodeType]:
    import os

    import torch
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gmem = torch.cuda.get_device_properties(0).total_memory if gpus else 0
    return [NodeType("this machine", 1, os.cpu_count() or 1, available_host_bytes(), gpus, gmem,
                     torch.cuda.get_device_name(0) if gpus else "", head=True)]


def _visual_params(spec: str) -> tuple[int, int]:
    """(image-tower parameters, all parameters) from the architecture, built on the meta device."""
    import open_clip
    import torch

    import paint_ray.models.registry  # noqa: F401
    arch = spec.split(":", 1)[0]
    from ..models.registry import _quiet_open_clip
    with torch.device("meta"), _quiet_open_clip():
        model = open_clip.create_model(arch, pretrained=None, device="meta")
    return sum(p.numel() for p in model.visual.parameters()), sum(p.numel() for p in model.parameters())


def study_plan(cfg, nodes: list[NodeType]) -> str:
    """The plan as text: splits and bytes per evaluator (placed by work), what streams, every θ1 each
    evaluator receives and what it keeps on its device, the peak it is budgeted for, and the driver's memory."""
    from .memory import image_size_of_spec
    evaluators = [(n, k) for n in nodes for _ in range(n.count) for k in range(max(n.gpus, 0))]
    on_gpus = bool(evaluators)
    if not on_gpus:      # CPU clusters: one evaluator per node (the Ray backend makes one per CPU up to 8)
        evaluators = [(n, 0) for n in nodes for _ in range(n.count)]
    sizes = {m: image_size_of_spec(m) or 224 for m in cfg.models}
    params = {m: _visual_params(m) for m in cfg.models}
    tower = {m: params[m][0] * 4 for m in cfg.models}                       # fp32 image-tower bytes
    fixed = sum(2 * tower[m] for m in cfg.models)                            # θ0 and the live θα per model
    reserve = max(tower.values())                                            # room for one θ1 at a time
    device = [n.gpu_memory if on_gpus else n.ram for n, _ in evaluators]
    # the host's default budget (memory.default_budget): what is held plus a share of what is still free
    budgets = [cfg.eval_memory or int(fixed + (d - fixed) * (GPU_FRACTION if on_gpus else CPU_FRACTION)) for d in device]
    refs, sources = [], {}
    for size in sorted(set(sizes.values())):
        for task in cfg.all_tasks():
            for split in ("val", "test"):
                n, source = split_rows(task, split, cfg.data_root)
                refs.append(SplitRef(task, split, f"{task}-{split}", size, n))
                sources[source] = sources.get(source, 0) + 1
    recipes = len(cfg.recipes())
    # weight sets evaluated on each split: every (model, patch task, recipe) whose eval tasks include it
    work = {r.ident: sum(recipes for m in cfg.models for p in cfg.patch_tasks
                         if r.task in cfg.eval_tasks(p) and sizes[m] == r.image_size) for r in refs}
    placement: Placement = plan(refs, [max(0, b - fixed - reserve) for b in budgets], work=work)
    names = [f"{n.name}#{i}" + (f" ({n.gpu} {format_bytes(n.gpu_memory)})" if on_gpus else "")
             for i, (n, _) in enumerate(evaluators)]
    lines = [f"plan for {cfg.name}: {len(cfg.models)} model(s) × {len(cfg.patch_tasks)} patch task(s) × "
             f"{recipes} recipe(s); {len(evaluators)} evaluator(s) "
             f"({'one per GPU' if on_gpus else 'one per node'}); split sizes: "
             + ", ".join(f"{k} ({v})" for k, v in sources.items()),
             f"eval data: {format_bytes(sum(r.bytes for r in refs))} in {len(refs)} splits "
             f"(uint8, batch {EVAL_BATCH}); placed by work (bytes × weight sets evaluated on them): "
             f"max ÷ mean work {placement.balance():.2f}", ""]
    lines.append(placement.describe(names))
    lines += ["", "per evaluator: every θ1 it receives, and its device memory as budgeted (θ0 + live θα of each "
                  "model, resident data, θ1s on the device; the rest of the budget's device share is for activations)"]
    worst = 0.0
    for i, (node, _) in enumerate(evaluators):
        tasks = {h.shard.task for h in placement.held[i]}
        held = [(m, p) for m in cfg.models for p in cfg.patch_tasks if tasks & set(cfg.eval_tasks(p))]
        theta1s = [tower[m] for m, _ in held for _ in range(recipes)]
        room = budgets[i] - fixed - placement.resident_bytes(i)
        on_device = min(sum(theta1s), max(room, reserve))
        peak = fixed + placement.resident_bytes(i) + on_device
        worst = max(worst, peak / device[i])
        kept = sum(1 for _ in theta1s) if sum(theta1s) <= room else f"{max(1, int(room // max(tower.values())))}+"
        lines.append(f"  {names[i]}: receives {len(theta1s)} θ1 ({format_bytes(sum(theta1s))}), keeps {kept} on its "
                     f"device at a time; θ0+θα {format_bytes(fixed)} + data {format_bytes(placement.resident_bytes(i))}"
                     f" + θ1s {format_bytes(on_device)} = {format_bytes(peak)} of {format_bytes(device[i])} "
                     f"(budget {format_bytes(budgets[i])})")
    streamed = sum(placement.streamed_bytes(i) for i in range(len(evaluators)))
    lines.append(f"largest share of a device's memory held: {100 * worst:.0f}%; streamed (fits no budget): "
                 f"{format_bytes(streamed)}; θ1s beyond an evaluator's room wait in pinned host memory or its "
                 f"node's cache and are copied in when their cells run (units are grouped by weight set)")

    def holders(tasks) -> int:      # evaluators holding any shard of these tasks: where a θ1 goes
        return len({i for i, hs in enumerate(placement.held) for h in hs if h.shard.task in tasks})
    sends = {(m, p): holders(cfg.eval_tasks(p)) for m in cfg.models for p in cfg.patch_tasks}
    traffic = sum(k * recipes * tower[m] for (m, _), k in sends.items())
    lines.append(f"θ1 traffic: {len(sends) * recipes} θ1s, each saved once to the storage and fetched by the "
                 f"evaluators holding data of its tasks ({min(sends.values())}–{max(sends.values())} of "
                 f"{len(evaluators)}): {format_bytes(traffic)} in all")
    largest = max(cfg.models, key=lambda m: params[m][0])
    driver = sum(params[m][1] * 4 for m in cfg.models) + 2 * params[largest][0] * 4 + 1 * GiB
    head = next((n for n in nodes if n.head), nodes[0])
    lines.append(f"driver peak memory (on {head.name}): about {format_bytes(driver)} — every model loaded once, "
                 f"one θ1 and one patched copy while logging to MLflow, 1 GiB for Python/torch/Ray; no eval data, "
                 f"no θ1 and no head in Ray's object store; heads are encoded on the evaluators' devices"
                 + (f"; the node has {format_bytes(head.ram)} of RAM" if head.ram else ""))
    return "\n".join(lines)
