"""The shared command line of experiments/*.py: presets, overrides, one-line errors, table + artifacts."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import unknown


def float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _seed_list(text: str) -> list[int]:
    try:
        return _ints(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integer seeds, e.g. 0,1") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser(study: str, presets: dict, doc: str | None) -> argparse.ArgumentParser:
    from . import _Parser
    p = _Parser(prog=f"experiments/{study}.py", description=(doc or "").strip().splitlines()[0] if doc else None)
    p.add_argument("--preset", default="embedded", help=f"one of: {', '.join(presets)}")
    p.add_argument("--out", default=f"{study}_out", help="output directory (Parquet, plots, Tune, MLflow)")
    p.add_argument("--models", type=_names, help="override the preset's model specs (comma-separated)")
    p.add_argument("--patch", type=_names, help="override the preset's patch tasks")
    p.add_argument("--supported", type=_names, help="override the preset's supported tasks")
    p.add_argument("--alphas", default=None, help="alpha grid: start:stop:step or a comma list (default: the "
                                                  "preset's, else 0:1:0.1)")
    p.add_argument("--lr", type=float_list, help="learning rates to grid over (comma-separated)")
    p.add_argument("--steps", type=_ints, help="fine-tuning steps to grid over")
    p.add_argument("--weight-decay", type=float_list, help="weight decays to grid over")
    p.add_argument("--warmup-steps", type=_ints, help="warm-up steps to grid over")
    p.add_argument("--batch-size", type=_ints, help="batch sizes to grid over")
    p.add_argument("--label-smoothing", type=float_list, help="label smoothings to grid over")
    p.add_argument("--augment", type=_names, help="augmentations to grid over: shift (a random shift of the prepared "
                                                  "image), rrc (the reference's RandomResizedCrop)")
    p.add_argument("--order", type=_names, help="batch orders to grid over: replacement, epochs (a shuffle per epoch)")
    p.add_argument("--finetune-precision", default=None, help="fine-tuning precision: fp32 (the reference's, the "
                                                               "default) or bf16 (autocast)")
    p.add_argument("--seeds", type=_seed_list, help="fine-tuning seeds (comma-separated); each (model, patch task) is "
                                                    "patched once per seed and summarised by mean and range")
    p.add_argument("--asha", action="store_true", help="early-stop weak trials with ASHA on patch val accuracy")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="default: 1 where the cluster has GPUs, else 0; fractions allowed")
    p.add_argument("--evaluators", type=int, default=None, help="evaluator actors (default: one per GPU or CPU)")
    p.add_argument("--max-drop", type=float, default=None, help="select α by max supported drop D points")
    p.add_argument("--data-root", default=None, help="root of the on-disk datasets (paper preset)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, a local node, "
                                                    "or a new local cluster)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                                                          "else sqlite in --out)")
    p.add_argument("--register", action="store_true", help="register each patched model in the MLflow registry")
    p.add_argument("--no-mlflow", action="store_true", help="skip MLflow logging (Parquet only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--local", action="store_true",
                   help="run in this process (the pipeline's local backend) instead of on Ray")
    p.add_argument("--eval-memory", default=None,
                   help="eval data each evaluator keeps resident, e.g. 12GiB (default: half the free GPU "
                        "memory, a quarter of the free RAM on CPUs); the rest streams from the node's cache")
    p.add_argument("--plan", action="store_true",
                   help="print where eval data and weights would go and what each machine needs, then exit")
    p.add_argument("--plan-for", default=None, metavar="CLUSTER_YAML",
                   help="with --plan: plan for the node types of a Ray cluster file instead of this machine")
    return p


def config_from_args(study: str, presets: dict, args: argparse.Namespace):
    from ..config import StudyConfig, TrialResources, parse_alphas
    from ..memory import parse_bytes
    if args.preset not in presets:
        raise unknown("preset", args.preset, presets)
    preset = presets[args.preset]
    space = dict(preset["search_space"])
    for key, attr in [("lr", "lr"), ("steps", "steps"), ("weight_decay", "weight_decay"),
                      ("label_smoothing", "label_smoothing"), ("warmup_steps", "warmup_steps"),
                      ("batch_size", "batch_size"), ("augment", "augment"), ("order", "order")]:
        if getattr(args, attr):
            space[key] = getattr(args, attr)
    if args.finetune_precision is not None:
        space["precision"] = [args.finetune_precision]
    resources = None
    if args.gpus_per_trial is not None or args.cpus_per_trial != 1.0:
        resources = TrialResources(cpus=args.cpus_per_trial, gpus=args.gpus_per_trial or 0.0)
    return StudyConfig(name=study, models=args.models or preset["models"],
                       extra_tasks=list(preset.get("extra_tasks", [])),
                       epochs={} if args.steps else dict(preset.get("epochs", {})),   # --steps overrides epochs
                       patch_tasks=args.patch or preset["patch_tasks"],
                       supported=args.supported if args.supported is not None else preset["supported"],
                       alphas=parse_alphas(args.alphas or preset.get("alphas", "0:1:0.1")), out=args.out,
                       search_space=space,
                       data_root=args.data_root, resources=resources, evaluators=args.evaluators,
                       asha=args.asha, rule="max-drop" if args.max_drop is not None else "mean",
                       max_drop=args.max_drop, address=args.address, tracking_uri=args.tracking_uri,
                       register=args.register, mlflow=not args.no_mlflow, progress=not args.quiet,
                       eval_memory=None if args.eval_memory is None else parse_bytes(args.eval_memory),
                       seeds=args.seeds if args.seeds is not None else list(preset.get("seeds", [0])))


def backend_for(cfg, args):
    """The pipeline's backend the command line asked for (Ray unless --local)."""
    if args.local:
        from ..backends.local import LocalBackend
        return LocalBackend(None, cfg.data_root, cfg.eval_memory)
    from ..pipeline import default_backend
    return default_backend(cfg)


