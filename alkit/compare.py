"""Comparison of active-learning runs (e.g. DIRECT-seeded vs from scratch): ``alkit compare RUN_A RUN_B ...``.

The analogue of the reference paper's Figure 8: the fraction of stable MD scenarios vs AL iteration, one panel per
temperature and one line per run; cumulative labels vs iteration; and a summary table (labels and iterations
needed to reach all-stable, failed labels, wall time). Writes ``compare.html`` (self-contained), one PNG per
figure and ``compare.md`` (the table, ready to paste into a README). Reads the runs only.

Repeated campaigns (several runs of one mode, e.g. three seeds each of DIRECT and from scratch): runs are grouped by
mode, and the page and ``compare.md`` add a per-mode table -- number of runs, how many reached all-stable, median
and range (min-max) of the labels and of the AL iterations to all-stable, over the converged runs only (a run that
never converged is counted and named, never averaged away), the medians over all runs with a non-converged run
at its lower bound (:func:`censored_median`), and the stable fraction per temperature against iteration as bands
(median line, min-max band per mode). ``compare.json`` holds every number.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import os
from pathlib import Path

import numpy as np

from alkit._util import json_default
from alkit._util import atomic_write
from alkit.errors import InputError
from alkit.report import (
    Chart,
    Panel,
    RunData,
    Series,
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
                "labels (total)", "failed labels", "AL wall time", "wall time", "status"]


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
            format_seconds(s["al_wall_seconds"]),
            format_seconds(s["wall_seconds"]),
            _status(s),
        ])
    return rows


def _markdown(header: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    """A GitHub-flavoured markdown table (``numeric`` columns right-aligned)."""
    def esc(v: str) -> str:
        return v.replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markdown_table(summaries: list[dict]) -> str:
    """The comparison table as GitHub-flavoured markdown."""
    return _markdown(TABLE_HEADER, table_rows(summaries), numeric=set(range(2, len(TABLE_HEADER) - 1)))


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


MODE_HEADER = ["mode", "runs", "converged", "labels to all-stable: median", "labels: range",
               "AL iterations to all-stable: median", "AL iterations: range", "labels: median, all runs",
               "AL iterations: median, all runs", "AL wall time: median (range)", "not converged"]
MODE_NUMERIC = {1, 3, 4, 5, 6, 7, 8, 9}
MODE_CAPTION = ("Medians and ranges over the converged runs only; runs that never reached all-stable are counted "
                "and named, not averaged. \"All runs\": the median over every run, a non-converged run counted at "
                "the labels and iterations it had used, so \"≥\" marks a lower bound. AL iterations: the "
                "all-stable iteration (iteration 0 is the seed potential).")


def _spread(values: list[int]) -> dict | None:
    """Median, min, max of the values (None for none)."""
    if not values:
        return None
    return {"median": float(np.median(values)), "min": min(values), "max": max(values), "values": list(values)}


def censored_median(values: list[tuple[float, bool]]) -> dict | None:
    """Median of values some of which are only lower bounds (``(value, is_bound)``): a run that never reached
    all-stable needed at least the labels and iterations it had used. Taking each bound as its value gives a lower
    bound on the true median, since the median only grows when any value grows. ``exact`` says the bounds cannot
    move it: the middle value(s) are exact and no bound lies below them. Why not the converged runs' median alone:
    dropping the runs that never converged biases the median towards the easy runs."""
    if not values:
        return None
    order = sorted(values, key=lambda v: v[0])
    n = len(order)
    middle = order[(n - 1) // 2: n // 2 + 1]
    med = float(np.mean([v for v, _ in middle]))
    top = max(v for v, _ in middle)
    exact = not any(b for _, b in middle) and all(v >= top for v, b in order if b)
    return {"median": med, "exact": exact, "n_bounds": sum(b for _, b in order)}


def mode_stats(summaries: list[dict]) -> list[dict]:
    """Per mode (in order of first appearance): ``mode``, ``runs``, ``converged`` (runs that reached all-stable),
    ``not_converged`` and ``running`` (run names), and the spread (:func:`_spread`) of ``labels_to_all_stable``
    and ``iterations_to_all_stable`` over the converged runs only. "AL iterations to all-stable" is the
    all-stable iteration's index: iteration 0 is the seed potential, so a run stable at iteration k needed k AL
    iterations."""
    modes = list(dict.fromkeys(s["mode"] or "unknown" for s in summaries))
    out = []
    for mode in modes:
        group = [s for s in summaries if (s["mode"] or "unknown") == mode]
        conv = [s for s in group if s["all_stable_iteration"] is not None]
        out.append({
            "mode": mode, "runs": len(group), "converged": len(conv),
            "not_converged": [s["run"] for s in group if s["all_stable_iteration"] is None and s["finished"]],
            "running": [s["run"] for s in group if s["all_stable_iteration"] is None and not s["finished"]],
            "labels_to_all_stable": _spread([s["labels_to_all_stable"] for s in conv
                                             if s["labels_to_all_stable"] is not None]),
            "iterations_to_all_stable": _spread([s["all_stable_iteration"] for s in conv]),
            "al_wall_seconds": _spread([s["al_wall_seconds"] for s in conv]),
            # every run, a non-converged one at its lower bound (labels so far; it needs at least one more
            # iteration than it ran)
            "labels_all_runs": censored_median(
                [(s["labels_to_all_stable"], False) for s in conv if s["labels_to_all_stable"] is not None]
                + [(s["labels"], True) for s in group if s["all_stable_iteration"] is None and s["labels"]]),
            "iterations_all_runs": censored_median(
                [(s["all_stable_iteration"], False) for s in conv]
                + [(s["iterations"], True) for s in group if s["all_stable_iteration"] is None]),
        })
    return out


def _bound(c: dict | None) -> str:
    return "-" if c is None else (f"{c['median']:g}" if c["exact"] else f"≥ {c['median']:g}")


def _range(sp: dict | None) -> str:
    return "-" if sp is None else (f"{sp['min']:g}" if sp["min"] == sp["max"] else f"{sp['min']:g}–{sp['max']:g}")


def _wall_spread(sp: dict | None) -> str:
    if sp is None:
        return "-"
    lo, hi = format_seconds(sp["min"]), format_seconds(sp["max"])
    return f"{format_seconds(sp['median'])} ({lo}–{hi})" if lo != hi else format_seconds(sp["median"])


def mode_rows(stats: list[dict]) -> list[list[str]]:
    """The per-mode table's rows (strings), in :data:`MODE_HEADER` order."""
    rows = []
    for m in stats:
        lab, its = m["labels_to_all_stable"], m["iterations_to_all_stable"]
        missing = m["not_converged"] + [f"{r} (running)" for r in m["running"]]
        rows.append([m["mode"], str(m["runs"]), f"{m['converged']}/{m['runs']} converged",
                     "not reached" if lab is None else f"{lab['median']:g}", _range(lab),
                     "not reached" if its is None else f"{its['median']:g}", _range(its),
                     _bound(m["labels_all_runs"]), _bound(m["iterations_all_runs"]),
                     _wall_spread(m["al_wall_seconds"]), ", ".join(missing) or "-"])
    return rows


