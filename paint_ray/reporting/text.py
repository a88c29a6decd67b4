"""Human-readable reports of a single patch (`paint-ray patch`) for the terminal, and its JSON summary."""
from __future__ import annotations


def patch_summary(result) -> dict:
    """Chosen α, the rule, and zero-shot / fine-tuned / patched test accuracy per task."""
    pm, cfg = result.patched[0], result.config
    by_alpha = pm.frontier.set_index("alpha")
    tasks = {}
    for name in [pm.patch, *cfg.supported]:
        col = f"{name}_test"
        tasks[name] = {"role": "patch" if name == pm.patch else "supported",
                       "zero_shot": float(by_alpha.loc[0.0, col]), "fine_tuned": float(by_alpha.loc[1.0, col]),
                       "patched": float(by_alpha.loc[pm.selection.alpha, col])}
    out = {"alpha": pm.selection.alpha, "rule": pm.selection.describe(), "tasks": tasks}
    if pm.schedule is not None:       # per-block schedules: what each target chose, with test figures
        metrics = pm.schedule.metrics(pm.zero_shot_point())
        out["schedule"] = {"family": pm.schedule.kind, "searcher": pm.schedule.searcher,
                           "choices": {k: c.blocks if c.eligible else None for k, c in pm.schedule.choices.items()},
                           **{k: float(v) for k, v in metrics.items() if k.startswith(("schedule_gain", "schedule_drop"))},
                           "cells": int(metrics["schedule_cells"])}
    return out


def alpha_text(alpha: float) -> str:
    """α for a table column: two decimals for grid values, up to four for a searched α (0.675 is not 0.68)."""
    return f"{alpha:.2f}" if round(alpha, 2) == alpha else f"{alpha:.4f}".rstrip("0")


def format_frontier(result) -> str:
    pm, cfg = result.patched[0], result.config
    table, sel = pm.frontier, pm.selection
    tasks = [pm.patch, *cfg.supported]
    header = ["alpha"] + [f"{t} {s}" for t in tasks for s in ("val", "test")] + ["supp val"]
    widths = [max(7, len(h)) for h in header]
    lines = [f"PAINT {pm.model}: patch {pm.patch}, supported {', '.join(cfg.supported)}",
             "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    zero = table[table.alpha == 0.0].iloc[0]
    for _, row in table.iterrows():
        cells = [alpha_text(row.alpha)] + [f"{100 * row[f'{t}_{s}']:.1f}" for t in tasks for s in ("val", "test")]
        cells.append(f"{100 * row.supported_val:.1f}")
        line = "  ".join(c.rjust(w) for c, w in zip(cells, widths))
        if row.alpha == sel.alpha:
            gain = 100 * (row[f"{pm.patch}_test"] - zero[f"{pm.patch}_test"])
            drop = 100 * (zero.supported_test - row.supported_test)
            line += f"  <- chosen: {gain:+.1f} points on {pm.patch}, supported drop {drop:.1f} (test)"
        lines.append(line)
    t = result.timings
    lines.append(f"rule: {sel.describe()}; rows in {cfg.out}/results; {t['total_s']:.0f} s "
                 f"(fine-tune {t.get('tune_s', 0):.0f} s, sweep {t.get('sweep_s', 0):.0f} s)")
    return "\n".join(lines)


def format_schedules(table) -> str:
    """Per-block schedules against the global α, one line per model, patch task and seed: test gain (and
    drop) in points at each drop budget, chosen on validation, and the search's cost in cells."""
    from ..results.robust import BUDGETS

    def cell(r, kind: str, b: float) -> str:
        g, d = r[f"{kind}gain_at_{b:g}"], r[f"{kind}drop_at_{b:g}"]
        return "none" if g != g else f"{100 * g:+.1f} ({100 * d:.1f})"

    head = ["model", "patch", "seed"]
    for b in BUDGETS:
        head += [f"≤{b:g}: global", f"≤{b:g}: schedule", f"≤{b:g}: Δ"]
    head += ["cells", f"schedule at ≤{BUDGETS[0]:g}"]
    rows = []
    for _, r in table.iterrows():
        line = [str(r["model"]), str(r["patch"]), str(r["seed"])]
        for b in BUDGETS:
            delta = r[f"schedule_gain_at_{b:g}"] - r[f"gain_at_{b:g}"]
            line += [cell(r, "", b), cell(r, "schedule_", b), "" if delta != delta else f"{100 * delta:+.1f}"]
        line += [str(int(r["schedule_cells"])), str(r.get(f"schedule_at_{BUDGETS[0]:g}", ""))]
        rows.append(line)
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(head)]
    kind = table["schedule_kind"].iloc[0]
    searcher = table["schedule_searcher"].iloc[0]
    out = [f"per-block schedules ({kind}, searched by {searcher}) against the global α: test gain (drop) in "
           f"points at each drop budget, both chosen on validation; cells: the schedule search's own",
           "  ".join(h.rjust(w) for h, w in zip(head, widths))]
    out += ["  ".join(v.rjust(w) for v, w in zip(x, widths)) for x in rows]
    return "\n".join(out)
