"""Human-readable frontier tables for the terminal."""
from __future__ import annotations

from .patch import PatchReport


def format_frontier(report: PatchReport) -> str:
    req, table, sel = report.request, report.frontier, report.selection
    tasks = [req.patch, *req.supported]
    header = ["alpha"] + [f"{t} {s}" for t in tasks for s in ("val", "test")] + ["supp val"]
    widths = [max(7, len(h)) for h in header]
    lines = [f"PAINT {req.model}: patch {req.patch}, supported {', '.join(req.supported)}",
             "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    zero = table[table.alpha == 0.0].iloc[0]
    for _, row in table.iterrows():
        cells = [f"{row.alpha:.2f}"] + [f"{100 * row[f'{t}_{s}']:.1f}" for t in tasks for s in ("val", "test")]
        cells.append(f"{100 * row.supported_val:.1f}")
        line = "  ".join(c.rjust(w) for c, w in zip(cells, widths))
        if row.alpha == sel.alpha:
            gain = 100 * (row[f"{req.patch}_test"] - zero[f"{req.patch}_test"])
            drop = 100 * (zero.supported_test - row.supported_test)
            line += f"  <- chosen: {gain:+.1f} points on {req.patch}, supported drop {drop:.1f} (test)"
        lines.append(line)
    lines.append(f"rule: {sel.describe()}; rows in {req.out}/results; "
                 f"{report.timings['total_s']:.0f} s (fine-tune {report.timings['finetune_s']:.0f} s, "
                 f"sweep {report.timings['sweep_s']:.0f} s)")
    return "\n".join(lines)
