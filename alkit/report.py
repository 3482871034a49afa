"""Iteration dashboard of one active-learning run: ``alkit report RUN_DIR``.

Reads only ``RUN_DIR/events.jsonl`` (see :mod:`alkit.events`) and, when it exists, ``RUN_DIR/direct/pcs.npz``, and
writes ``index.html`` (self-contained: plotly's JavaScript is embedded once, inline, so the page opens offline) plus
one PNG per figure drawn with matplotlib's Agg backend (no kaleido/Chrome needed). The run directory is never
written to except for the default output folder ``RUN_DIR/report``. It can be rebuilt while a campaign is running:
a torn last log line is skipped, missing files and not-yet-finished iterations are reported as "not yet" instead of
failing.

Every figure is described once as a small backend-neutral :class:`Chart` (panels of line/bar/box/point series) and
drawn twice, by :func:`chart_to_plotly` and :func:`chart_to_png`, so the PNG and the interactive plot show the same
data. :mod:`alkit.compare` reuses the same machinery.
"""
from __future__ import annotations

import html
import logging
import math
import os
import sqlite3
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from alkit._util import atomic_write
from alkit.errors import ConfigError, InputError
from alkit.events import EVENTS_FILE, parse, read_events

log = logging.getLogger(__name__)

PCS_FILE = Path("direct") / "pcs.npz"
DEFAULT_GAMMA_BREAK = 3.0
#: Points of the pool drawn in the interactive PC plot (SVG stays responsive); the PNG draws them all.
MAX_HTML_POOL_POINTS = 5000
#: A box series with more values than this draws only its outliers, not every point.
MAX_BOX_POINTS = 5000
STAGE_ORDER = ("pool", "encode", "direct", "label", "fit", "explore", "select")
#: Stages that run once before the loop (the driver logs them under iteration 0): drawn as their own "setup" bar.
SETUP_STAGES = ("pool", "encode", "direct")
#: The shared inputs of a comparison (one pool, encoded once, may serve every run): not part of either mode's cost.
SHARED_STAGES = ("pool", "encode")


