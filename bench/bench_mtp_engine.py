"""Benchmark: alkit's compiled MTP engine against motep 0.2.0 (cext), on the same CHGNet-labelled Ti-H data.

(a) one loss + gradient evaluation over a training set (motep: loss + full Jacobian), per atom, at levels 10, 16
    and 20, on ~40-atom (Ti36 + 0-8 H) and 108-atom (Ti108 + 0-16 H) cells; alkit with 1 and 2 threads;
(b) energies + forces (MD run mode), µs per atom-step, one thread;
(c) a fit to convergence of a level-16 MTP on 1,000 cells of ~40 atoms (200 more for validation): wall and CPU
    time, iterations, train and validation errors; motep's time for the same number of loss+gradient evaluations
    extrapolated from its measured per-evaluation cost;
(d) one variable-projection evaluation (least-squares assembly + loss and gradient) at active-learning set sizes
    (13-150 cells of ~40 atoms, level 16): CPU per atom on 1 thread, and the 2-thread speed-up of each half against
    the ideal 2.0 (the campaigns' fits run on 2 threads; a set of a few tens of cells must still split evenly).

Figures are CPU seconds per unit of work where a ratio is quoted (this machine is shared); the fit reports both.

    nice -n 10 python bench/bench_mtp_engine.py            # all three parts
    nice -n 10 python bench/bench_mtp_engine.py --parts a b
    nice -n 10 python bench/bench_mtp_engine.py --parts d     # needs 2 idle cores to mean anything
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tih_data import OUT, make_tih_dataset  # noqa: E402

SPECIES = ["Ti", "H"]
WEIGHTS = (1.0, 0.01, 0.0)


def _potential(level: int, frames, seed: int = 0):
    from alkit.io import min_distance
    from alkit.mtp.potential import MTPPotential

    dmin = min(min_distance(a) for a in frames)
    pot = MTPPotential.untrained(level, SPECIES, cutoff=5.0, min_dist=np.floor(dmin * 0.9 * 100) / 100)
    rng = np.random.default_rng(seed)
    pot.initialize(rng)
    pot.moment_coeffs = rng.normal(0, 0.1, pot.n_scalar)
    pot.species_coeffs = rng.normal(0, 1.0, 2)
    return pot


def _cpu_per_call(fn, min_seconds: float = 2.0, min_calls: int = 2) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call of ``fn`` (repeated for at least ``min_seconds`` CPU)."""
    fn()  # warm-up
    c0, t0, k = time.process_time(), time.perf_counter(), 0
    while k < min_calls or time.process_time() - c0 < min_seconds:
        fn()
        k += 1
    return (time.process_time() - c0) / k, (time.perf_counter() - t0) / k


def _motep_loss(pot, frames):
    from motep.loss import LossFunction, LossSetting

    data = pot.to_motep(SPECIES)
    setting = LossSetting(energy_weight=WEIGHTS[0], forces_weight=WEIGHTS[1], stress_weight=WEIGHTS[2])
    return LossFunction(frames, data, setting, engine="cext"), data.parameters.copy()


