"""Comparison of active-learning runs (e.g. DIRECT-seeded vs from scratch): ``alkit compare RUN_A RUN_B ...``.

The analogue of the reference paper's Figure 8: the fraction of stable MD scenarios vs AL iteration, one panel per
temperature and one line per run; cumulative labels vs iteration; and a summary table (labels and iterations
needed to reach all-stable, failed labels, wall time). Writes ``compare.html`` (self-contained), one PNG per
figure and ``compare.md`` (the table, ready to paste into a README). Reads the runs only.
"""
from __future__ import annotations

import datetime as _dt
import html
import logging
import os
from pathlib import Path

from alkit.errors import InputError
from alkit.report import (
    Chart,
    Panel,
    RunData,
    Series,
    _atomic_write,
    chart_to_png,
    format_seconds,
    html_table,
    load_run,
    palette,
    render_page,
    stable_fractions,
    summarize_run,
    temperature_label,
)

log = logging.getLogger(__name__)

TABLE_HEADER = ["run", "mode", "all-stable at iteration", "labels to all-stable", "iterations run",
                "labels (total)", "failed labels", "wall time", "status"]


def _unique_names(runs: list[RunData]) -> list[str]:
    names = [r.name for r in runs]
    out = []
    for r, n in zip(runs, names):
        out.append(f"{r.path.resolve().parent.name}/{n}" if names.count(n) > 1 else n)
    if len(set(out)) < len(out):  # still ambiguous: number them
        out = [f"{i + 1}:{n}" for i, n in enumerate(out)]
    return out


def _status(s: dict) -> str:
    if not s["finished"]:
        return "running"
    return "converged" if s["converged"] else "not converged"


def table_rows(summaries: list[dict]) -> list[list[str]]:
    """The comparison table's rows (strings), one per run, in :data:`TABLE_HEADER` order."""
    rows = []
    for s in summaries:
        reached = s["all_stable_iteration"] is not None
        rows.append([
            s["run"],
            s["mode"] or "-",
            str(s["all_stable_iteration"]) if reached else "not reached",
            (str(s["labels_to_all_stable"]) if s["labels_to_all_stable"] is not None else "-") if reached
            else "not reached",
            str(s["iterations"]),
            "-" if s["labels"] is None else str(s["labels"]),
            "-" if s["failed"] is None else str(s["failed"]),
            format_seconds(s["wall_seconds"]),
            _status(s),
        ])
    return rows


def markdown_table(summaries: list[dict]) -> str:
    """The comparison table as GitHub-flavoured markdown."""
    def esc(v: str) -> str:
        return v.replace("|", "\\|")

    lines = ["| " + " | ".join(TABLE_HEADER) + " |",
             "|" + "|".join("---" if i < 2 or i == len(TABLE_HEADER) - 1 else "---:" for i in range(len(TABLE_HEADER)))
             + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in table_rows(summaries)]
    return "\n".join(lines) + "\n"


def _ratio_notes(summaries: list[dict]) -> list[str]:
    """"B needed x of A's labels" for every run against the first one, when both reached all-stable."""
    ref = summaries[0]
    notes = []
    if ref["labels_to_all_stable"] is None:
        return notes
    for s in summaries[1:]:
        if s["labels_to_all_stable"] is None:
            continue
        notes.append(
            f"{s['run']} reached all-stable with {s['labels_to_all_stable'] / ref['labels_to_all_stable']:.2f}x the "
            f"labels and {s['iterations_to_all_stable'] / ref['iterations_to_all_stable']:.2f}x the iterations "
            f"of {ref['run']}."
        )
    return notes


def chart_compare_stability(runs: list[RunData], names: list[str]) -> Chart | None:
    per_run = [stable_fractions(r) for r in runs]
    temps = sorted({t for fr in per_run for t in fr})
    if not temps:
        return None
    colors = palette(len(runs))
    panels = []
    for k, t in enumerate(temps):
        series = []
        for i, (name, fr) in enumerate(zip(names, per_run)):
            pts = fr.get(t)
            if pts:
                series.append(Series(name, "line", [a for a, _ in pts], [b for _, b in pts], color=colors[i],
                                     legendgroup=name, showlegend=k == 0))
        panels.append(Panel(temperature_label(t), "AL iteration", "fraction of scenarios stable",
                            series, yrange=(-0.03, 1.03), integer_x=True))
    return Chart("compare_stability", "Stable MD scenarios vs AL iteration, per temperature", panels,
                 "One panel per temperature, one line per run (the reference paper's Figure 8 analogue).",
                 height=440)


def chart_compare_labels(runs: list[RunData], names: list[str]) -> Chart | None:
    colors = palette(len(runs))
    series = []
    for i, (r, name) in enumerate(zip(runs, names)):
        pts = {}
        for it, d in r.done.items():
            if d.get("labels_cumulative") is not None:
                pts[it] = d["labels_cumulative"]
        for it, d in r.labels.items():
            if d.get("cumulative") is not None:
                pts.setdefault(it, d["cumulative"])
        if pts:
            its = sorted(pts)
            series.append(Series(name, "line", its, [pts[i_] for i_ in its], color=colors[i]))
    if not series:
        return None
    panel = Panel("", "AL iteration", "cumulative labels (DFT calls)", series, integer_x=True)
    return Chart("compare_labels", "Cumulative labels vs AL iteration", [panel],
                 "Labels the potential of each iteration was trained on.")


def compare_runs(run_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> Path:
    """Compare runs: write ``compare.html``, ``compare.md`` and PNGs into ``out_dir``; return the HTML path."""
    if not run_dirs:
        raise InputError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    names = _unique_names(runs)
    for r, n in zip(runs, names):
        r.name = n
    labels = [f"{n} ({r.mode})" if r.mode else n for r, n in zip(runs, names)]
    summaries = [summarize_run(r) for r in runs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    charts = [c for c in (chart_compare_stability(runs, labels), chart_compare_labels(runs, labels)) if c]
    for c in charts:
        chart_to_png(c, out / f"{c.key}.png")

    md = ["# alkit run comparison", "", markdown_table(summaries)]
    notes = _ratio_notes(summaries)
    if notes:
        md += [" ".join(notes), ""]
    md += ["\"all-stable at iteration\": the first AL iteration whose MTP ran every MD scenario to full length "
           "below the γ threshold; \"labels to all-stable\": the labels that potential was trained on.", ""]
    md += [f"![{html.escape(c.title)}]({c.key}.png)" for c in charts]
    _atomic_write(out / "compare.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n", encoding="utf-8"))

    body = ["<h2>Summary</h2>",
            html_table(TABLE_HEADER, table_rows(summaries), numeric={2, 3, 4, 5, 6})]
    if notes:
        body.append(f"<p>{html.escape(' '.join(notes))}</p>")
    not_started = [s["run"] for s in summaries if s["last_iteration"] is None]
    if not_started:
        body.append(f'<div class="missing">No iteration yet in: {html.escape(", ".join(not_started))}</div>')
    meta = (f"{len(runs)} runs: " + ", ".join(str(r.path.resolve()) for r in runs)
            + f" · built {_dt.datetime.now().isoformat(timespec='seconds')}")
    page = render_page("alkit run comparison", meta, body, [(c, f"{c.key}.png") for c in charts])
    index = out / "compare.html"
    _atomic_write(index, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    log.info("comparison of %d runs: %s", len(runs), index)
    return index