def _mode_notes(stats: list[dict]) -> list[str]:
    """Each mode's medians against the first mode's, where both have converged runs."""
    ref = stats[0]
    notes = []
    for m in stats[1:]:
        a, b = ref["labels_to_all_stable"], m["labels_to_all_stable"]
        ia, ib = ref["iterations_to_all_stable"], m["iterations_to_all_stable"]
        if a is None or b is None or not a["median"]:
            continue
        its = (f" and {ib['median'] / ia['median']:.2f}x the median AL iterations" if ia and ib and ia["median"]
               else "")
        notes.append(f"{m['mode']} reached all-stable with {b['median'] / a['median']:.2f}x the median labels{its} "
                     f"of {ref['mode']} (medians over {m['converged']}/{m['runs']} and {ref['converged']}/"
                     f"{ref['runs']} converged runs).")
    for m in stats[1:]:  # the same against the all-runs medians, which do not drop the hard runs
        parts = []
        for key, what in (("labels_all_runs", "labels"), ("iterations_all_runs", "AL iterations")):
            a, b = ref[key], m[key]
            if a is None or b is None or not a["exact"] or not b["median"]:
                continue  # a ratio of two lower bounds bounds nothing
            r = a["median"] / b["median"]
            le, ge = ("", "") if b["exact"] else ("≤ ", "≥ ")
            parts.append(f"{le}{r:.0%} of {m['mode']}'s median {what} ({ge}{1 - r:.0%} fewer)")
        if parts:
            notes.append(f"Over all runs, a non-converged run counted at its lower bound: {ref['mode']} needed "
                         + " and ".join(parts) + ".")
    return notes