def format_table(table) -> str:
    cols = [("model", "model", "{}"), ("patch", "patch", "{}")]
    if "seed" in table and table["seed"].nunique() > 1:
        cols.append(("seed", "seed", "{}"))
    cols += [("alpha", "α", "{:.2f}"),
            ("patch_zero_shot", "patch zs", "{:.1%}"), ("patch_fine_tuned", "patch ft", "{:.1%}"),
            ("patch_patched", "patch α", "{:.1%}"), ("supported_zero_shot", "supp zs", "{:.1%}"),
            ("supported_fine_tuned", "supp ft", "{:.1%}"), ("supported_patched", "supp α", "{:.1%}"),
            ("gain", "gain", "{:+.1%}"), ("drop", "drop", "{:+.1%}"), ("cka", "CKA", "{:.3f}"),
            ("weight_distance", "‖θ1−θ0‖/‖θ0‖", "{:.4f}")]
    from ..published_report import display_columns
    table, published_cols = display_columns(table)     # none unless a row has published figures
    cols += published_cols
    rows = [[fmt.format(r[c]) for c, _, fmt in cols] for _, r in table.iterrows()]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, (_, h, _) in enumerate(cols)]
    lines = ["  ".join(h.rjust(w) for (_, h, _), w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main_for(study: str, presets: dict, doc: str | None = None, argv=None, report=None) -> int:
    """Run a study from the command line. `report(result, out_dir) -> (text, [files])` adds what is
    particular to a study (a matrix, a heatmap); its files are saved and logged to MLflow too."""
    args = build_parser(study, presets, doc).parse_args(argv)
    from . import guarded
    return guarded(_run_study, study, presets, args, report)


def _run_study(study: str, presets: dict, args, report) -> int:
    from ..pipeline import run_study
    from ..plots import scaling_plot
    cfg = config_from_args(study, presets, args)
    if args.plan_for and not args.plan:
        from ..errors import PaintRayError
        raise PaintRayError("--plan-for is a --plan option; add --plan")
    cfg.validate(data=not args.plan)      # every option, before Ray starts or anything loads
    if args.plan:
        from ..plan_study import cluster_from_yaml, study_plan, this_machine
        print(study_plan(cfg, cluster_from_yaml(args.plan_for) if args.plan_for else this_machine()))
        return 0
    result = run_study(cfg, backend_for(cfg, args))
    from ..published_report import format_comparisons, with_published
    table = with_published(result.table(), result)     # published figures beside ours (OpenAI CLIPs only)
    out = Path(cfg.out)
    table.to_parquet(out / f"{study}.parquet")
    scaling_plot(result.patched, table, out / f"{study}.png")
    from ..robust import across_seeds, format_summary
    across_seeds(table).to_parquet(out / f"{study}_across_seeds.parquet")
    print(f"\n{study}: test accuracy at the α chosen on validation ({result.selection_rule()})")
    print(format_table(table))
    print("\n" + format_summary(table, cfg.models))
    if format_comparisons(result):
        print("\n" + format_comparisons(result))
    t = result.timings
    print(f"\n{t['total_s']:.0f} s (models {t.get('models_s', 0):.0f} s, fine-tuning {t.get('tune_s', 0):.0f} s, "
          f"sweep {t.get('sweep_s', 0):.0f} s, MLflow {t.get('mlflow_s', 0):.0f} s); rows in {out / 'results'}, "
          f"tables {out / f'{study}.parquet'} (per seed) and {out / f'{study}_across_seeds.parquet'} (across seeds), "
          f"plot {out / f'{study}.png'}")
    if report is not None:
        text, files = report(result, out)
        print("\n" + text)
        if result.run_ids and files:
            from ..tracking import log_summary_run, tracking_uri
            log_summary_run(tracking_uri(cfg.out, cfg.tracking_uri), study, files)
    if result.run_ids:
        from ..tracking import tracking_uri
        uri = tracking_uri(cfg.out, cfg.tracking_uri)
        print(f"MLflow: experiment '{study}' at {uri}"
              + (f"  ->  mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else ""))
    return 0
