"""Benchmark: MTP training to convergence and validation error at levels 10, 16 and 20 on 500 labelled Ti-H cells.

The labelled set is ``bench/_tih_data.py``'s CHGNet-labelled snapshots of short Langevin MD of Ti36 + 0-8 H cells
(hcp/bcc/fcc, 300-1500 K, +-2 % strain; cached in ``bench/out/tih40_chgnet.extxyz``, git-ignored). Each level is
trained on the same 400 configurations and validated on 100 others, with alkit's engine (variable projection,
MLIP-2's convergence rule: relative loss decrease < ``--tol`` over 50 iterations, at most ``--bfgs-maxiter``) or
motep's (``--engine motep``: LLS -> BFGS(``--bfgs-maxiter``) -> LLS).

    nice -n 10 python bench/bench_mtp_fit.py                                   # alkit, to convergence, 2 threads
    nice -n 10 python bench/bench_mtp_fit.py --engine motep --bfgs-maxiter 20  # motep, 20 BFGS iterations
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tih_data import OUT, make_tih_dataset  # noqa: E402


def _limit_memory(gb: float) -> None:
    limit = int(gb * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[10, 16, 20])
    ap.add_argument("--n", type=int, default=500, help="labelled configurations (default 500)")
    ap.add_argument("--n-valid", type=int, default=100, help="of which held out for validation (default 100)")
    ap.add_argument("--bfgs-maxiter", type=int, default=1000, help="optimiser iteration cap (default 1000)")
    ap.add_argument("--tol", type=float, default=1e-3, help="convergence tolerance (alkit engine; default 1e-3)")
    ap.add_argument("--engine", default="alkit", choices=["alkit", "motep"])
    ap.add_argument("--threads", type=int, default=2, help="threads (alkit engine; default 2)")
    ap.add_argument("--weights", type=float, nargs=3, default=[1.0, 0.01, 0.0])
    ap.add_argument("--memory-gb", type=float, default=6.0)
    ap.add_argument("--json", default=str(OUT / "bench_mtp_fit.json"))
    args = ap.parse_args(argv)
    _limit_memory(args.memory_gb)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from alkit.mtp.fit import format_metrics, train_mtp
    from alkit.mtp.levels import basis_counts

    t0 = time.perf_counter()
    frames = make_tih_dataset(args.n, OUT / "tih40_chgnet.extxyz")
    t_data = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    order = rng.permutation(len(frames))
    valid = [frames[i] for i in order[: args.n_valid]]
    train = [frames[i] for i in order[args.n_valid:]]
    n_atoms = [len(a) for a in frames]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"data: {len(frames)} configs ({min(n_atoms)}-{max(n_atoms)} atoms, mean {np.mean(n_atoms):.1f}; "
          f"{sum(n_atoms)} atoms), {len(train)} train / {len(valid)} valid; loaded/labelled in {t_data:.1f} s",
          flush=True)
    rows = []
    for level in args.levels:
        c = basis_counts(level)
        cpu0 = time.process_time()
        res = train_mtp(train, OUT / f"tih_L{level:02d}_{args.engine}_{args.bfgs_maxiter}.mtp", ["Ti", "H"],
                        level=level, bfgs_maxiter=args.bfgs_maxiter, weights=tuple(args.weights), valid=valid, seed=0,
                        engine=args.engine, tol=args.tol, threads=args.threads, progress=True)
        cpu = time.process_time() - cpu0  # includes the metric evaluation; wall time below does not
        rep = res.report
        row = {"level": level, "engine": args.engine, "cpu_seconds_incl_eval": round(cpu, 1),
               "basis_functions": c["alpha_scalar_moments"], "parameters": res.n_parameters,
               "bfgs_maxiter": args.bfgs_maxiter, "train_seconds": round(res.seconds, 1),
               "iterations": rep.iterations if rep else args.bfgs_maxiter, "stopped": rep.reason if rep else "cap",
               "train": res.train_metrics, "valid": res.valid_metrics}
        rows.append(row)
        print(f"level {level:2d}: {c['alpha_scalar_moments']} basis functions, {res.n_parameters} parameters, "
              f"trained in {res.seconds:.1f} s wall ({cpu:.1f} s CPU incl. evaluation), {row['iterations']} iterations "
              f"({row['stopped']}), {args.engine}", flush=True)
        print(f"   train {format_metrics(res.train_metrics)}", flush=True)
        print(f"   valid {format_metrics(res.valid_metrics)}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"n": len(frames), "n_valid": len(valid), "rows": rows}, indent=1))
    print(f"\n| level | basis fns | params | engine | iterations | train wall (s) | CPU incl. eval (s) | "
          f"valid E RMSE/MAE (meV/atom) | valid F RMSE/MAE (eV/Å) | valid S RMSE/MAE (GPa) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["valid"]
        print(f"| {r['level']} | {r['basis_functions']} | {r['parameters']} | {r['engine']} | "
              f"{r['iterations']} ({r['stopped']}) | "
              f"{r['train_seconds']} | {r['cpu_seconds_incl_eval']} | {v['energy_rmse']:.2f} / {v['energy_mae']:.2f} | "
              f"{v['force_rmse']:.3f} / {v['force_mae']:.3f} | {v['stress_rmse']:.2f} / {v['stress_mae']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
