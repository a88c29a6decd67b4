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
    return {"alpha": pm.selection.alpha, "rule": pm.selection.describe(), "tasks": tasks}


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
        cells = [f"{row.alpha:.2f}"] + [f"{100 * row[f'{t}_{s}']:.1f}" for t in tasks for s in ("val", "test")]
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