def pool_note(summaries: list[dict]) -> str:
    """One sentence on whether the runs chose from the same configuration pool (``pool_digest``): a comparison
    across different pools compares the pools as much as the modes. Runs that drew on no pool (``pool_used``
    False: AL from scratch) are named as such, not as unknown."""
    used = [s for s in summaries if s.get("pool_used", True)]
    none = [s["run"] for s in summaries if not s.get("pool_used", True)]
    no_pool = f" {', '.join(none)} drew on no pool (AL from scratch)." if none else ""
    known: dict[str, list[str]] = {}
    for s in used:
        if s.get("pool_digest"):
            known.setdefault(s["pool_digest"], []).append(s["run"])
    unknown = [s["run"] for s in used if not s.get("pool_digest")]
    if not known:
        if unknown:
            return "Pool: no run records its pool digest (logs that predate it)." + no_pool
        return "Pool: no run drew on a pool." if none else ""
    tail = f" Pool unknown for {', '.join(unknown)} (a log that predates the digest)." if unknown else ""
    if len(known) == 1:
        (digest, names), = known.items()
        if unknown:
            lead = f"{len(names)} runs share"
        elif none:
            lead = (f"the {len(names)} runs with a pool share" if len(names) > 1
                    else f"{names[0]}, the run with a pool, uses")
        else:
            lead = "all runs share"
        return f"Pool: {lead} pool {digest}.{tail}{no_pool}"
    groups = "; ".join(f"{d}: {', '.join(n)}" for d, n in known.items())
    return f"Pool: the runs chose from {len(known)} different pools ({groups}).{tail}{no_pool}"


def stability_bands(runs: list[RunData], summaries: list[dict]) -> dict[str, dict[float, dict]]:
    """Stable fraction per mode and temperature against iteration, over the mode's runs:
    ``{mode: {T: {"iterations", "median", "min", "max", "n"}}}``. A run that reached all-stable stopped there, and
    its potential stays stable: it counts as 1.0 at later iterations. A run that stopped without converging has no
    value after its last iteration (``n`` says how many runs each point is over)."""
    per_mode: dict[str, list[tuple[dict, bool, int]]] = {}
    for r, s in zip(runs, summaries):
        fr = stable_fractions(r)
        if not fr:
            continue
        last = max(it for pts in fr.values() for it, _ in pts)
        per_mode.setdefault(s["mode"] or "unknown", []).append(
            ({t: dict(pts) for t, pts in fr.items()}, s["all_stable_iteration"] is not None, last))
    out: dict[str, dict[float, dict]] = {}
    for mode, items in per_mode.items():
        temps = sorted({t for fr, _, _ in items for t in fr})
        top = max(last for _, _, last in items)
        out[mode] = {}
        for t in temps:
            rows = {"iterations": [], "median": [], "min": [], "max": [], "n": []}
            for it in range(top + 1):
                vals = []
                for fr, converged, last in items:
                    v = fr.get(t, {}).get(it)
                    if v is None and converged and it > last:
                        v = 1.0
                    if v is not None:
                        vals.append(float(v))
                if vals:
                    rows["iterations"].append(it)
                    rows["median"].append(float(np.median(vals)))
                    rows["min"].append(min(vals))
                    rows["max"].append(max(vals))
                    rows["n"].append(len(vals))
            out[mode][t] = rows
    return out


