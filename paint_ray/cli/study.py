"""The shared command line of experiments/*.py: presets, overrides, one-line errors, table + artifacts."""
from __future__ import annotations

import argparse
from pathlib import Path



def build_parser(study: str, presets: dict, doc: str | None) -> argparse.ArgumentParser:
    from . import _Parser
    from .flags import add_study_flags
    p = _Parser(prog=f"experiments/{study}.py", description=(doc or "").strip().splitlines()[0] if doc else None)
    add_study_flags(p, presets, out=f"{study}_out")
    return p


def config_from_args(study: str, presets: dict, args: argparse.Namespace):
    from .flags import config_from_args as build
    return build(study, presets, args)


def backend_for(cfg, args):
    """The pipeline's backend the command line asked for (Ray unless --local)."""
    if args.local:
        from ..backends.local import LocalBackend
        return LocalBackend(None, cfg.data_root, cfg.eval_memory)
    from ..pipeline import default_backend
    return default_backend(cfg)


def format_table(table) -> str:
    from ..reporting.text import alpha_text
    cols = [("model", "model", "{}"), ("patch", "patch", "{}")]
    if "seed" in table and table["seed"].nunique() > 1:
        cols.append(("seed", "seed", "{}"))
    cols += [("alpha", "α", alpha_text),
            ("patch_zero_shot", "patch zs", "{:.1%}"), ("patch_fine_tuned", "patch ft", "{:.1%}"),
            ("patch_patched", "patch α", "{:.1%}"), ("supported_zero_shot", "supp zs", "{:.1%}"),
            ("supported_fine_tuned", "supp ft", "{:.1%}"), ("supported_patched", "supp α", "{:.1%}"),
            ("gain", "gain", "{:+.1%}"), ("drop", "drop", "{:+.1%}"), ("cka", "CKA", "{:.3f}"),
            ("weight_distance", "‖θ1−θ0‖/‖θ0‖", "{:.4f}")]
    from ..reporting.published_report import display_columns
    table, published_cols = display_columns(table)     # none unless a row has published figures
    cols += published_cols
    rows = [[fmt(r[c]) if callable(fmt) else fmt.format(r[c]) for c, _, fmt in cols] for _, r in table.iterrows()]
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
    from ..reporting.plots import scaling_plot
    cfg = config_from_args(study, presets, args)
    if args.plan_for and not args.plan:
        from ..errors import PaintRayError
        raise PaintRayError("--plan-for is a --plan option; add --plan")
    cfg.validate(data=not args.plan)      # every option, before Ray starts or anything loads
    if args.plan:
        from ..evaluation.plan import cluster_from_yaml, study_plan, this_machine
        print(study_plan(cfg, cluster_from_yaml(args.plan_for) if args.plan_for else this_machine()))
        return 0
    result = run_study(cfg, backend_for(cfg, args))
    from ..reporting.published_report import format_comparisons, with_published
    table = with_published(result.table(), result)     # published figures beside ours (OpenAI CLIPs only)
    out = Path(cfg.out)
    table.to_parquet(out / f"{study}.parquet")
    scaling_plot(result.patched, table, out / f"{study}.png")
    from ..results.robust import across_seeds, format_summary
    across_seeds(table).to_parquet(out / f"{study}_across_seeds.parquet")
    print(f"\n{study}: test accuracy at the α chosen on validation ({result.selection_rule()})")
    print(format_table(table))
    print("\n" + format_summary(table, cfg.models))
    if "schedule_cells" in table:
        from ..reporting.text import format_schedules
        print("\n" + format_schedules(table))
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
            from ..reporting.tracking import log_summary_run, tracking_uri
            log_summary_run(tracking_uri(cfg.out, cfg.tracking_uri), study, files)
    if result.run_ids:
        from ..reporting.tracking import experiment_id, run_url, tracking_uri
        uri = tracking_uri(cfg.out, cfg.tracking_uri)
        page = run_url(uri, experiment_id(uri, study, None))
        print(f"MLflow: experiment '{study}' at {uri}"
              + (f"  ->  mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else "")
              + (f"  ->  {page}" if page else ""))
    return 0
