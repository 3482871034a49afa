"""Benchmark: MTP MD steps/s with and without on-the-fly MaxVol grading, at 38, 300 and 2,000 atoms, for the three
engines: ASE (alkit's calculator), LAMMPS with ``fix external`` (the MTP evaluated in Python each step) and LAMMPS
with alkit's plugin (``pair_style mtp`` + ``compute mtp/grade``) on 1 and 2 MPI ranks, next to the anchor of the
plugin issue: ``fix external`` evaluating motep's calculator, the path alkit had when that issue was filed
(37 steps/s measured then at level 16 and 300 atoms).

    nice -n 10 python bench/bench_mtp_md.py [--levels 10 16] [--sizes 38 300 2000] [--repeats 3]

The potentials are fitted on 300 of ``bench/_tih_data.py``'s CHGNet-labelled Ti-H cells (their quality does not
change the cost of a step; cached in bench/out). NVT at 100 K on hcp Ti with a few H, gamma thresholds out of reach
so every run goes its full length:

- "plain":  no grade (the plugin without an active set, fix external without grading; ASE grades only the starting
            structure);
- "linear": grade every step on the linear coefficients (the default active set);
- "all":    grade every step on all coefficients (radial ones included).

ASE rates are wall steps/s of :func:`alkit.mtp.md.run_mtp_md` (set-up included). Every LAMMPS rate is the time of
LAMMPS's ``run`` loop alone after a 5-step warm-up: fix external with alkit's calculator grading every step (as
exploration does, minus its Python-side monitor, so this is generous to fix external), the motep anchor (energy and
forces only: again generous), and the plugin in a standalone script (``mpirun -np 1|2``), as a production run is.
Each figure is the median of ``--repeats`` runs, interleaved, because this machine is shared and noisy; the spread
(min-max) goes to the JSON file.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tih_data import OUT, make_tih_dataset  # noqa: E402

SPECIES = ["Ti", "H"]
MPI_SCRIPT = r'''
import json, sys, time
import numpy as np
from ase.io import read
from alkit.lammps import plugin_path
from alkit.mtp.lammps_engine import _System, import_lammps
structure, pot, als, steps, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
import_lammps()
atoms = read(structure)
with _System(atoms, None, timestep_fs=0.5, velocities=False) as sysm:
    lmp = sysm.lmp
    grade = f" als {als}" if als != "none" else ""
    lmp.commands_list([f"plugin load {plugin_path()}", f"pair_style mtp {pot}{grade}",
                       f"pair_coeff * * {' '.join(sysm.elements)}",
                       "velocity all create 100 12345 mom yes rot yes", "fix nve all nve",
                       "fix lang all langevin 100 100 0.1 4242 zero yes"])
    if grade:
        lmp.commands_list(["compute g all mtp/grade", "variable stop equal c_g[1]>1e30",
                           "fix halt all halt 1 v_stop > 0.5 error continue"])
    lmp.command("run 5")
    t0 = time.perf_counter()
    lmp.command(f"run {steps}")
    dt = time.perf_counter() - t0
    if lmp.extract_setting("world_rank") == 0:
        json.dump({"steps_per_s": steps / dt, "ranks": lmp.extract_setting("world_size")}, open(out, "w"))
'''


def system(n_atoms: int, seed: int = 1):
    """hcp Ti with ~4 % H on well-separated interstitial sites, about ``n_atoms`` atoms."""
    from ase import Atoms
    from ase.build import bulk

    reps = {38: (3, 3, 1), 300: (6, 4, 3), 2000: (10, 6, 8)}[n_atoms]
    ti = bulk("Ti", "hcp", a=2.95, c=4.68, orthorhombic=True).repeat(reps)
    n_h = n_atoms - len(ti)
    rng = np.random.default_rng(seed)
    a = ti.copy()
    for p in rng.uniform(0, 1, (50 * n_h + 1000, 3)) @ ti.cell.array:
        if (a.numbers == 1).sum() >= n_h:
            break
        trial = a + Atoms("H", [p])
        d = trial.get_distances(len(a), list(range(len(a))), mic=True)
        if np.all(d[a.numbers == 22] > 1.85) and np.all(d[a.numbers == 1] > 2.5):
            a = trial
    return a


def _lammps_loop_rate(atoms, calc, steps: int) -> float:
    """steps/s of LAMMPS's run loop with ``calc`` coupled through fix external (NVE + Langevin at 100 K)."""
    from alkit.mtp.lammps_engine import _initial_velocities, _System

    with _System(_initial_velocities(atoms, 100.0, 0), calc, timestep_fs=0.5, velocities=True) as sysm:
        sysm.lmp.commands_list(["fix nve all nve", "fix lang all langevin 100 100 0.1 4242 zero yes", "run 5"])
        t0 = time.perf_counter()
        sysm.lmp.command(f"run {steps}")
        dt = time.perf_counter() - t0
        if sysm.error is not None:
            raise sysm.error
    return steps / dt


def external_rate(atoms, aset, graded: bool, steps: int) -> float:
    """fix external with alkit's calculator (the plugin's fallback), grading every step if ``graded``."""
    from alkit.mtp.engine import MTPCalculator

    calc = MTPCalculator(active_set=aset, grade_next=graded, on_close_atoms="ignore")
    return _lammps_loop_rate(atoms, calc, steps)


