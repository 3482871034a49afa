"""Benchmark: MTP MD steps/s with and without on-the-fly MaxVol grading, ~38 and ~300 atoms, ASE vs LAMMPS engine.

    nice -n 10 python bench/bench_mtp_md.py [--levels 10 16] [--steps-small 200] [--steps-large 60]

Training data: ``bench/out/tih_md_labelled.extxyz`` (the CHGNet-labelled Ti-H MD snapshots of bench_mtp_fit.py,
first 200) if present, else 40 tiny Ti8Hn cells labelled with CHGNet here. Fits a level-L MTP per level (LLS + a few
BFGS iterations; coefficient quality does not change the cost of an MD step), builds the neighbourhood-mode active
sets, then times NVT MD at 100 K on Ti36H2 (38 atoms) and Ti288H12 (300 atoms) through
:func:`alkit.mtp.md.run_mtp_md` with the gamma thresholds out of reach, so every run goes its full length:

- "plain":  grade_every > steps (only the starting structure is graded): MTP energy/forces (motep's C engine);
- "linear": grade every step, rows = derivatives in the linear coefficients (the default active set);
- "all":    grade every step, rows include the radial coefficients (MLIP-2; alkit's numpy radial Jacobian).

Prints one line per case and a summary table. Memory is capped at 6 GB (RLIMIT_AS), torch at one thread.
"""
from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _cap_memory(gb: float = 6.0) -> None:
    limit = int(gb * 1024**3)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def training_set(n: int = 40, seed: int = 0):
    from ase import Atoms
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from chgnet.model.dynamics import CHGNetCalculator

    from alkit._compat import set_torch_threads

    set_torch_threads(1)
    rng = np.random.default_rng(seed)
    base = bulk("Ti", "hcp", a=2.95, c=4.68).repeat((2, 2, 1))
    calc = CHGNetCalculator(use_device="cpu")
    out = []
    for i in range(n):
        a = base.copy()
        for _ in range(0 if i < n // 2 else 1 + i % 3):
            for _try in range(500):
                trial = a + Atoms("H", [rng.uniform(0, 1, 3) @ a.cell.array])
                d = trial.get_distances(len(a), list(range(len(a))), mic=True)
                if np.all(d[a.numbers == 22] > 1.75) and np.all(d[a.numbers == 1] > 1.6):
                    a = trial
                    break
        a.set_cell(a.cell.array @ np.diag(1 + rng.uniform(-0.03, 0.03, 3)), scale_atoms=True)
        a.positions += rng.normal(0, 0.06, a.positions.shape)
        a.calc = calc
        res = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "stress": a.get_stress()}
        a.calc = SinglePointCalculator(a, **res)
        out.append(a)
    return out