# --------------------------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------------------------
@dataclass
class RunData:
    """Everything the dashboard needs from one run directory (a snapshot; the run may still be going)."""

    path: Path
    name: str
    events: list[dict]
    started: dict | None = None
    finished: dict | None = None
    pool: dict | None = None
    direct: dict | None = None
    labels: dict[int, dict] = field(default_factory=dict)
    fits: dict[int, dict] = field(default_factory=dict)
    explores: dict[int, dict] = field(default_factory=dict)
    done: dict[int, dict] = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)
    pcs: dict[str, np.ndarray] | None = None
    pcs_problem: str | None = None

    @property
    def mode(self) -> str | None:
        return (self.started or {}).get("mode")

    @property
    def config(self) -> dict:
        cfg = (self.started or {}).get("config")
        return cfg if isinstance(cfg, dict) else {}

    @property
    def iterations(self) -> list[int]:
        """Every iteration number any per-iteration event mentions, sorted."""
        its = set(self.labels) | set(self.fits) | set(self.explores) | set(self.done)
        its |= {s["iteration"] for s in self.stages if isinstance(s.get("iteration"), int)}
        return sorted(its)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _check_run_dir(run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir)
    if not path.exists():
        raise InputError(f"run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise InputError(f"{str(path)!r} is not a run directory (it is a file)")
    if not (path / EVENTS_FILE).is_file() and not (path / "config.json").is_file():
        raise InputError(
            f"{str(path)!r} is not an alkit run directory: it has neither {EVENTS_FILE} nor config.json "
            "(start a run with `alkit run`)"
        )
    return path


def _load_pcs(path: Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    f = path / PCS_FILE
    if not f.is_file():
        return None, f"{PCS_FILE} not written yet (DIRECT has not run)"
    try:
        with np.load(f, allow_pickle=False) as npz:
            arrays = {k: np.asarray(npz[k]) for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        return None, f"{PCS_FILE} unreadable ({type(exc).__name__}: {exc}); is it being written?"
    return arrays, None


def store_counts(run_dir: str | os.PathLike) -> dict[str, int] | None:
    """Structures per status in the run's store, read through :class:`RunStore` read-only (None when absent,
    locked or of another schema). Optional extra: every figure comes from the event log alone."""
    from alkit.store import DB_NAME, RunStore

    f = Path(run_dir) / DB_NAME
    if not f.is_file():
        return None
    try:
        with RunStore(f, readonly=True) as st:
            return st.counts_by_status()
    except (ConfigError, sqlite3.Error) as exc:
        log.debug("store counts unavailable for %s: %s", f, exc)
        return None


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run directory (read-only). Raises :class:`InputError` when it is not a run directory."""
    path = _check_run_dir(run_dir)
    events = read_events(path)
    run = RunData(path=path, name=path.resolve().name, events=events)
    per_iter = {"labels": run.labels, "fit": run.fits, "explore": run.explores, "iteration_done": run.done}
    for rec in events:
        if parse(rec) is None:  # not a record of the schema (alkit.events.SCHEMA): skipped, as a torn line is
            continue
        ev = rec.get("event")
        if ev == "run_started":
            run.started = rec  # a resumed run restarts: the last one wins
        elif ev == "run_finished":
            run.finished = rec
        elif ev == "run_reopened":
            run.finished = None  # extended past its old end: the earlier outcome no longer holds
        elif ev == "pool_built":
            run.pool = rec
        elif ev == "direct_fitted":
            run.direct = rec
        elif ev == "stage":
            run.stages.append(rec)
        elif ev in per_iter:
            it = _as_int(rec.get("iteration"))
            if it is not None:
                per_iter[ev][it] = rec  # a repeated iteration after a resume: the last record wins
    run.pcs, run.pcs_problem = _load_pcs(path)
    return run


def _temperature(key: Any) -> float | None:
    try:
        t = float(key)
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) else None


def temperature_label(t: float) -> str:
    return f"{t:g} K"


def stable_fractions(run: RunData) -> dict[float, list[tuple[int, float]]]:
    """Fraction of stable scenarios per temperature: {T: [(iteration, fraction), ...]} sorted by iteration.

    Uses ``iteration_done.stable_by_temperature``; an iteration whose exploration finished but whose
    ``iteration_done`` is not written yet is computed from the ``explore`` records.
    """
    out: dict[float, list[tuple[int, float]]] = {}
    for it in run.iterations:
        fractions: dict[float, float] = {}
        done = run.done.get(it)
        if done and isinstance(done.get("stable_by_temperature"), dict):
            for k, v in done["stable_by_temperature"].items():
                t = _temperature(k)
                if t is not None and v is not None:
                    fractions[t] = float(v)
        elif it in run.explores:
            counts: dict[float, list[int]] = {}
            for sc in run.explores[it].get("scenarios") or []:
                t = _temperature(sc.get("temperature"))
                if t is None:
                    continue
                c = counts.setdefault(t, [0, 0])
                c[0] += bool(sc.get("stable"))
                c[1] += 1
            fractions = {t: s / n for t, (s, n) in counts.items() if n}
        for t, f in fractions.items():
            out.setdefault(t, []).append((it, f))
    return dict(sorted(out.items()))


def _all_stable(run: RunData, it: int) -> bool:
    done = run.done.get(it)
    if done is not None:
        n_stable, n_sc = done.get("n_stable"), done.get("n_scenarios")
        if isinstance(n_stable, int) and isinstance(n_sc, int) and n_sc > 0:
            return n_stable >= n_sc
        fr = done.get("stable_by_temperature")
        if isinstance(fr, dict) and fr:
            return all(v is not None and float(v) >= 1.0 - 1e-9 for v in fr.values())
        return False
    scen = (run.explores.get(it) or {}).get("scenarios") or []
    return bool(scen) and all(bool(s.get("stable")) for s in scen)


def gamma_break(run: RunData) -> float:
    """The campaign's ``gamma_break`` (its configuration, as the driver logged it in ``run_started``)."""
    v = run.config.get("gamma_break")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
        return float(v)
    return DEFAULT_GAMMA_BREAK


def wall_by_stage(run: RunData) -> dict[str, dict[str, float]]:
    """Seconds per stage per iteration: {x label: {stage: seconds}}; stages before the loop go under "setup".

    Built from ``stage`` events; an iteration without any falls back to ``iteration_done.wall``.
    The one-off stages (:data:`SETUP_STAGES`) go under "setup" whatever iteration they were logged with.
    """
    out: dict[str, dict[str, float]] = {}
    seen_iters: set[int] = set()
    for rec in run.stages:
        secs = rec.get("seconds")
        if not isinstance(secs, (int, float)) or isinstance(secs, bool):
            continue
        it = _as_int(rec.get("iteration"))
        stage = str(rec.get("stage") or "other")
        key = "setup" if it is None or stage in SETUP_STAGES else str(it)
        if it is not None:
            seen_iters.add(it)
        out.setdefault(key, {})
        out[key][stage] = out[key].get(stage, 0.0) + float(secs)
    for it, done in run.done.items():
        if it in seen_iters or not isinstance(done.get("wall"), dict):
            continue
        for k, v in done["wall"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                key = "setup" if str(k) in SETUP_STAGES else str(it)
                out.setdefault(key, {})[str(k)] = out.get(key, {}).get(str(k), 0.0) + float(v)
    order = (["setup"] if "setup" in out else []) + [str(i) for i in sorted(_as_int(k) for k in out if k != "setup")]
    return {k: out[k] for k in order}


def _max_of(values: list[Any]) -> int | None:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(nums) if nums else None


def _last(d: dict[int, dict], key: str) -> Any:
    for it in sorted(d, reverse=True):
        v = d[it].get(key)
        if v is not None:
            return v
    return None


def summarize_run(run_dir: str | os.PathLike | RunData) -> dict:
    """Key numbers of a run (works on a running or finished run).

    Keys: run, path, mode, recipe, preset, finished, converged (None while running), reason (why it stopped, if
    the log says), iterations (finished iterations), last_iteration, labels and failed (latest cumulative counts),
    all_stable_iteration (the first iteration whose exploration had every scenario stable, or None), iterations_to_all_stable (how many iterations ran up to and including it),
    labels_to_all_stable (cumulative labels the potential of that iteration was trained on), wall_seconds (sum of
    the stage times), al_wall_seconds (the same without :data:`SHARED_STAGES`, so a run that built the pool and
    one that adopted it compare), elapsed_seconds (first to last event), n_scenarios, temperatures, pool_used
    (the run built or adopted a configuration pool; AL from scratch without a DIRECT sampler has none), pool_digest
    (the pool's content hash, None without a pool or when the log predates it).
    """
    run = run_dir if isinstance(run_dir, RunData) else load_run(run_dir)
    started = run.started or {}
    fin = run.finished
    iters = run.iterations
    explored = [it for it in iters if it in run.done or it in run.explores]
    first_stable = next((it for it in explored if _all_stable(run, it)), None)
    # cumulative counts only grow: the latest is the largest of every record that carries one
    labels = _max_of([d.get("labels_cumulative") for d in run.done.values()]
                     + [d.get("cumulative") for d in run.labels.values()]
                     + [(fin or {}).get("labels_cumulative")])
    failed = _max_of([d.get("failed_cumulative") for d in run.done.values()]
                     + [d.get("failed_cumulative") for d in run.labels.values()])
    labels_at = None
    if first_stable is not None:
        labels_at = (run.done.get(first_stable) or {}).get("labels_cumulative")
        if labels_at is None:
            labels_at = (run.labels.get(first_stable) or {}).get("cumulative")
            if labels_at is None:  # no labels event in that iteration: the set of the latest one before it
                prev = [i for i in run.labels if i <= first_stable]
                labels_at = run.labels[max(prev)].get("cumulative") if prev else None
    wall = wall_by_stage(run)
    times = [r["time"] for r in run.events if isinstance(r.get("time"), (int, float))]
    n_sc = _last(run.done, "n_scenarios")
    if n_sc is None and run.explores:
        n_sc = len(run.explores[max(run.explores)].get("scenarios") or [])
    return {
        "run": run.name,
        "path": str(run.path),
        "mode": run.mode,
        "recipe": started.get("recipe"),
        "preset": started.get("preset"),
        "finished": fin is not None,
        "converged": None if fin is None else bool(fin.get("converged")),
        "reason": None if fin is None else fin.get("reason"),
        "iterations": len(run.done),
        "last_iteration": max(iters) if iters else None,
        "labels": labels,
        "failed": failed,
        "all_stable_iteration": first_stable,
        "iterations_to_all_stable": None if first_stable is None else sum(1 for i in explored if i <= first_stable),
        "labels_to_all_stable": labels_at,
        "wall_seconds": float(sum(sum(v.values()) for v in wall.values())),
        "al_wall_seconds": float(sum(sec for v in wall.values() for st, sec in v.items() if st not in SHARED_STAGES)),
        "elapsed_seconds": float(max(times) - min(times)) if times else 0.0,
        "n_scenarios": n_sc,
        "temperatures": list(stable_fractions(run)),
        "pool_used": run.pool is not None,
        "pool_digest": (run.pool or {}).get("digest"),
    }


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


# --------------------------------------------------------------------------------------------------------------
# Backend-neutral figures
# --------------------------------------------------------------------------------------------------------------
@dataclass
class Series:
    """One trace. ``kind``: "line" (lines+markers), "bar", "box" (x[i] is the group of value y[i]), "points", or
    "band" (the area between ``y`` (low) and ``y_hi`` (high) along ``x``, drawn with ``opacity``)."""

    name: str
    kind: str
    x: list
    y: list
    color: str | None = None
    dash: bool = False
    y2: bool = False
    size: float = 6.0
    opacity: float = 1.0
    legendgroup: str | None = None
    showlegend: bool = True
    points: bool = True  # box: also draw every value (off for very large groups, to keep the page light)
    y_hi: list | None = None  # band: the upper edge


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    ylog: bool = False
    y2label: str | None = None
    barmode: str = "group"  # or "stack"
    categorical_x: bool = False
    integer_x: bool = False
    yrange: tuple[float, float] | None = None
    hlines: list[tuple[float, str]] = field(default_factory=list)
    equal_aspect: bool = False


@dataclass
class Chart:
    key: str  # file stem of the PNG and id of the plot div
    title: str
    panels: list[Panel]
    caption: str = ""
    height: int = 420
    png_width: float | None = None  # inches; default from the number of panels


def _hex(rgba) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in rgba[:3]))


def palette(n: int, cmap: str = "tab10") -> list[str]:
    from matplotlib import colormaps

    cm = colormaps[cmap]
    if cmap in ("tab10", "tab20", "Set1", "Set2", "Dark2"):
        return [_hex(cm(i % cm.N)) for i in range(n)]
    return [_hex(cm(0.08 + 0.84 * (i / max(n - 1, 1)))) for i in range(n)]


def temperature_colors(temps: Iterable[float]) -> dict[float, str]:
    """Cold blue to hot red (turbo: no pale middle colour that would vanish on white)."""
    temps = sorted(temps)
    return dict(zip(temps, palette(len(temps), "turbo")))


# --- the dashboard's charts ------------------------------------------------------------------------------------
def chart_stability(run: RunData) -> Chart | None:
    fr = stable_fractions(run)
    if not fr:
        return None
    colors = temperature_colors(fr)
    series = [
        Series(temperature_label(t), "line", [i for i, _ in pts], [f for _, f in pts], color=colors[t])
        for t, pts in fr.items()
    ]
    panel = Panel("", "AL iteration", "fraction of scenarios stable", series, yrange=(-0.03, 1.03), integer_x=True)
    return Chart("stability", "Stable MD scenarios per temperature", [panel],
                 "A scenario is stable when its MTP MD ran its full length with the extrapolation grade below the "
                 "break threshold.")


def _gamma_value(g: Any) -> float | None:
    if not isinstance(g, (int, float)) or isinstance(g, bool) or math.isnan(g) or g <= 0:
        return None
    return float(g)


def chart_gamma(run: RunData) -> Chart | None:
    """Per-scenario max γ per iteration, one box per temperature; plus every collected γ when the log has them."""
    if not run.explores:
        return None
    gb = gamma_break(run)
    groups: dict[str, tuple[list, list]] = {}
    temps: dict[str, float] = {}
    n_inf = 0
    for it in sorted(run.explores):
        rec = run.explores[it]
        for sc in rec.get("scenarios") or []:
            g, t = _gamma_value(sc.get("max_gamma")), _temperature(sc.get("temperature"))
            if g is None and sc.get("crashed"):
                g = math.inf  # a crashed MD (an explicit record, no grade): drawn at the ceiling, not dropped
            if g is None or t is None:
                continue
            n_inf += math.isinf(g)
            name = temperature_label(t)
            temps[name] = t
            xs, ys = groups.setdefault(name, ([], []))
            xs.append(it)
            ys.append(g)
        for g in rec.get("gammas") or []:
            g = _gamma_value(g)
            if g is not None:
                n_inf += math.isinf(g)
                xs, ys = groups.setdefault("collected structures", ([], []))
                xs.append(it)
                ys.append(g)
    if not groups:
        return None
    finite = [g for _, ys in groups.values() for g in ys if math.isfinite(g)]
    ceiling = 10.0 ** math.ceil(math.log10(max(finite + [gb]) * 2.0))
    for _, ys in groups.values():
        ys[:] = [g if math.isfinite(g) else ceiling for g in ys]
    colors = temperature_colors(temps.values())
    order = sorted(groups, key=lambda n: (n not in temps, temps.get(n, 0.0)))
    series = [Series(n, "box", *groups[n], color=colors.get(temps.get(n), "#555555"),
                     points=len(groups[n][1]) <= MAX_BOX_POINTS) for n in order]
    panel = Panel("", "AL iteration", "max extrapolation grade γ", series, ylog=True,
                  integer_x=True, hlines=[(gb, f"break γ = {gb:g}")])
    cap = "Box: quartiles of each scenario's maximum γ per temperature; points: every scenario. Log scale."
    if any(not x.points for x in series):
        cap += f" Groups of more than {MAX_BOX_POINTS} values show only their outliers."
    if "collected structures" in groups:
        cap += " Grey: γ of every structure collected for selection."
    if n_inf:
        cap += f" {n_inf} MD runs crashed or reached an infinite γ: drawn at {ceiling:g}."
    n_boxes = len(series) * len({x for s_ in series for x in s_.x})
    return Chart("gamma", "Extrapolation grade distribution per iteration", [panel], cap,
                 png_width=min(16.0, max(6.4, 0.3 * n_boxes)))


def chart_labels(run: RunData) -> Chart | None:
    its = sorted(set(run.labels) | {i for i, d in run.done.items() if d.get("labels_cumulative") is not None})
    if not its:
        return None
    added, failed, cum, fcum = [], [], [], []
    for it in its:
        lab, done = run.labels.get(it, {}), run.done.get(it, {})
        added.append(lab.get("added") or 0)
        failed.append(lab.get("failed") or 0)
        cum.append(lab.get("cumulative", done.get("labels_cumulative")))
        fcum.append(lab.get("failed_cumulative", done.get("failed_cumulative")))
    series = [
        Series("added", "bar", its, added, color="#4c72b0"),
        Series("failed", "bar", its, failed, color="#c44e52"),
        Series("cumulative labels", "line", its, cum, color="#222222", y2=True),
        Series("cumulative failed", "line", its, fcum, color="#c44e52", dash=True, y2=True),
    ]
    panel = Panel("", "AL iteration", "labels per iteration", series, y2label="cumulative", integer_x=True)
    return Chart("labels", "Labels (DFT calls) added, cumulative, and failures", [panel],
                 "Bars: labels added / failed in each iteration (left axis). Lines: running totals (right axis).")


def chart_errors(run: RunData) -> Chart | None:
    if not run.fits:
        return None
    its = sorted(run.fits)
    panels = []
    for key, title, unit in (("energy_rmse", "Energy", "meV/atom"), ("force_rmse", "Forces", "eV/Å")):
        series = []
        for part, dash in (("train", False), ("valid", True)):
            xs, ys = [], []
            for it in its:
                v = (run.fits[it].get(part) or {}).get(key)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    xs.append(it)
                    ys.append(float(v))
            if xs:
                series.append(Series(f"{part}", "line", xs, ys, dash=dash,
                                     color="#4c72b0" if part == "train" else "#dd8452",
                                     legendgroup=part, showlegend=not panels))
        panels.append(Panel(f"{title} RMSE", "AL iteration", f"RMSE ({unit})", series, integer_x=True))
    if not any(p.series for p in panels):
        return None
    return Chart("errors", "Training and validation errors of the MTP", panels,
                 "Solid: training set; dashed: validation set (when the fit held one out).")


def chart_wall(run: RunData) -> Chart | None:
    wall = wall_by_stage(run)
    if not wall:
        return None
    stages = [s for s in STAGE_ORDER if any(s in v for v in wall.values())]
    stages += sorted({s for v in wall.values() for s in v} - set(stages))
    colors = dict(zip(stages, palette(len(stages))))
    xs = list(wall)
    longest = max(sum(v.values()) for v in wall.values())
    unit, scale = ("s", 1.0) if longest < 120 else ("min", 60.0) if longest < 3 * 3600 else ("h", 3600.0)
    series = [Series(s, "bar", xs, [wall[x].get(s, 0.0) / scale for x in xs], color=colors[s]) for s in stages]
    panel = Panel("", "iteration", f"wall time ({unit})", series, barmode="stack", categorical_x=True)
    cap = "Stacked: time spent in each stage of each iteration."
    if "setup" in wall:
        cap += " \"setup\": the one-off pool, encoding and DIRECT stages."
    return Chart("wall", "Wall time per stage", [panel], cap)


def _subsample(a: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    if len(a) <= n:
        return a
    idx = np.sort(np.random.default_rng(seed).choice(len(a), n, replace=False))
    return a[idx]


def chart_pcs(run: RunData, max_pool_points: int | None = None) -> Chart | None:
    pcs = run.pcs
    if not pcs:
        return None
    series = []
    caption = []
    for key, name, color, size, opacity in (
        ("pool_pcs", "pool", "#9a9a9a", 3.0, 0.35),
        ("selected_pcs", "DIRECT selection", "#1f77b4", 6.0, 0.9),
        ("al_pcs", "added by AL", "#d62728", 6.0, 0.9),
    ):
        a = pcs.get(key)
        if a is None or a.ndim != 2 or a.shape[0] == 0:
            continue
        if a.shape[1] < 2:
            a = np.column_stack([a[:, 0], np.zeros(len(a))])
        shown = a
        if key == "pool_pcs" and max_pool_points and len(a) > max_pool_points:
            shown = _subsample(a, max_pool_points)
            caption.append(f"{len(shown)} of {len(a)} pool points drawn.")
        series.append(Series(f"{name} ({len(a)})", "points", shown[:, 0].tolist(), shown[:, 1].tolist(),
                             color=color, size=size, opacity=opacity))
    if not series:
        return None
    evr = pcs.get("explained_variance_ratio")
    lab = [f"PC{i + 1}" for i in range(2)]
    if evr is not None and len(evr) >= 2:
        lab = [f"PC{i + 1} ({100 * float(evr[i]):.1f}% var.)" for i in range(2)]
    panel = Panel("", lab[0], lab[1], series)
    return Chart("pcs", "Pool and selected structures on the first two principal components", [panel],
                 " ".join(["Weighted PC coordinates (DIRECT's feature space)."] + caption), height=520)


def chart_coverage(run: RunData) -> Chart | None:
    cov = evr = None
    if run.pcs:
        cov, evr = run.pcs.get("coverage"), run.pcs.get("explained_variance_ratio")
    if cov is None and run.direct:
        cov, evr = run.direct.get("coverage"), run.direct.get("explained_variance")
    if cov is None or len(np.atleast_1d(cov)) == 0:
        return None
    cov = [float(c) for c in np.atleast_1d(cov)]
    xs = [f"PC{i + 1}" for i in range(len(cov))]
    series = [Series("coverage score", "bar", xs, cov, color="#55a868")]
    if evr is not None and len(np.atleast_1d(evr)) == len(cov):
        series.append(Series("explained variance ratio", "line", xs, [float(e) for e in np.atleast_1d(evr)],
                             color="#8172b2", y2=True))
    panel = Panel("", "principal component", "coverage score", series, categorical_x=True,
                  y2label="explained variance ratio" if len(series) > 1 else None)
    return Chart("coverage", "Coverage of the pool by the selection, per PC", [panel],
                 "How well the selected structures cover the pool's spread along each weighted PC.")


# --------------------------------------------------------------------------------------------------------------
# Rendering: plotly (HTML) and matplotlib (PNG)
# --------------------------------------------------------------------------------------------------------------
def chart_to_plotly(chart: Chart):
    """A plotly Figure of ``chart`` (one subplot per panel)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = len(chart.panels)
    rows, cols = panel_grid(n)
    cells = [{"secondary_y": any(s.y2 for s in p.series)} for p in chart.panels] + [None] * (rows * cols - n)
    specs = [cells[r * cols:(r + 1) * cols] for r in range(rows)]
    fig = make_subplots(rows=rows, cols=cols, specs=specs,
                        subplot_titles=[p.title for p in chart.panels] if n > 1 else None,
                        horizontal_spacing=0.08 if n > 1 else 0.2, vertical_spacing=0.3 / rows if rows > 1 else 0.1)
    for k, p in enumerate(chart.panels):
        row, col = k // cols + 1, k % cols + 1
        has_y2 = cells[k]["secondary_y"]
        for s in p.series:
            common = dict(name=s.name, legendgroup=s.legendgroup or s.name, showlegend=s.showlegend)
            if s.kind == "line":
                tr = go.Scatter(x=s.x, y=s.y, mode="lines+markers",
                                line=dict(color=s.color, dash="dash" if s.dash else None),
                                marker=dict(size=s.size), **common)
            elif s.kind == "points":
                tr = go.Scatter(x=s.x, y=s.y, mode="markers", opacity=s.opacity,
                                marker=dict(color=s.color, size=s.size), **common)
            elif s.kind == "bar":
                tr = go.Bar(x=s.x, y=s.y, marker_color=s.color, **common)
            elif s.kind == "box":
                tr = go.Box(x=s.x, y=s.y, marker_color=s.color, boxpoints="all" if s.points else "outliers",
                            jitter=0.4, pointpos=0, marker=dict(size=4, opacity=0.6), **common)
            elif s.kind == "band":
                xs, lo, hi = list(s.x), list(s.y), list(s.y_hi or s.y)
                tr = go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], mode="lines", fill="toself",
                                fillcolor=s.color, opacity=s.opacity, line=dict(width=0, color=s.color),
                                hoverinfo="skip", **common)
            else:
                raise ValueError(f"unknown series kind {s.kind!r}")
            fig.add_trace(tr, row=row, col=col, secondary_y=s.y2 if has_y2 else None)
        fig.update_xaxes(title_text=p.xlabel, row=row, col=col)
        yargs: dict[str, Any] = dict(title_text=p.ylabel, row=row, col=col)
        if p.ylog:
            yargs["type"] = "log"
        if p.yrange:
            yargs["range"] = list(p.yrange)
        if has_y2:
            yargs["secondary_y"] = False
            fig.update_yaxes(title_text=p.y2label or "", row=row, col=col, secondary_y=True, showgrid=False,
                             rangemode="tozero", tickmode="auto", nticks=8)
        fig.update_yaxes(**yargs)
        if p.categorical_x:
            fig.update_xaxes(type="category", row=row, col=col)
        elif p.integer_x:
            max_ticks = max(4, 24 // cols)
            fig.update_xaxes(tickformat="d", tick0=0, dtick=max(1, math.ceil(_span(p) / max_ticks)), row=row, col=col)
        for y, label in p.hlines:
            fig.add_hline(y=y, line_dash="dot", line_color="#444", annotation_text=label,
                          annotation_position="top left", row=row, col=col)
        if p.equal_aspect:
            fig.update_yaxes(scaleanchor="x", row=row, col=col)
    modes = {p.barmode for p in chart.panels if any(s.kind == "bar" for s in p.series)}
    fig.update_layout(
        barmode=(modes.pop() if len(modes) == 1 else "group"),
        boxmode="group",
        height=int(chart.height * (1 + 0.8 * (rows - 1))),
        margin=dict(l=70, r=70, t=50 if n > 1 else 30, b=110 if n > 1 else 60),
        template="plotly_white",
        # above a single plot (left, clear of the mode bar); below a grid of panels (clear of their titles)
        legend=(dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0) if n == 1 else
                dict(orientation="h", yanchor="top", y=-0.2 / rows, xanchor="center", x=0.5)),
    )
    return fig


def panel_grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, cols) for ``n`` panels: at most ``max_cols`` side by side."""
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


def _span(p: Panel) -> float:
    xs = [x for s in p.series for x in s.x if isinstance(x, (int, float))]
    return (max(xs) - min(xs)) if xs else 0


def chart_to_png(chart: Chart, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Draw ``chart`` with matplotlib (Agg, no pyplot state) into ``path``; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    n = len(chart.panels)
    rows, cols = panel_grid(n)
    width = chart.png_width or max(6.4, 5.2 * cols)
    fig = Figure(figsize=(width, (4.4 if chart.height < 500 else 5.6) + 3.4 * (rows - 1)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in grid[n:]:
        ax.set_visible(False)
    axes = grid[:n]
    fig.suptitle(chart.title, fontsize=12)
    handles: dict[str, Any] = {}
    for ax, p in zip(axes, chart.panels):
        ax2 = ax.twinx() if any(s.y2 for s in p.series) else None
        cats: list = []
        if p.categorical_x:
            for s in p.series:
                for x in s.x:
                    if x not in cats:
                        cats.append(x)
        pos = (lambda x: cats.index(x)) if p.categorical_x else (lambda x: x)
        bars = [s for s in p.series if s.kind == "bar"]
        boxes = [s for s in p.series if s.kind == "box"]
        bottoms: dict[Any, float] = {}
        for s in p.series:
            target = ax2 if (s.y2 and ax2 is not None) else ax
            if s.kind == "line":
                pts = [(pos(x), y) for x, y in zip(s.x, s.y) if y is not None]
                h, = target.plot([a for a, _ in pts], [b for _, b in pts], marker="o", ms=4, color=s.color,
                                 ls="--" if s.dash else "-", label=s.name)
            elif s.kind == "points":
                h = target.scatter(s.x, s.y, s=s.size ** 2 / 2, c=s.color, alpha=s.opacity, label=s.name,
                                   linewidths=0, rasterized=len(s.x) > 2000)
            elif s.kind == "bar":
                xs = np.array([pos(x) for x in s.x], dtype=float)
                if p.barmode == "stack":
                    bot = np.array([bottoms.get(x, 0.0) for x in s.x])
                    h = target.bar(xs, s.y, 0.7, bottom=bot, color=s.color, label=s.name)
                    for x, y in zip(s.x, s.y):
                        bottoms[x] = bottoms.get(x, 0.0) + (y or 0.0)
                else:
                    k, w = bars.index(s), 0.8 / len(bars)
                    h = target.bar(xs - 0.4 + w * (k + 0.5), s.y, w, color=s.color, label=s.name)
            elif s.kind == "band":
                xs = [pos(x) for x in s.x]
                h = target.fill_between(xs, s.y, s.y_hi or s.y, color=s.color, alpha=s.opacity, linewidth=0,
                                        label=s.name)
            elif s.kind == "box":
                k, w = boxes.index(s), 0.8 / len(boxes)
                groups = sorted(set(s.x))
                data = [[y for x, y in zip(s.x, s.y) if x == g] for g in groups]
                where = [g - 0.4 + w * (k + 0.5) for g in groups]
                bp = target.boxplot(data, positions=where, widths=w * 0.8, patch_artist=True, showfliers=False,
                                    manage_ticks=False)
                for b in bp["boxes"]:
                    b.set(facecolor=s.color, alpha=0.35, edgecolor=s.color)
                for part in ("medians", "whiskers", "caps"):
                    for line in bp[part]:
                        line.set_color(s.color)
                offs = {g: wh for g, wh in zip(groups, where)}
                xs_pts, ys_pts = (s.x, s.y) if s.points else ([], [])
                jit = np.random.default_rng(k).uniform(-w * 0.3, w * 0.3, len(xs_pts))
                h = target.scatter([offs[x] + j for x, j in zip(xs_pts, jit)], ys_pts, s=10, c=s.color, alpha=0.7,
                                   label=s.name, linewidths=0)
            else:
                raise ValueError(f"unknown series kind {s.kind!r}")
            if s.showlegend and s.name not in handles:
                handles[s.name] = h
        for y, label in p.hlines:
            ax.axhline(y, ls=":", color="#444")
            ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), va="bottom", fontsize=8)
        if p.categorical_x:
            ax.set_xticks(range(len(cats)), [str(c) for c in cats])
        elif p.integer_x:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if bars and not p.yrange:
            ax.margins(y=0.06)
        if p.ylog:
            ax.set_yscale("log")
        if p.yrange:
            ax.set_ylim(*p.yrange)
        if ax2 is not None:
            ax2.set_ylim(bottom=0)
            ax2.set_ylabel(p.y2label or "")
        ax.set_xlabel(p.xlabel)
        ax.set_ylabel(p.ylabel)
        if p.title:
            ax.set_title(p.title, fontsize=10)
        ax.grid(alpha=0.3)
    if handles:
        per_row = max(1, int(width / (0.9 + 0.075 * max(len(k) for k in handles))))
        fig.legend(list(handles.values()), list(handles), loc="outside lower center",
                   ncol=min(len(handles), per_row), fontsize=9, frameon=False)
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    return path


# --------------------------------------------------------------------------------------------------------------
# HTML page
# --------------------------------------------------------------------------------------------------------------
CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;
color:#222}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.15em;margin:1.6em 0 .2em;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:.9em} .caption{color:#555;font-size:.88em;margin:.2em 0 .4em}
table.summary{border-collapse:collapse;margin:.8em 0;font-size:.95em}
table.summary th,table.summary td{border:1px solid #ccc;padding:.3em .8em;text-align:left}
table.summary th{background:#f3f3f3} table.summary td.num{text-align:right}
.missing{background:#fff7e0;border:1px solid #f0d890;padding:.5em 1em;border-radius:4px;font-size:.92em}
.png{font-size:.8em}
"""


def html_table(header: list[str] | None, rows: list[list[Any]], numeric: set[int] | None = None,
               cls: str = "summary") -> str:
    numeric = numeric or set()
    out = [f'<table class="{cls}">']
    if header:
        out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead>")
    out.append("<tbody>")
    for r in rows:
        out.append("<tr>" + "".join(
            f'<td{" class=num" if i in numeric else ""}>{html.escape(str(v))}</td>' for i, v in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def render_page(title: str, meta: str, body_parts: list[str], charts: list[tuple[Chart, str]]) -> str:
    """A full HTML page: ``body_parts`` (HTML) then one section per (chart, png file name).

    plotly.js is embedded inline exactly once (in the first plot); later plots reuse it.
    """
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="meta">{html.escape(meta)}</div>',
        *body_parts,
    ]
    first = True
    for chart, png in charts:
        fig = chart_to_plotly(chart)
        div = fig.to_html(full_html=False, include_plotlyjs=True if first else False, div_id=f"plot-{chart.key}",
                          config={"displaylogo": False, "responsive": True})
        first = False
        parts += [
            f'<section id="{chart.key}"><h2>{html.escape(chart.title)}</h2>',
            f'<div class="caption">{html.escape(chart.caption)} '
            f'<a class="png" href="{html.escape(png)}">PNG</a></div>',
            div,
            "</section>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary_rows(s: dict, run: RunData) -> list[list[Any]]:
    if s["finished"]:
        status = "converged" if s["converged"] else "stopped without converging"
        if s.get("reason"):
            status += f": {s['reason']}"
    else:
        status = "running (or stopped before run_finished)"
    reached = (f"iteration {s['all_stable_iteration']} ({s['labels_to_all_stable']} labels)"
               if s["all_stable_iteration"] is not None else "not reached")
    rows = [
        ["mode", s["mode"] or "unknown (no run_started yet)"],
        ["recipe / preset", f"{s['recipe'] or '-'} / {s['preset'] or '-'}"],
        ["status", status],
        ["iterations finished", s["iterations"]],
        ["labels (cumulative)", "-" if s["labels"] is None else s["labels"]],
        ["failed labels", "-" if s["failed"] is None else s["failed"]],
        ["all scenarios stable", reached],
        ["scenarios", "-" if s["n_scenarios"] is None else s["n_scenarios"]],
        ["temperatures", ", ".join(temperature_label(t) for t in s["temperatures"]) or "-"],
        ["wall time (sum of stages)", format_seconds(s["wall_seconds"])],
        ["AL wall time (without pool MD and encoding)", format_seconds(s["al_wall_seconds"])],
    ]
    if run.pool:
        rows.insert(8, ["pool structures", run.pool.get("n_structures", "-")])
    counts = store_counts(run.path)
    if counts:
        rows.append(["store.sqlite structures", ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))])
    return rows


def _scenario_rows(run: RunData) -> tuple[int, list[list[Any]]] | None:
    """Per-scenario outcome of the latest exploration: why each run stopped (completed, gamma, blow-up, crash)."""
    if not run.explores:
        return None
    it = max(run.explores)
    rows = []
    for sc in run.explores[it].get("scenarios") or []:
        g = _gamma_value(sc.get("max_gamma"))
        rows.append([sc.get("id"), sc.get("temperature", "-"), "yes" if sc.get("stable") else "no",
                     f"{sc.get('steps_done', '-')}/{sc.get('steps_total', '-')}",
                     "-" if g is None else f"{g:.3g}", sc.get("stop_reason") or ("completed" if sc.get("stable") else "-")])
    rows.sort(key=lambda r: (r[2] == "yes", str(r[0])))  # unstable first
    return it, rows


def _missing_notes(run: RunData, made: dict[str, Chart | None]) -> list[str]:
    notes = []
    if not run.events:
        notes.append("the event log is empty: the run has not started yet")
    if run.started is None and run.events:
        notes.append("no run_started event")
    if not run.done:
        notes.append("no iteration has finished yet")
    why = {
        "stability": "scenario stability: no exploration has finished yet",
        "gamma": "γ distributions: no exploration has finished yet",
        "labels": "labels: no labelling has finished yet",
        "errors": "training/validation errors: no MTP fit has finished yet",
        "wall": "wall time: no stage has finished yet",
        "pcs": f"PC map: {run.pcs_problem or 'direct/pcs.npz has no PC arrays'}",
        "coverage": "coverage per PC: DIRECT has not run yet",
    }
    notes += [f"not yet — {why[k]}" for k, c in made.items() if c is None]
    if run.mode == "scratch" and made.get("pcs") is None:
        notes.append("(a from-scratch run has no DIRECT selection; the PC map shows only when pcs.npz exists)")
    return notes


def dashboard_charts(run: RunData) -> dict[str, Chart | None]:
    return {
        "stability": chart_stability(run),
        "gamma": chart_gamma(run),
        "labels": chart_labels(run),
        "errors": chart_errors(run),
        "wall": chart_wall(run),
        "pcs": chart_pcs(run),
        "coverage": chart_coverage(run),
    }


def build_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Write the dashboard of ``run_dir`` (index.html + one PNG per figure) and return the HTML path.

    ``out_dir`` defaults to ``run_dir/report``. Safe to call while the run is going (reads only; files are
    replaced atomically).
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    charts = dashboard_charts(run)
    made: list[tuple[Chart, str]] = []
    for key, chart in charts.items():
        stale = out / f"{key}.png"
        if chart is None:
            stale.unlink(missing_ok=True)  # a figure from an older build of a different run: do not mislead
            continue
        chart_to_png(chart, stale)
        if key == "pcs":  # the interactive map draws a subsample; the PNG above has every point
            chart = chart_pcs(run, max_pool_points=MAX_HTML_POOL_POINTS)
        made.append((chart, f"{key}.png"))
    summary = summarize_run(run)
    body = ["<h2>Summary</h2>", html_table(None, _summary_rows(summary, run))]
    outcome = _scenario_rows(run)
    if outcome:
        it, rows = outcome
        body += [f"<h2>Scenarios in iteration {it}</h2>",
                 html_table(["scenario", "T (K)", "stable", "steps", "max γ", "stopped because"], rows)]
    notes = _missing_notes(run, charts)
    if notes:
        body.append('<div class="missing"><b>Not shown yet</b><ul>'
                    + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul></div>")
    import datetime as _dt

    meta = f"run directory {run.path.resolve()} · built {_dt.datetime.now().isoformat(timespec='seconds')} · " \
           f"{len(run.events)} events"
    page = render_page(f"alkit run {run.name}", meta, body, made)
    index = out / "index.html"
    atomic_write(index, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    log.info("report of %s: %s (%d figures)", run.path, index, len(made))
    return index