def part_a(frames40, frames108, levels, n40: int, n108: int, motep_max_atoms: int) -> list[dict]:
    from alkit.mtp.train import TrainingData

    rows = []
    for label, frames in (("~40", frames40[:n40]), ("108+", frames108[:n108])):
        n_atoms = sum(len(a) for a in frames)
        for level in levels:
            pot = _potential(level, frames)
            data = TrainingData(pot, frames, SPECIES)
            theta = pot.theta
            cpu1, wall1 = _cpu_per_call(lambda: data.loss_grad(theta, WEIGHTS, 1))
            _, wall2 = _cpu_per_call(lambda: data.loss_grad(theta, WEIGHTS, 2))
            # motep on a subset small enough to finish (its cost is linear in the atoms)
            sub, k = [], 0
            for a in frames:
                if k + len(a) > motep_max_atoms and sub:
                    break
                sub.append(a)
                k += len(a)
            lf, p = _motep_loss(pot, sub)
            cpu_m, _ = _cpu_per_call(lambda: (lf(p), lf.jac(p)), min_seconds=1.0, min_calls=1)
            # same value as alkit (a check that both compute the same thing)
            sub_data = TrainingData(pot, sub, SPECIES)
            la, ga, _ = sub_data.loss_grad(theta, WEIGHTS, 1)
            lm, gm = lf(p), lf.jac(p)
            agree = max(abs(la - lm) / abs(lm), float(np.abs(ga - gm).max() / np.abs(gm).max()))
            r = {"cells": label, "level": level, "configs": len(frames), "atoms": n_atoms,
                 "alkit_1t_us_per_atom": cpu1 / n_atoms * 1e6, "alkit_1t_wall_us_per_atom": wall1 / n_atoms * 1e6,
                 "alkit_2t_wall_us_per_atom": wall2 / n_atoms * 1e6, "thread_speedup": wall1 / wall2,
                 "motep_us_per_atom": cpu_m / k * 1e6, "motep_atoms": k,
                 "ratio_1t": (cpu_m / k) / (cpu1 / n_atoms), "max_rel_diff": agree}
            rows.append(r)
            print(f"(a) {label:>4} atoms L{level:02d}: alkit {r['alkit_1t_us_per_atom']:8.1f} µs/atom (1 thread), "
                  f"{r['alkit_2t_wall_us_per_atom']:7.1f} wall µs/atom (2 threads, x{r['thread_speedup']:.2f}); "
                  f"motep {r['motep_us_per_atom']:9.0f} µs/atom -> {r['ratio_1t']:6.1f}x; "
                  f"loss/grad agree to {agree:.1e}", flush=True)
    return rows


def part_b(frames40, frames108, levels) -> list[dict]:
    from motep.calculator import MTP as MotepCalculator

    from alkit.mtp.engine import MTPEngine

    rows = []
    for label, atoms in (("~40", frames40[0]), ("108+", frames108[0])):
        for level in levels:
            pot = _potential(level, [atoms])
            eng = MTPEngine(pot, SPECIES)
            work = atoms.copy()
            rng = np.random.default_rng(0)

            def alkit_step():
                work.positions += rng.normal(0, 1e-4, work.positions.shape)  # an MD-like step
                eng.compute(work)

            cpu_a, _ = _cpu_per_call(alkit_step)
            m = atoms.copy()
            m.calc = MotepCalculator(pot.to_motep(SPECIES), engine="cext", mode="run")

            def motep_step():
                m.positions += rng.normal(0, 1e-4, m.positions.shape)
                m.get_forces()

            cpu_m, _ = _cpu_per_call(motep_step)
            n = len(atoms)
            r = {"cells": label, "level": level, "atoms": n, "alkit_us": cpu_a / n * 1e6, "motep_us": cpu_m / n * 1e6,
                 "ratio": cpu_m / cpu_a}
            rows.append(r)
            print(f"(b) {label:>4} atoms L{level:02d}: E+F alkit {r['alkit_us']:6.1f} µs/atom-step, motep "
                  f"{r['motep_us']:6.1f} -> {r['ratio']:.1f}x", flush=True)
    return rows