def system(rep: tuple[int, int, int], n_h: int, seed: int = 1):
    """Ti hcp supercell with n_h H atoms in octahedral sites (well inside the training distances)."""
    from ase import Atoms
    from ase.build import bulk

    ti = bulk("Ti", "hcp", a=2.95, c=4.68, orthorhombic=True).repeat(rep)
    rng = np.random.default_rng(seed)
    # octahedral sites of hcp: between the basal planes, above the centre of Ti triangles; pick far-apart ones
    a = ti.copy()
    cand = rng.uniform(0, 1, (4000, 3)) @ ti.cell.array
    for p in cand:
        if (a.numbers == 1).sum() >= n_h:
            break
        trial = a + Atoms("H", [p])
        d = trial.get_distances(len(a), list(range(len(a))), mic=True)
        if np.all(d[a.numbers == 22] > 1.85) and np.all(d[a.numbers == 1] > 2.5):
            a = trial
    return a


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[10, 16])
    ap.add_argument("--steps-small", type=int, default=200)
    ap.add_argument("--steps-large", type=int, default=60)
    ap.add_argument("--bfgs-maxiter", type=int, default=20)
    ap.add_argument("--engines", nargs="+", default=["ase", "lammps"])
    ap.add_argument("--train", default=None, help="labelled extxyz to fit on (default: see above)")
    args = ap.parse_args(argv)
    _cap_memory()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("motep").setLevel(logging.ERROR)

    from alkit.mtp.fit import train_mtp
    from alkit.mtp.grade import ActiveSet
    from alkit.mtp.md import run_mtp_md

    t0 = time.perf_counter()
    cached = Path(args.train) if args.train else Path(__file__).resolve().parent / "out" / "tih_md_labelled.extxyz"
    if cached.is_file():
        from ase.io import read

        train = read(str(cached), ":200")
        print(f"training set: {len(train)} structures from {cached}", flush=True)
    else:
        train = training_set()
        print(f"training set: {len(train)} CHGNet-labelled Ti8Hn cells in {time.perf_counter() - t0:.1f} s",
              flush=True)
    small = system((3, 3, 1), 2)  # Ti36 + 2 H = 38 atoms (orthorhombic hcp cell has 4 atoms)
    large = system((6, 4, 3), 12)  # Ti288 + 12 H = 300 atoms
    print(f"systems: {small.get_chemical_formula()} ({len(small)} atoms), {large.get_chemical_formula()} "
          f"({len(large)} atoms)", flush=True)
    rows = []
    out_dir = Path(__file__).resolve().parent / "out"
    with tempfile.TemporaryDirectory(prefix="alkit-bench-md-") as tmp:
        for level in args.levels:
            # fitted potentials are cached in bench/out (git-ignored) when trained on the cached data set
            pot = out_dir / f"bench_mtp_md_L{level}.mtp" if cached.is_file() else Path(tmp) / f"L{level}.mtp"
            t = time.perf_counter()
            if pot.is_file():
                print(f"level {level}: reusing {pot}", flush=True)
            else:
                train_mtp(train, pot, ["Ti", "H"], level=level, bfgs_maxiter=args.bfgs_maxiter, seed=0)
            t_fit = time.perf_counter() - t
            asets = {}
            for parameters in ("linear", "all"):
                t = time.perf_counter()
                asets[parameters] = ActiveSet.fit(pot, train, ["Ti", "H"], mode="nbh", parameters=parameters)
                print(f"level {level}: {asets[parameters].n_parameters} {parameters} parameters, active set "
                      f"{time.perf_counter() - t:.2f} s ({asets[parameters].algorithm}); fit {t_fit:.1f} s",
                      flush=True)
            for atoms, steps in ((small, args.steps_small), (large, args.steps_large)):
                for engine in args.engines:
                    for variant in ("plain", "linear", "all"):
                        aset = asets["linear" if variant == "plain" else variant]
                        res = run_mtp_md(atoms, pot, aset, ["Ti", "H"], temperature=100, steps=steps, engine=engine,
                                         gamma_select=1e29, gamma_break=1e30,
                                         grade_every=steps + 1 if variant == "plain" else 1, seed=0,
                                         max_temperature_factor=1e6)
                        # wall time of the whole call: setup (LAMMPS instance, step-0 grade) included
                        sps = res.steps_done / res.seconds if res.seconds > 0 else float("nan")
                        rows.append((level, len(atoms), engine, variant, res.steps_done, res.seconds, sps,
                                     res.stop_reason))
                        print(f"  L{level} {len(atoms):4d} atoms {engine:6s} {variant:6s}: {res.steps_done} steps in "
                              f"{res.seconds:6.2f} s = {sps:7.1f} steps/s ({res.stop_reason}, max gamma "
                              f"{res.max_gamma:.3g})", flush=True)
    print("\nlevel  atoms  engine   plain  graded(linear)  graded(all)   steps/s")
    for level in args.levels:
        for n in sorted({r[1] for r in rows}):
            for engine in args.engines:
                sel = {r[3]: r[6] for r in rows if r[0] == level and r[1] == n and r[2] == engine}
                if len(sel) == 3:
                    print(f"{level:5d}  {n:5d}  {engine:6s}  {sel['plain']:6.1f}  {sel['linear']:14.1f}  "
                          f"{sel['all']:11.1f}")


if __name__ == "__main__":
    main()
