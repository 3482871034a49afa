"""Wall time of one GPAW label (energy, forces, stress) through alkit's GPAWLabeller, serial, 1 thread.

Usage: python bench/bench_gpaw_label.py [--cell ti2|tih38] [--preset paper|cheap] [--ecut E] [--kpt-density D]
       [--spinpol 0|1]
ti2: 2-atom hcp Ti; tih38: 3x3x2 hcp Ti supercell (36 Ti) with 2 octahedral H (38 atoms).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from ase.build import bulk

from alkit.label import GPAWLabeller, kpoint_mesh


def cell(name: str):
    ti = bulk("Ti", "hcp", a=2.95, c=4.69)
    if name == "ti2":
        return ti
    a = ti.repeat((3, 3, 2))
    # octahedral sites of hcp sit at (2/3, 1/3, 1/4) and (2/3, 1/3, 3/4) of the primitive cell
    for frac in ([2 / 9, 1 / 9, 1 / 8], [5 / 9, 4 / 9, 5 / 8]):
        a.append("H")
        a.positions[-1] = np.dot(frac, a.cell.array)
    a.rattle(0.02, seed=0)
    return a


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cell", default="ti2", choices=("ti2", "tih38"))
    p.add_argument("--preset", default="cheap")
    p.add_argument("--ecut", type=float)
    p.add_argument("--kpt-density", type=float)
    p.add_argument("--spinpol", type=int, choices=(0, 1))
    a = p.parse_args()
    atoms = cell(a.cell)
    lab = GPAWLabeller(preset=a.preset, ecut=a.ecut, kpt_density=a.kpt_density,
                       spinpol=None if a.spinpol is None else bool(a.spinpol))
    s = lab.settings()
    lab.check()
    t0 = time.perf_counter()
    r = lab.label(atoms)
    wall = time.perf_counter() - t0
    print(f"cell={a.cell} natoms={len(atoms)} preset={a.preset} ecut={s['ecut']:g} kpt_density={s['kpt_density']:g} "
          f"kpts={kpoint_mesh(atoms, s['kpt_density'])} spinpol={s['spinpol']} smearing={s['smearing']}")
    fmax = "n/a" if r.forces is None else f"{float(np.abs(r.forces).max()):.4g}"
    print(f"status={r.status} energy={r.energy} max|F|={fmax} "
          f"reason={r.reason!r} wall={wall:.1f}s load_avg={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
