"""Are alkit's level definitions the same functions as MLIP-2's? Compare against MLIP-2's ``untrained_mtps``.

MLIP-2 is not a dependency (and its files are not shipped): point ``--mlip2-dir`` at a folder holding MLIP-2's
``NN.mtp`` level files. For each level both files get the same random radial coefficients; the per-atom values of
every scalar basis function are computed with alkit's core on random neighbourhoods, and each MLIP-2 scalar is
matched with the alkit scalar it is proportional to. Then the E+F cost of a 38-atom Ti-H cell through each tree.

    python bench/compare_mlip2_levels.py --mlip2-dir /path/to/mlip-2/untrained_mtps --levels 10 12 14 16 18 20
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np


def _mlip2_level(path: Path, species_count: int):
    from alkit.mtp.potential import MTPPotential

    text = path.read_text().replace("\r", "")
    text = re.sub(r"species_count = \d+", f"species_count = {species_count}", text)
    text = re.sub(r"scaling = .*\n", "", text)  # some copies carry an edited header
    pot = MTPPotential.from_text(text, str(path))
    pot.min_dist, pot.max_dist = 1.0, 5.0
    return pot


def _rank(x: np.ndarray) -> int:
    s = np.linalg.svd(x / np.abs(x).max(axis=0), compute_uv=False)
    return int((s > 1e-9 * s[0]).sum())


def main(argv=None) -> int:
    from ase import Atoms
    from ase.build import bulk

    from alkit.mtp.engine import MTPEngine
    from alkit.mtp.potential import MTPPotential

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mlip2-dir", required=True, type=Path)
    ap.add_argument("--levels", type=int, nargs="+", default=[10, 12, 14, 16, 18, 20])
    args = ap.parse_args(argv)
    envs = [Atoms("Ti14", positions=np.random.default_rng(s).uniform(0, 4.2, (14, 3)), cell=[30, 30, 30], pbc=False)
            for s in range(40)]
    cell = bulk("Ti", "hcp", a=2.95, c=4.68) * (3, 3, 2)
    cell += Atoms("H2", positions=[[1.0, 1.0, 1.0], [2.5, 1.3, 3.0]])
    cell.rattle(0.05, seed=0)
    print("| level | moments / products MLIP-2 | alkit | scalars | matched 1:1 (factor 1) | joint rank | "
          "E+F µs/atom MLIP-2 tree | alkit tree |")
    print("|---|---|---|---|---|---|---|---|")
    for level in args.levels:
        path = args.mlip2_dir / f"{level:02d}.mtp"
        if not path.is_file():
            print(f"| {level} | (no {path.name}) |")
            continue
        m1, a1 = _mlip2_level(path, 1), MTPPotential.untrained(level, ["Ti"], cutoff=5.0, min_dist=1.0)
        rad = np.random.default_rng(level).normal(size=(1, 1, a1.radial_funcs_count, a1.radial_basis_size))
        cols = {}
        for name, p in (("m", m1), ("a", a1)):
            p.radial_coeffs, p.species_coeffs, p.moment_coeffs = rad.copy(), np.zeros(1), np.ones(p.n_scalar)
            eng = MTPEngine(p, ["Ti"])
            cols[name] = np.vstack([eng.compute(e, rows="linear")["rows"][:, : p.n_scalar] for e in envs])
        A, M = cols["a"], cols["m"]
        match = [int(np.argmin(np.abs(M[:, [i]] - A).max(axis=0))) for i in range(M.shape[1])]
        exact = sum(np.allclose(M[:, i], A[:, j], rtol=1e-9, atol=1e-12 * np.abs(M[:, i]).max())
                    for i, j in enumerate(match))
        bijective = len(set(match)) == len(match)
        # the same potential through both trees: MLIP-2's moment coefficients are alkit's, permuted
        m2, a2 = _mlip2_level(path, 2), MTPPotential.untrained(level, ["Ti", "H"], cutoff=5.0, min_dist=1.0)
        m2.potential_tag = a2.potential_tag
        r2 = np.random.default_rng(1).normal(size=(2, 2, a2.radial_funcs_count, a2.radial_basis_size)) * 0.1
        a2.radial_coeffs, a2.species_coeffs = r2.copy(), np.zeros(2)
        a2.moment_coeffs = np.random.default_rng(2).normal(size=a2.n_scalar)
        m2.radial_coeffs, m2.species_coeffs, m2.moment_coeffs = r2.copy(), np.zeros(2), a2.moment_coeffs[match]
        cost = {}
        for name, p in (("m", m2), ("a", a2)):
            eng = MTPEngine(p, ["Ti", "H"])
            eng.compute(cell)
            t0, k = time.process_time(), 0
            while time.process_time() - t0 < 2.0:
                eng.compute(cell)
                k += 1
            cost[name] = ((time.process_time() - t0) / k / len(cell) * 1e6, eng.compute(cell)["energy"])
        same_e = abs(cost["m"][1] - cost["a"][1]) <= 1e-10 * max(1.0, abs(cost["a"][1]))
        print(f"| {level} | {m1.alpha_moments_count} / {len(m1.alpha_index_times)} | {a1.alpha_moments_count} / "
              f"{len(a1.alpha_index_times)} | {a1.n_scalar} | {exact}/{M.shape[1]}{' bijective' if bijective else ''}"
              f"{', same energy' if same_e else ', ENERGY DIFFERS'} | {_rank(np.hstack([A, M]))} (each {_rank(A)}, "
              f"{_rank(M)}) | {cost['m'][0]:.1f} | {cost['a'][0]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
