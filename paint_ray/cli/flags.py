"""The one set of flags: `paint-ray patch` and every experiments/*.py study build their parsers from these
groups and their configuration with `config_from_args`, so a flag means the same everywhere.

`paint-ray patch` is the one-model, one-task case of a study (in this process, no MLflow by default).
"""
from __future__ import annotations

import argparse

from ..errors import PaintRayError, unknown


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of numbers, e.g. 1e-4,3e-4") from None


def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers, e.g. 0,1") from None


def seed_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integer seeds, e.g. 0,1") from None


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_study_flags(p: argparse.ArgumentParser, presets: dict, out: str, single: bool = False) -> None:
    """Every flag a study takes. With `single` (paint-ray patch) the defaults are the embedded preset's and
    `--model`/`--patch` name one model and one task."""
    g = p.add_argument_group("what to patch")
    g.add_argument("--preset", default="embedded", help=f"one of: {', '.join(presets)}")
    g.add_argument("--models", "--model", dest="models", type=names,
                   help="model specs, comma-separated: toy-s|toy-m|toy-l, ARCH:TAG, ARCH:/path/ckpt, hf-hub:ORG/REPO, "
                        "local-dir:/path (default: the preset's)")
    g.add_argument("--patch", type=names, help="patch task(s), comma-separated (default: the preset's)")
    g.add_argument("--supported", type=names, help="supported tasks, comma-separated (default: the preset's)")
    g.add_argument("--data-root", default=None, help="root of the on-disk datasets (paper tasks)")

    g = p.add_argument_group("α and its selection")
    g.add_argument("--alphas", default=None, help="α grid: start:stop:step (stop included) or a comma list, or "
                                                  "auto[:Δα] to search α adaptively to Δα (default 0.01) instead "
                                                  "(default: the preset's, else 0:1:0.1)")
    g.add_argument("--max-drop", type=float, default=None,
                   help="choose the best patch accuracy whose mean supported drop is at most D points "
                        "(default: the best mean of patch and supported accuracy)")

    g = p.add_argument_group("per-block schedules (after the global α)")
    g.add_argument("--schedule", default=None,
                   help="linear (LiNeS's depth schedule: block 0's and the last block's coefficients) or free (one "
                        "coefficient per image-tower block): search that family on validation with --searcher; or "
                        "c1,...,cL to evaluate one schedule (block 0, next to the input, first)")
    g.add_argument("--searcher", default=None, help="tpe (Optuna's multivariate TPE, default) or random; on Ray "
                                                    "through Ray Tune's OptunaSearch")
    g.add_argument("--schedule-trials", type=int, default=None,
                   help="schedules proposed per target (the rule and each drop budget) and weight set (default 48)")
    g.add_argument("--schedule-batch", type=int, default=None, help="of them per round (default 8)")

    g = p.add_argument_group("fine-tuning (comma lists are gridded over)")
    for flag, kind, what in (("--lr", float_list, "learning rates"), ("--steps", int_list, "steps"),
                             ("--batch-size", int_list, "batch sizes"), ("--weight-decay", float_list, "weight decays"),
                             ("--warmup-steps", int_list, "warm-up steps"),
                             ("--label-smoothing", float_list, "label smoothings")):
        g.add_argument(flag, type=kind, help=f"{what} (default: the preset's)")
    g.add_argument("--augment", type=names, help="shift (a random shift of the prepared image) or rrc (the "
                                                 "reference's RandomResizedCrop)")
    g.add_argument("--order", type=names, help="replacement or epochs (a shuffle per epoch)")
    g.add_argument("--finetune-precision", default=None,
                   help="fp32 (the reference's), tf32 (TF32 matmuls on Ampere+ GPUs) or bf16 (autocast)")
    g.add_argument("--seeds", "--seed", dest="seeds", type=seed_list,
                   help="fine-tuning seeds, comma-separated; each (model, patch task) is patched once per seed")

    g = p.add_argument_group("where it runs")
    g.add_argument("--out", default=out, help="output directory (results Parquet, tables, plots, Tune, MLflow)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--eval-memory", default=None,
                   help="bytes each evaluator may hold on its device, weights and eval data, e.g. 12GiB (default: "
                        "measured once the model is loaded: half the free GPU memory, a quarter of the free RAM "
                        "split among a node's evaluators on CPUs); data beyond it streams")
    if single:
        g.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when a GPU is visible)")
        p.set_defaults(local=True, mlflow_default=False)
        return
    g.add_argument("--local", action="store_true", help="run in this process (no Ray)")
    g.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, a local node, "
                                                    "or a new local cluster)")
    g.add_argument("--cpus-per-trial", type=float, default=1.0)
    g.add_argument("--gpus-per-trial", type=float, default=None,
                   help="default: 1 where the cluster's node types have GPUs, else 0; fractions allowed")
    g.add_argument("--evaluators", type=int, default=None, help="evaluator actors (default: one per GPU or CPU)")
    g.add_argument("--keep-evaluators", default=None, metavar="DURATION",
                   help="evaluators end themselves once idle this long, giving their GPUs back (e.g. 30m, 2h; "
                        "default 30m); paint_ray.live keeps them warm while used")
    g.add_argument("--asha", action="store_true", help="early-stop weak trials with ASHA on patch val accuracy")
    g.add_argument("--plan", action="store_true",
                   help="print where eval data and weights would go and what each machine needs, then exit")
    g.add_argument("--plan-for", default=None, metavar="CLUSTER_YAML",
                   help="with --plan: plan for the node types of a Ray cluster file instead of this machine")

    g = p.add_argument_group("MLflow")
    g.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI, else sqlite in --out")
    g.add_argument("--register", action="store_true", help="register each patched model in the MLflow registry")
    g.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging (Parquet only)")
    p.set_defaults(mlflow_default=True)


