"""How long `alkit report` / `alkit compare` take on a paper-scale run, and how big the page is.

Writes a synthetic run with the real EventLog: 274 scenarios over 6 temperatures, 12 iterations, 3000 collected
gammas per iteration, a 20 000-row PC file (what the driver writes at most). Prints build seconds, peak RSS and sizes.

    python bench/bench_report.py [--iterations 12] [--out /tmp/alkit-bench-report]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from alkit.events import EventLog

TEMPS = (300, 600, 900, 1200, 1500, 1800)


def write_paper_scale_run(d: Path, iterations: int, mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    log = EventLog(d)
    log.emit("run_started", mode=mode, recipe="ti_h", preset="paper", config={"gamma_break": 3.0})
    for st in ("pool", "encode", "direct"):
        log.emit("stage", iteration=0, stage=st, seconds=float(rng.uniform(100, 3000)))
    (d / "direct").mkdir(exist_ok=True)
    np.savez(d / "direct" / "pcs.npz", pool_pcs=rng.normal(size=(20000, 10)), selected_pcs=rng.normal(size=(400, 10)),
             al_pcs=rng.normal(size=(300, 10)), coverage=rng.uniform(0.5, 1, 10),
             explained_variance_ratio=np.sort(rng.uniform(0, 0.3, 10))[::-1])
    cum = 0
    for it in range(iterations):
        cum += 400 if it == 0 else 40
        for st, sec in (("label", 3000.0), ("fit", 600.0), ("explore", 900.0), ("select", 60.0)):
            log.emit("stage", iteration=it, stage=st, seconds=sec)
        log.emit("labels", iteration=it, added=40, cumulative=cum, failed=1, failed_cumulative=it)
        log.emit("fit", iteration=it, n_train=cum, n_valid=cum // 10,
                 train={"energy_rmse": 5.0 / (it + 1), "force_rmse": 0.2}, valid={"energy_rmse": 6.0 / (it + 1)})
        frac = min(1.0, (it + 1) / iterations)
        sc = [{"id": f"s{i}", "temperature": TEMPS[i % 6], "stable": bool(rng.random() < frac), "steps_done": 1,
               "steps_total": 2, "max_gamma": float(rng.lognormal(1.5, 1))} for i in range(274)]
        log.emit("explore", iteration=it, scenarios=sc, gammas=list(rng.lognormal(1.5, 0.5, 3000)), n_collected=3000)
        by_t = {str(t): float(np.mean([s["stable"] for s in sc if s["temperature"] == t])) for t in TEMPS}
        log.emit("iteration_done", iteration=it, n_stable=sum(s["stable"] for s in sc), n_scenarios=274,
                 stable_by_temperature=by_t, labels_cumulative=cum, failed_cumulative=it, wall={})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=12)
    ap.add_argument("--out", default="/tmp/alkit-bench-report")
    args = ap.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    write_paper_scale_run(root / "direct", args.iterations, "direct", 0)
    write_paper_scale_run(root / "scratch", args.iterations, "scratch", 1)
    print(f"wrote 2 runs in {time.perf_counter() - t:.1f} s; events.jsonl "
          f"{(root / 'direct' / 'events.jsonl').stat().st_size / 1e6:.2f} MB each")

    from alkit.compare import compare_runs
    from alkit.report import build_report

    t = time.perf_counter()
    index = build_report(root / "direct")
    t_report = time.perf_counter() - t
    t = time.perf_counter()
    build_report(root / "direct")
    t_rebuild = time.perf_counter() - t
    t = time.perf_counter()
    cmp = compare_runs([root / "direct", root / "scratch"], root / "compare")
    t_compare = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"report (first, with imports): {t_report:.2f} s; rebuild: {t_rebuild:.2f} s; "
          f"index.html {index.stat().st_size / 1e6:.2f} MB")
    print(f"compare: {t_compare:.2f} s; compare.html {cmp.stat().st_size / 1e6:.2f} MB; peak RSS {rss:.0f} MB")
    pngs = sorted(index.parent.glob("*.png"))
    print("PNGs: " + ", ".join(f"{p.name} {p.stat().st_size // 1024} KB" for p in pngs))


if __name__ == "__main__":
    main()
