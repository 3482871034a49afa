"""A realistic synthetic run directory for the dashboard/comparison tests, written with the real
:class:`alkit.events.EventLog` (no campaign needed). :func:`write_run` returns the facts the tests check against."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from alkit.events import EventLog

TEMPERATURES = (300, 1000)
SCENARIOS_PER_T = 3
STAGE_SECONDS = {"label": 40.0, "fit": 25.0, "explore": 30.0, "select": 5.0}
SETUP_SECONDS = {"pool": 120.0, "encode": 15.0, "direct": 3.0}


def _stable_count(it: int, t: int, all_stable_at: int | None) -> int:
    """Stable scenarios (of SCENARIOS_PER_T) at temperature t in iteration it: the cold ones stabilise first."""
    if all_stable_at is not None and it >= all_stable_at:
        return SCENARIOS_PER_T
    lag = 0 if t == TEMPERATURES[0] else 1
    return max(0, min(SCENARIOS_PER_T - 1, it + 1 - lag))


def write_run(
    run_dir: str | Path,
    mode: str = "direct",
    n_iterations: int = 4,
    all_stable_at: int | None = 2,
    seed_labels: int = 30,
    added_per_iter: int = 12,
    failed_per_iter: int = 1,
    finished: bool = True,
    with_pcs: bool = True,
    n_pool: int = 600,
    seed: int = 0,
    pool_digest: str | None = None,
) -> dict:
    """Write events.jsonl (+ direct/pcs.npz, iterations/iter_NNN/) for a run of iterations 0..n-1.

    With ``all_stable_at`` set, the run converges there and stops (its iterations are 0..all_stable_at).
    """
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(run_dir)
    log.emit("run_started", mode=mode, recipe="synthetic", preset="test",
             config={"gamma_break": 3.0, "max_iterations": n_iterations})
    setup = dict(SETUP_SECONDS) if mode == "direct" else {"pool": SETUP_SECONDS["pool"]}
    (run_dir / "config.json").write_text('{"mode": "%s", "name": "synthetic"}' % mode)
    # like alkit.driver: the one-off stages are logged under iteration 0
    log.emit("stage", iteration=0, stage="pool", seconds=setup["pool"])
    log.emit("pool_built", n_structures=n_pool, n_scenarios=len(TEMPERATURES) * SCENARIOS_PER_T,
             seconds=setup["pool"], **({"digest": pool_digest} if pool_digest else {}))
    d = 4
    evr = np.array([0.4, 0.25, 0.15, 0.1])
    coverage = np.array([0.95, 0.9, 0.82, 0.7])
    if mode == "direct":
        log.emit("stage", iteration=0, stage="encode", seconds=setup["encode"])
        log.emit("stage", iteration=0, stage="direct", seconds=setup["direct"])
        log.emit("direct_fitted", n_pcs=d, explained_variance=evr, coverage=coverage, n_clusters=seed_labels, k=1)
        if with_pcs:
            pool = rng.normal(size=(n_pool, d)) * np.sqrt(evr) * 3
            sel = pool[rng.choice(n_pool, seed_labels, replace=False)]
            al = pool[rng.choice(n_pool, added_per_iter, replace=False)] * 1.3
            (run_dir / "direct").mkdir(exist_ok=True)
            np.savez(run_dir / "direct" / "pcs.npz", pool_pcs=pool, selected_pcs=sel, al_pcs=al,
                     coverage=coverage, explained_variance_ratio=evr)
    last = n_iterations - 1 if all_stable_at is None else min(all_stable_at, n_iterations - 1)
    cum = failed_cum = 0
    facts = {"iterations": [], "labels_cumulative": [], "stable": {}, "wall": sum(setup.values()),
             "all_stable_iteration": None, "labels_to_all_stable": None, "failed": 0, "max_gammas": {}}
    n_sc = len(TEMPERATURES) * SCENARIOS_PER_T
    for it in range(last + 1):
        added = seed_labels if it == 0 else added_per_iter
        failed = 0 if it == 0 else failed_per_iter
        cum += added
        failed_cum += failed
        log.emit("stage", iteration=it, stage="label", seconds=STAGE_SECONDS["label"])
        log.emit("labels", iteration=it, added=added, cumulative=cum, failed=failed, failed_cumulative=failed_cum)
        log.emit("stage", iteration=it, stage="fit", seconds=STAGE_SECONDS["fit"])
        err = 30.0 / (it + 1)
        log.emit("fit", iteration=it, n_train=int(cum * 0.9), n_valid=cum - int(cum * 0.9),
                 train={"energy_rmse": err, "energy_mae": err * 0.7, "force_rmse": 0.3 / (it + 1),
                        "force_mae": 0.2 / (it + 1), "stress_rmse": None, "stress_mae": None},
                 valid={"energy_rmse": err * 1.4, "energy_mae": err, "force_rmse": 0.4 / (it + 1),
                        "force_mae": 0.3 / (it + 1), "stress_rmse": None, "stress_mae": None})
        log.emit("stage", iteration=it, stage="explore", seconds=STAGE_SECONDS["explore"])
        scenarios, by_t, n_stable = [], {}, 0
        for t in TEMPERATURES:
            k = _stable_count(it, t, all_stable_at)
            for j in range(SCENARIOS_PER_T):
                stable = j < k
                g = float(rng.uniform(1.01, 2.9)) if stable else float(rng.uniform(3.5, 40.0))
                if not stable and j == SCENARIOS_PER_T - 1 and t == TEMPERATURES[-1] and it == 0:
                    g = float("inf")  # a blown-up MD: the log must cope with Infinity
                if not stable and j == SCENARIOS_PER_T - 1 and t == TEMPERATURES[-1] and it == 1:
                    g = 1e30  # what alkit.driver writes for a crashed MD
                scenarios.append({"id": f"s{t}_{j}", "temperature": t, "stable": stable,
                                  "steps_done": 2000 if stable else int(rng.integers(50, 1900)),
                                  "steps_total": 2000, "max_gamma": g})
            by_t[str(t)] = k / SCENARIOS_PER_T
            n_stable += k
        gammas = [float(x) for x in rng.uniform(3.0, 6.0, 4 * sum(not s["stable"] for s in scenarios))]
        log.emit("explore", iteration=it, scenarios=scenarios, gammas=gammas, n_collected=len(gammas))
        sel_s = 0.0
        if n_stable < n_sc:
            log.emit("stage", iteration=it, stage="select", seconds=STAGE_SECONDS["select"])
            sel_s = STAGE_SECONDS["select"]
        wall = {k: v for k, v in STAGE_SECONDS.items() if k != "select"}
        if sel_s:
            wall["select"] = sel_s
        log.emit("iteration_done", iteration=it, n_stable=n_stable, n_scenarios=n_sc, stable_by_temperature=by_t,
                 labels_cumulative=cum, failed_cumulative=failed_cum, wall=wall)
        (run_dir / "iterations" / f"iter_{it:03d}").mkdir(parents=True, exist_ok=True)
        facts["iterations"].append(it)
        facts["labels_cumulative"].append(cum)
        facts["stable"][it] = {float(t): v for t, v in by_t.items()}
        facts["max_gammas"][it] = [s["max_gamma"] for s in scenarios]
        facts["wall"] += sum(wall.values())
        if n_stable == n_sc and facts["all_stable_iteration"] is None:
            facts["all_stable_iteration"] = it
            facts["labels_to_all_stable"] = cum
    facts["failed"] = failed_cum
    facts["labels"] = cum
    facts["converged"] = facts["all_stable_iteration"] is not None
    if finished:
        log.emit("run_finished", converged=facts["converged"], iterations=last + 1, labels_cumulative=cum,
                 reason="all scenarios stable" if facts["converged"] else "max_iterations reached")
    return facts