def config_from_args(study: str, presets: dict, args: argparse.Namespace, single: bool = False):
    """The StudyConfig the flags ask for (checked by its `validate`, once, by the caller)."""
    from ..config import StudyConfig, TrialResources, parse_alpha_spec
    from ..evaluation.memory import parse_bytes
    if args.preset not in presets:
        raise unknown("preset", args.preset, presets)
    preset = presets[args.preset]
    space = dict(preset["search_space"])
    for key in ("lr", "steps", "weight_decay", "label_smoothing", "warmup_steps", "batch_size", "augment", "order"):
        if getattr(args, key) is not None:
            space[key] = getattr(args, key)
    if args.finetune_precision is not None:
        space["precision"] = [args.finetune_precision]
    models = args.models or preset["models"]
    patch = args.patch or preset["patch_tasks"]
    if single and len(models) != 1:
        raise PaintRayError(f"paint-ray patch patches one model, got --model {','.join(models)}; a study over "
                            f"several is experiments/scaling.py --models {','.join(models)}")
    if single and len(patch) != 1:
        raise PaintRayError(f"paint-ray patch patches one task, got --patch {','.join(patch)}; several tasks are "
                            f"experiments/scaling.py (one by one) or experiments/multitask.py (together)")
    alphas, search = parse_alpha_spec(args.alphas or preset.get("alphas", "0:1:0.1"))
    supported = args.supported if args.supported is not None else preset["supported"]
    if args.supported is not None and not supported:
        raise PaintRayError("--supported names no task; give e.g. shapes,colors")
    resources = None
    cpus, gpus = getattr(args, "cpus_per_trial", 1.0), getattr(args, "gpus_per_trial", None)
    if gpus is not None or cpus != 1.0:
        resources = TrialResources(cpus=cpus, gpus=gpus or 0.0)
    keep = getattr(args, "keep_evaluators", None)
    schedule_opts = {k: getattr(args, k) for k in ("searcher", "schedule_trials", "schedule_batch")
                     if getattr(args, k, None) is not None}
    if schedule_opts and getattr(args, "schedule", None) is None:
        flag = "--" + next(iter(schedule_opts)).replace("_", "-")
        raise PaintRayError(f"{flag} is a --schedule option; add --schedule linear or --schedule free")
    return StudyConfig(
        schedule=getattr(args, "schedule", None), **schedule_opts,
        name=study, models=models, patch_tasks=patch, supported=supported,
        extra_tasks=list(preset.get("extra_tasks", [])),
        epochs={} if args.steps else dict(preset.get("epochs", {})),      # --steps overrides epochs
        alphas=alphas, alpha_search=search, out=args.out, search_space=space,
        data_root=args.data_root, resources=resources, evaluators=getattr(args, "evaluators", None),
        asha=getattr(args, "asha", False), rule="max-drop" if args.max_drop is not None else "mean",
        max_drop=args.max_drop, address=getattr(args, "address", None),
        tracking_uri=getattr(args, "tracking_uri", None), register=getattr(args, "register", False),
        mlflow=args.mlflow_default and not getattr(args, "no_mlflow", False), progress=not args.quiet,
        device=getattr(args, "device", None),
        eval_memory=None if args.eval_memory is None else parse_bytes(args.eval_memory),
        **({} if keep is None else {"keep_evaluators": parse_duration(keep, "--keep-evaluators")}),
        seeds=args.seeds if args.seeds is not None else list(preset.get("seeds", [0])))


def parse_duration(text: str, flag: str) -> float:
    """'30m', '2h', '90s' or seconds -> seconds; a one-line error otherwise."""
    import re
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise PaintRayError(f"{flag} {text!r} is not a duration; give e.g. 90s, 30m or 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
