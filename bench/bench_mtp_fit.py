"""Benchmark: MTP training time and validation error for levels 10, 16 and 20 on ~500 labelled Ti-H configurations.

The labelled set is made once with CHGNet (a fast stand-in labeller; see DEVELOPERS.md) from short Langevin MD runs
of Ti-H cells (hcp Ti with 0-25 % H on interstitial sites, 300-1500 K, random strains) and cached in
``bench/out/tih_md_labelled.extxyz`` (git-ignored). Each level is trained on the same 400 configurations and validated
on the other 100: LLS, then BFGS over all coefficients capped at ``--bfgs-maxiter`` iterations, then LLS.

    nice -n 10 python bench/bench_mtp_fit.py --bfgs-maxiter 20
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

OUT = Path(__file__).resolve().parent / "out"


def _limit_memory(gb: float) -> None:
    limit = int(gb * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def make_dataset(n: int, path: Path, seed: int = 0) -> list:
    """~n CHGNet-labelled Ti-H snapshots from short Langevin MD (cached)."""
    from ase.io import read, write

    if path.is_file():
        frames = read(str(path), ":")
        if len(frames) >= n:
            return frames[:n]
    import torch
    from ase import Atoms, units
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from chgnet.model.dynamics import CHGNetCalculator
    from tqdm import tqdm

    from alkit.io import min_distance

    torch.set_num_threads(1)
    calc = CHGNetCalculator(use_device="cpu")
    rng = np.random.default_rng(seed)
    frames: list = []
    per_run, interval = 25, 4
    bar = tqdm(total=n, desc="labelling Ti-H MD snapshots (CHGNet)", unit="cfg")
    run = 0
    while len(frames) < n:
        reps = [(2, 2, 2), (3, 2, 2), (3, 3, 2)][run % 3]
        atoms = bulk("Ti", "hcp", a=2.95, c=4.68) * reps
        n_h = int(rng.integers(0, max(1, len(atoms) // 4) + 1))
        tries = 0
        while sum(atoms.numbers == 1) < n_h and tries < 500:
            tries += 1
            cand = atoms + Atoms("H", positions=[rng.uniform(0, 1, 3) @ atoms.cell.array])
            if min_distance(cand) > 1.6:
                atoms = cand
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3))), scale_atoms=True)
        temperature = float(rng.choice([300, 600, 900, 1200, 1500]))
        atoms.calc = calc
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        dyn = Langevin(atoms, 1.0 * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
        for _ in range(per_run):
            dyn.run(interval)
            res = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
            snap = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True,
                         info={"temperature": temperature, "run": run})
            snap.calc = SinglePointCalculator(snap, **res)
            frames.append(snap)
            bar.update(1)
            if len(frames) >= n:
                break
        run += 1
    bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    write(str(path), frames)
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[10, 16, 20])
    ap.add_argument("--n", type=int, default=500, help="labelled configurations (default 500)")
    ap.add_argument("--n-valid", type=int, default=100, help="of which held out for validation (default 100)")
    ap.add_argument("--bfgs-maxiter", type=int, default=20, help="BFGS iteration cap (default 20)")
    ap.add_argument("--weights", type=float, nargs=3, default=[1.0, 0.01, 0.0])
    ap.add_argument("--memory-gb", type=float, default=6.0)
    ap.add_argument("--json", default=str(OUT / "bench_mtp_fit.json"))
    args = ap.parse_args(argv)
    _limit_memory(args.memory_gb)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    from alkit.mtp.fit import format_metrics, train_mtp
    from alkit.mtp.levels import basis_counts

    t0 = time.perf_counter()
    frames = make_dataset(args.n, OUT / "tih_md_labelled.extxyz")
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
        res = train_mtp(train, OUT / f"tih_L{level:02d}_bfgs{args.bfgs_maxiter}.mtp", ["Ti", "H"], level=level, bfgs_maxiter=args.bfgs_maxiter,
                        weights=tuple(args.weights), valid=valid, seed=0)
        cpu = time.process_time() - cpu0  # includes the metric evaluation; wall time below does not
        row = {"level": level, "cpu_seconds_incl_eval": round(cpu, 1), "basis_functions": c["alpha_scalar_moments"], "parameters": res.n_parameters,
               "bfgs_maxiter": args.bfgs_maxiter, "train_seconds": round(res.seconds, 1),
               "train": res.train_metrics, "valid": res.valid_metrics}
        rows.append(row)
        print(f"level {level:2d}: {c['alpha_scalar_moments']} basis functions, {res.n_parameters} parameters, "
              f"trained in {res.seconds:.1f} s wall ({cpu:.1f} s CPU incl. evaluation) (LLS + BFGS<= {args.bfgs_maxiter} it + LLS)", flush=True)
        print(f"   train {format_metrics(res.train_metrics)}", flush=True)
        print(f"   valid {format_metrics(res.valid_metrics)}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"n": len(frames), "n_valid": len(valid), "rows": rows}, indent=1))
    print(f"\n| level | basis fns | params | BFGS cap | train wall (s) | CPU incl. eval (s) | valid E RMSE/MAE (meV/atom) | "
          f"valid F RMSE/MAE (eV/Å) | valid S RMSE/MAE (GPa) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = r["valid"]
        print(f"| {r['level']} | {r['basis_functions']} | {r['parameters']} | {r['bfgs_maxiter']} | "
              f"{r['train_seconds']} | {r['cpu_seconds_incl_eval']} | {v['energy_rmse']:.2f} / {v['energy_mae']:.2f} | "
              f"{v['force_rmse']:.3f} / {v['force_mae']:.3f} | {v['stress_rmse']:.2f} / {v['stress_mae']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