def chart_compare_bands(bands: dict[str, dict[float, dict]], counts: dict[str, int]) -> Chart | None:
    """The paper's Fig. 8 with spread: one panel per temperature, per mode a median line and a min-max band."""
    temps = sorted({t for per_t in bands.values() for t in per_t})
    if not temps:
        return None
    colors = dict(zip(bands, palette(len(bands))))
    panels = []
    for k, t in enumerate(temps):
        series = []
        for mode, per_t in bands.items():
            b = per_t.get(t)
            if not b or not b["iterations"]:
                continue
            name = f"{mode} ({counts.get(mode, 0)} runs)"
            series.append(Series(f"{name} min–max", "band", b["iterations"], b["min"], y_hi=b["max"],
                                 color=colors[mode], opacity=0.25, legendgroup=f"{mode}-band", showlegend=k == 0))
            series.append(Series(f"{name} median", "line", b["iterations"], b["median"], color=colors[mode],
                                 legendgroup=f"{mode}-median", showlegend=k == 0))
        panels.append(Panel(temperature_label(t), "AL iteration", "fraction of scenarios stable", series,
                            yrange=(-0.03, 1.03), integer_x=True))
    return Chart("compare_bands", "Stable MD scenarios vs AL iteration per mode: median and range", panels,
                 "Line: median over the mode's runs; band: min to max. A run that reached all-stable counts as "
                 "stable at later iterations; a run that stopped without converging has no value after its end.",
                 height=440)


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
    stats = mode_stats(summaries)
    repeated = any(m["runs"] > 1 for m in stats)
    bands = stability_bands(runs, summaries) if repeated else {}
    if repeated:
        band_chart = chart_compare_bands(bands, {m["mode"]: m["runs"] for m in stats})
        if band_chart:
            charts.insert(0, band_chart)
    for c in charts:
        chart_to_png(c, out / f"{c.key}.png")

    rows = mode_rows(stats) if repeated else []
    notes_mode = " ".join(_mode_notes(stats)) if repeated else ""
    md = ["# alkit run comparison", ""]
    if repeated:
        md += ["## Per mode", "", _markdown(MODE_HEADER, rows, numeric=MODE_NUMERIC), MODE_CAPTION, ""]
        md += [notes_mode, ""] if notes_mode else []
        md += ["## Per run", ""]
    md += [markdown_table(summaries)]
    notes = _ratio_notes(summaries) if not repeated else []
    if notes:
        md += [" ".join(notes), ""]
    pool = pool_note(summaries)
    md += [pool, ""] if pool else []
    md += ["\"all-stable at iteration\": the first AL iteration whose MTP ran every MD scenario to full length "
           "below the γ threshold; \"labels to all-stable\": the labels that potential was trained on.", ""]
    md += [f"![{html.escape(c.title)}]({c.key}.png)" for c in charts]
    atomic_write(out / "compare.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n", encoding="utf-8"))

    body = []
    if repeated:
        body += ["<h2>Per mode</h2>", html_table(MODE_HEADER, rows, numeric=MODE_NUMERIC),
                 f'<div class="caption">{html.escape(MODE_CAPTION)}</div>']
        body += [f"<p>{html.escape(notes_mode)}</p>"] if notes_mode else []
    body += ["<h2>Summary</h2>" if not repeated else "<h2>Per run</h2>",
             html_table(TABLE_HEADER, table_rows(summaries), numeric={2, 3, 4, 5, 6, 7, 8})]
    if notes:
        body.append(f"<p>{html.escape(' '.join(notes))}</p>")
    if pool:
        body.append(f"<p>{html.escape(pool)}</p>")
    not_started = [s["run"] for s in summaries if s["last_iteration"] is None]
    if not_started:
        body.append(f'<div class="missing">No iteration yet in: {html.escape(", ".join(not_started))}</div>')
    meta = (f"{len(runs)} runs: " + ", ".join(str(r.path.resolve()) for r in runs)
            + f" · built {_dt.datetime.now().isoformat(timespec='seconds')}")
    page = render_page("alkit run comparison", meta, body, [(c, f"{c.key}.png") for c in charts])
    index = out / "compare.html"
    atomic_write(index, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    data = {"runs": summaries, "modes": stats, "pool": pool,
            "bands": {m: {f"{t:g}": b for t, b in per_t.items()} for m, per_t in bands.items()}}
    atomic_write(out / "compare.json", lambda tmp: Path(tmp).write_text(
        json.dumps(data, indent=1, default=json_default) + "\n", encoding="utf-8"))
    log.info("comparison of %d runs: %s", len(runs), index)
    return index
