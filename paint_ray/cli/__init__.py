"""`paint-ray` — the command line. All flags live here; errors are one line, never a traceback."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..errors import PaintRayError

EXIT_USAGE = 2


def guarded(run, *args) -> int:
    """The one error handler of every command line: a PaintRayError is one line and exit 2, Ctrl-C says
    that finished work is kept; nothing else is caught (a bug should show its traceback)."""
    try:
        return run(*args)
    except PaintRayError as e:
        print(f"paint-ray: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("paint-ray: interrupted; every result already written stays in the output directory and a "
              "rerun resumes", file=sys.stderr)
        return 130


class _Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes are one line like every other paint-ray error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"paint-ray: error: {message} (see '{self.prog} --help')\n")


def _tasks(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    from ..finetune import FinetuneConfig
    d = FinetuneConfig()
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--steps", type=int, default=d.steps)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--seed", type=int, default=d.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="paint-ray", description="Patch open-vocabulary models by "
                                     "interpolating zero-shot and fine-tuned weights (PAINT).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("patch", help="fine-tune on a patch task, sweep alpha, pick it on validation")
    p.add_argument("--model", default="toy-m", help="toy-s|toy-m|toy-l, ARCH:TAG, ARCH:/path/ckpt, hf-hub:…, local-dir:…")
    p.add_argument("--patch", default="digits", help="the task to patch")
    p.add_argument("--supported", default="shapes,colors", help="comma-separated tasks to keep")
    p.add_argument("--alphas", default="0:1:0.1", help="start:stop:step (stop included) or a comma list")
    p.add_argument("--max-drop", type=float, default=None,
                   help="pick the best patch accuracy whose mean supported drop is at most D points")
    p.add_argument("--out", default="paint_ray_out", help="output directory (results Parquet lands here)")
    p.add_argument("--data-root", default=None, help="root of on-disk datasets (paper tasks)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when a GPU is visible)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    _add_finetune_args(p)
    p.set_defaults(func=_cmd_patch)

    p = sub.add_parser("load", help="fetch a patched model logged to MLflow (open_clip folder + heads)")
    p.add_argument("run_id", help="the MLflow run of the patched model")
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    p.add_argument("--out", default=None, help="folder to keep the model in (default: read it, keep nothing on disk)")
    p.add_argument("--evaluate", default=None, metavar="TASK", help="also report its test accuracy on TASK")
    p.add_argument("--data-root", default=None)
    p.set_defaults(func=_cmd_load)

    from ..commands import data as data_commands
    data_commands.register(sub)
    return parser


def _cmd_patch(args: argparse.Namespace) -> int:
    from ..backends.local import LocalBackend
    from ..config import StudyConfig, parse_alphas
    from ..pipeline import run_study
    from ..report import format_frontier, patch_summary
    recipe = {"lr": [args.lr], "steps": [args.steps], "batch_size": [args.batch_size],
              "weight_decay": [args.weight_decay], "warmup_steps": [args.warmup_steps],
              "label_smoothing": [args.label_smoothing]}
    cfg = StudyConfig(name="patch", models=[args.model], patch_tasks=[args.patch], supported=_tasks(args.supported),
                      alphas=parse_alphas(args.alphas), out=args.out, search_space=recipe,
                      rule="max-drop" if args.max_drop is not None else "mean", max_drop=args.max_drop,
                      data_root=args.data_root, mlflow=False, progress=not args.json, device=args.device,
                      seeds=[args.seed])
    if not cfg.supported:
        raise PaintRayError(f"--supported {args.supported!r} names no task; give e.g. shapes,colors")
    cfg.validate()
    result = run_study(cfg, LocalBackend(args.device, args.data_root))
    print(json.dumps(patch_summary(result)) if args.json else format_frontier(result))
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    from ..tracking import load_patched
    bundle = load_patched(args.run_id, args.tracking_uri, args.out)
    folder = getattr(bundle, "folder", None)
    print(f"patched model of run {bundle.run_id} at alpha={bundle.alpha:g}; heads: {', '.join(bundle.heads)}")
    if folder:
        print(f"open_clip folder: {folder}  (open_clip.create_model('local-dir:{folder}'))")
    if args.evaluate:
        from ..data import image_size_of, prepare_task
        from ..errors import unknown
        from ..tasks import get_task
        if args.evaluate not in bundle.heads:
            raise unknown("task for this patched model", args.evaluate, bundle.heads)
        task = get_task(args.evaluate, args.data_root)
        data = prepare_task(task, "test", image_size_of(bundle.model.visual))
        predicted = bundle.predict(args.evaluate, data.images, task.answer_groups, data.labels)
        acc = float((predicted == data.labels).float().mean())
        print(f"{args.evaluate} test accuracy: {acc:.4f} (n={len(data)})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