def motep_external_rate(atoms, pot: Path, steps: int) -> float:
    """The issue's anchor: fix external evaluating motep's calculator (energy and forces, no grade)."""
    from motep.calculator import MTP

    from alkit.mtp.potential import MTPPotential

    return _lammps_loop_rate(atoms, MTP(MTPPotential.read(pot).to_motep(SPECIES), engine="cext", mode="run"), steps)


def plugin_rate(atoms, pot, als, steps: int, ranks: int, tmp: Path) -> float:
    from ase.io import write

    write(tmp / "s.traj", atoms)
    script = tmp / "mpi_md.py"
    script.write_text(MPI_SCRIPT)
    out = tmp / "rate.json"
    cmd = [sys.executable, str(script), str(tmp / "s.traj"), str(pot), str(als) if als else "none", str(steps),
           str(out)]
    if ranks > 1:
        cmd = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return float(json.loads(out.read_text())["steps_per_s"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, nargs="+", default=[10, 16])
    ap.add_argument("--sizes", type=int, nargs="+", default=[38, 300, 2000])
    ap.add_argument("--steps", type=int, nargs=3, default=[400, 300, 60], metavar=("S38", "S300", "S2000"))
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is reported)")
    ap.add_argument("--json", default=str(OUT / "bench_mtp_md.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from alkit.mtp.fit import train_mtp
    from alkit.mtp.grade import ActiveSet
    from alkit.mtp.md import run_mtp_md

    frames = make_tih_dataset(300, OUT / "tih40_chgnet.extxyz")
    steps_of = dict(zip([38, 300, 2000], args.steps))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="alkit-bench-md-") as tmpd:
        tmp = Path(tmpd)
        for level in args.levels:
            pot = OUT / f"bench_mtp_md_L{level}.mtp"
            if not pot.is_file():
                train_mtp(frames, pot, SPECIES, level=level, bfgs_maxiter=100, seed=0, threads=2)
            asets = {p: ActiveSet.fit(pot, frames, SPECIES, mode="nbh", parameters=p) for p in ("linear", "all")}
            for p, a in asets.items():
                a.save(tmp / f"L{level}_{p}.als")
            for n in args.sizes:
                atoms = system(n)
                steps = steps_of[n]
                runs: dict[tuple[str, str], list[float]] = {}
                for _ in range(args.repeats):
                    runs.setdefault(("motep external", "plain"), []).append(motep_external_rate(atoms, pot, steps))
                    for variant in ("plain", "linear", "all"):
                        aset = asets["linear" if variant == "plain" else variant]
                        res = run_mtp_md(atoms, pot, aset, SPECIES, temperature=100, steps=steps, engine="ase",
                                         gamma_select=1e29, gamma_break=1e30,
                                         grade_every=steps + 1 if variant == "plain" else 1, seed=0,
                                         max_temperature_factor=1e6)
                        assert res.stop_reason == "completed", res.stop_reason
                        runs.setdefault(("ase", variant), []).append(res.steps_done / res.seconds)
                        runs.setdefault(("external", variant), []).append(
                            external_rate(atoms, aset, variant != "plain", steps))
                        als = None if variant == "plain" else tmp / f"L{level}_{variant}.als"
                        for ranks in (1, 2):
                            runs.setdefault((f"plugin x{ranks}", variant), []).append(
                                plugin_rate(atoms, pot, als, 2 * steps, ranks, tmp))
                rate = {k: float(np.median(v)) for k, v in runs.items()}
                row = {"level": level, "atoms": len(atoms), "repeats": args.repeats,
                       "rates": {f"{e}|{v}": r for (e, v), r in rate.items()},
                       "spread": {f"{e}|{v}": [min(r), max(r)] for (e, v), r in runs.items()}}
                rows.append(row)
                for variant in ("plain", "linear", "all"):
                    print(f"L{level} {len(atoms):5d} atoms {variant:6s}: " + ", ".join(
                        f"{e} {rate[(e, variant)]:7.1f}" for e in ("ase", "external", "plugin x1", "plugin x2"))
                          + f" steps/s (motep anchor {rate[('motep external', 'plain')]:.1f})", flush=True)
    Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n| level | atoms | grade | ASE | fix external, motep (anchor) | fix external, alkit | plugin, 1 rank | "
          "plugin, 2 ranks | plugin / anchor | plugin / fix external alkit | 2 ranks / 1 rank |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        r = row["rates"]
        anchor = r["motep external|plain"]
        for v in ("plain", "linear", "all"):
            print(f"| {row['level']} | {row['atoms']} | {v} | {r['ase|' + v]:.0f} | {anchor:.0f} | "
                  f"{r['external|' + v]:.0f} | {r['plugin x1|' + v]:.0f} | {r['plugin x2|' + v]:.0f} | "
                  f"{r['plugin x1|' + v] / anchor:.1f}x | {r['plugin x1|' + v] / r['external|' + v]:.1f}x | "
                  f"{r['plugin x2|' + v] / r['plugin x1|' + v]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
