"""`paint-ray` — the command line. All flags live here; errors are one line, never a traceback.

May import: anything (the command line is the top)
"""
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


# `paint-ray patch` is the one-task case of a study: these are its defaults (the study flags override them)
PATCH_PRESETS = {"embedded": dict(models=["toy-m"], patch_tasks=["digits"], supported=["shapes", "colors"],
                                  search_space={}, seeds=[0])}


def build_parser() -> argparse.ArgumentParser:
    from .flags import add_study_flags
    parser = _Parser(prog="paint-ray", description="Patch open-vocabulary models by "
                                     "interpolating zero-shot and fine-tuned weights (PAINT).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("patch", help="fine-tune on a patch task, sweep alpha, pick it on validation")
    add_study_flags(p, PATCH_PRESETS, out="paint_ray_out", single=True)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=_cmd_patch)

    p = sub.add_parser("load", help="fetch a patched model logged to MLflow (open_clip folder + heads)")
    p.add_argument("run_id", help="the MLflow run of the patched model")
    p.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    p.add_argument("--out", default=None, help="folder to keep the model in (default: read it, keep nothing on disk)")
    p.add_argument("--evaluate", default=None, metavar="TASK", help="also report its test accuracy on TASK")
    p.add_argument("--data-root", default=None)
    p.set_defaults(func=_cmd_load)

    from . import data as data_commands
    data_commands.register(sub)
    return parser


def _cmd_patch(args: argparse.Namespace) -> int:
    from ..backends.local import LocalBackend
    from ..pipeline import run_study
    from ..reporting.text import format_frontier, patch_summary
    from .flags import config_from_args
    cfg = config_from_args("patch", PATCH_PRESETS, args, single=True)
    cfg.progress = cfg.progress and not args.json
    cfg.validate()                      # once, here, before anything loads
    result = run_study(cfg, LocalBackend(args.device, cfg.data_root, cfg.eval_memory))
    print(json.dumps(patch_summary(result)) if args.json else format_frontier(result))
    if result.patched[0].schedule is not None and not args.json:
        from ..reporting.text import format_schedules
        print("\n" + format_schedules(result.table()))
    return 0


def _cmd_load(args: argparse.Namespace) -> int:
    from ..reporting.tracking import load_patched
    bundle = load_patched(args.run_id, args.tracking_uri, args.out)
    folder = getattr(bundle, "folder", None)
    at = f"alpha={bundle.alpha:g}" if bundle.schedule is None else \
        "the per-block schedule " + ",".join(f"{c:g}" for c in bundle.schedule)
    print(f"patched model of run {bundle.run_id} at {at}; heads: {', '.join(bundle.heads)}")
    if folder:
        print(f"open_clip folder: {folder}  (open_clip.create_model('local-dir:{folder}'))")
    if args.evaluate:
        from ..data import image_size_of
        from ..caches.eval import prepare_task
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