def part_c(frames40, n_train: int, n_valid: int, threads: int, method: str, max_iter: int, tol: float) -> dict:
    from alkit.mtp.fit import format_metrics, train_mtp
    from alkit.mtp.potential import MTPPotential
    from alkit.mtp.train import TrainingData

    rng = np.random.default_rng(1)
    order = rng.permutation(len(frames40))
    valid = [frames40[i] for i in order[:n_valid]]
    train = [frames40[i] for i in order[n_valid:n_valid + n_train]]
    out = OUT / f"tih_L16_{method}_{n_train}.mtp"
    c0, t0 = time.process_time(), time.perf_counter()
    res = train_mtp(train, out, SPECIES, level=16, valid=valid, seed=0, bfgs_maxiter=max_iter, tol=tol,
                    threads=threads, method=method, progress=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    rep = res.report
    # motep: cost of one loss + Jacobian evaluation on a subset of this training set, scaled to all of it
    pot = MTPPotential.read(out)
    sub = train[:25]
    lf, p = _motep_loss(pot, sub)
    cpu_m, _ = _cpu_per_call(lambda: (lf(p), lf.jac(p)), min_seconds=1.0, min_calls=1)
    n_atoms = sum(len(a) for a in train)
    motep_eval = cpu_m / sum(len(a) for a in sub) * n_atoms
    full = TrainingData(pot, train, SPECIES)
    alkit_eval = _cpu_per_call(lambda: full.loss_grad(pot.theta, WEIGHTS, 1), min_seconds=0.1, min_calls=1)[0]
    r = {"configs": len(train), "atoms": n_atoms, "valid_configs": len(valid), "threads": threads, "method": method,
         "iterations": rep.iterations, "evaluations": rep.evaluations, "stopped": rep.reason,
         "fit_wall_s": rep.seconds, "fit_cpu_s": rep.cpu_seconds, "total_wall_s": wall, "total_cpu_s": cpu,
         "loss_start": rep.loss_start, "loss_final": rep.loss_final, "train": res.train_metrics,
         "valid": res.valid_metrics, "motep_s_per_eval": motep_eval, "alkit_cpu_s_per_eval_1t": alkit_eval,
         "motep_extrapolated_s": motep_eval * rep.evaluations}
    print(f"(c) level 16, {len(train)} cells ({n_atoms} atoms), {threads} threads, {method}: {rep.iterations} "
          f"iterations / {rep.evaluations} evaluations ({rep.reason}) in {rep.seconds:.0f} s wall ({rep.cpu_seconds:.0f} s "
          f"CPU); motep: {motep_eval:.0f} s per evaluation -> {motep_eval * rep.evaluations / 3600:.1f} h for the "
          f"same evaluations", flush=True)
    print(f"    train {format_metrics(res.train_metrics)}")
    print(f"    valid {format_metrics(res.valid_metrics)}")
    return r


def part_d(frames40, sizes) -> list[dict]:
    from alkit.mtp.train import TrainingData

    rows = []
    pot = _potential(16, frames40)
    theta = pot.theta
    for n in sizes:
        frames = frames40[:n]
        data = TrainingData(pot, frames, SPECIES)
        n_atoms = data.n_atoms
        r = {"configs": len(frames), "atoms": n_atoms}
        for name, fn in (("lls", lambda t: data.data.lls(theta, WEIGHTS, t)),
                         ("loss_grad", lambda t: data.loss_grad(theta, WEIGHTS, t))):
            cpu1, wall1 = _cpu_per_call(lambda: fn(1), min_seconds=1.0)
            _, wall2 = _cpu_per_call(lambda: fn(2), min_seconds=1.0)
            r.update({f"{name}_1t_us_per_atom": cpu1 / n_atoms * 1e6, f"{name}_speedup": wall1 / wall2})
        rows.append(r)
        print(f"(d) {n:4d} cells ({n_atoms} atoms) L16: least squares {r['lls_1t_us_per_atom']:6.1f} µs/atom, "
              f"x{r['lls_speedup']:.2f} on 2 threads; loss+gradient {r['loss_grad_1t_us_per_atom']:6.1f} µs/atom, "
              f"x{r['loss_grad_speedup']:.2f} (ideal x2.00)", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c", "d"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[13, 29, 49, 81, 112, 150], help="cells in (d)")
    ap.add_argument("--levels", type=int, nargs="+", default=[10, 16, 20])
    ap.add_argument("--n40", type=int, default=100, help="~40-atom cells in (a) (default 100)")
    ap.add_argument("--n108", type=int, default=40, help="108-atom cells in (a) (default 40)")
    ap.add_argument("--motep-atoms", type=int, default=800, help="atoms motep evaluates in (a) (default 800)")
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--valid", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--method", default="varpro", choices=["bfgs", "varpro"])
    ap.add_argument("--max-iter", type=int, default=1000)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--json", default=str(OUT / "bench_mtp_engine.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("motep").setLevel(logging.ERROR)
    # label only what the chosen parts use (cached in bench/out; a larger request relabels)
    n40 = max([args.train + args.valid] * ("c" in args.parts) + [args.n40] * bool({"a", "b"} & set(args.parts))
              + [max(args.sizes)] * ("d" in args.parts))
    frames40 = make_tih_dataset(n40, OUT / "tih40_chgnet.extxyz")
    frames108 = (make_tih_dataset(args.n108, OUT / "tih108_chgnet.extxyz", n_ti=108, max_h=16, per_run=10)
                 if {"a", "b"} & set(args.parts) else [])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; motep 0.2.0 cext vs alkit "
          f"compiled core", flush=True)
    result: dict = {}
    if "a" in args.parts:
        result["a"] = part_a(frames40, frames108, args.levels, args.n40, args.n108, args.motep_atoms)
    if "b" in args.parts:
        result["b"] = part_b(frames40, frames108, args.levels)
    if "c" in args.parts:
        result["c"] = part_c(frames40, args.train, args.valid, args.threads, args.method, args.max_iter, args.tol)
    if "d" in args.parts:
        result["d"] = part_d(frames40, args.sizes)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    if "a" in result:
        print("\n| cells | level | alkit 1 thread µs/atom (CPU) | alkit 2 threads µs/atom (wall) | 2-thread speed-up | "
              "motep µs/atom (CPU) | alkit vs motep |")
        print("|---|---|---|---|---|---|---|")
        for r in result["a"]:
            print(f"| {r['cells']} | {r['level']} | {r['alkit_1t_us_per_atom']:.1f} | {r['alkit_2t_wall_us_per_atom']:.1f} "
                  f"| {r['thread_speedup']:.2f}x | {r['motep_us_per_atom']:,.0f} | {r['ratio_1t']:.0f}x |")
    if "b" in result:
        print("\n| cells | level | alkit E+F µs/atom-step | motep µs/atom-step | alkit vs motep |")
        print("|---|---|---|---|---|")
        for r in result["b"]:
            print(f"| {r['cells']} | {r['level']} | {r['alkit_us']:.1f} | {r['motep_us']:.1f} | {r['ratio']:.1f}x |")
    if "c" in result:
        r = result["c"]
        v, t = r["valid"], r["train"]
        print("\n| fit | cells / atoms | iterations (evaluations) | wall s | CPU s | motep, same evaluations | "
              "train E / F RMSE | valid E / F RMSE |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| level 16, {r['method']}, {r['threads']} threads | {r['configs']} / {r['atoms']} | {r['iterations']} "
              f"({r['evaluations']}, {r['stopped']}) | {r['fit_wall_s']:.0f} | {r['fit_cpu_s']:.0f} | "
              f"{r['motep_extrapolated_s'] / 3600:.1f} h | {t['energy_rmse']:.2f} meV/atom / {t['force_rmse']:.3f} eV/Å "
              f"| {v['energy_rmse']:.2f} meV/atom / {v['force_rmse']:.3f} eV/Å |")
    if "d" in result:
        print("\n| cells (atoms) | least squares µs/atom (1 thread CPU) | 2 threads | loss+gradient µs/atom | 2 threads |")
        print("|---|---|---|---|---|")
        for r in result["d"]:
            print(f"| {r['configs']} ({r['atoms']}) | {r['lls_1t_us_per_atom']:.1f} | x{r['lls_speedup']:.2f} | "
                  f"{r['loss_grad_1t_us_per_atom']:.1f} | x{r['loss_grad_speedup']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
