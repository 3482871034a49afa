"""Labelled Ti-H data for the MTP benchmarks: CHGNet-labelled snapshots of short Langevin MD (cached as extxyz).

CHGNet is the fast stand-in labeller (its Ti-H forces are softer than DFT: fine for timing and relative errors, not
for physics). Cells: hcp, bcc or fcc Ti36 with 0-8 interstitial H (36-44 atoms, about 40), 300-1500 K, +-2 % random
strain; ``n_ti=108`` gives the 108-atom cells of the engine benchmark.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"

_CELLS = {
    36: [("hcp", (3, 3, 2)), ("bcc", (3, 3, 2)), ("fcc", (3, 3, 1))],
    108: [("hcp", (3, 3, 6)), ("bcc", (3, 3, 6)), ("fcc", (3, 3, 3))],
}


def _ti_cell(phase: str, reps: tuple[int, int, int]):
    from ase.build import bulk

    if phase == "hcp":
        return bulk("Ti", "hcp", a=2.95, c=4.68) * reps
    if phase == "bcc":
        return bulk("Ti", "bcc", a=3.28, cubic=True) * reps
    return bulk("Ti", "fcc", a=4.11, cubic=True) * reps


def make_tih_dataset(n: int, path: Path, n_ti: int = 36, max_h: int = 8, seed: int = 0, per_run: int = 25,
                     interval: int = 4) -> list:
    """``n`` CHGNet-labelled Ti(n_ti)H(0..max_h) snapshots (read from ``path`` when it holds enough)."""
    from ase.io import read, write

    if path.is_file():
        frames = read(str(path), ":")
        if len(frames) >= n:
            return frames[:n]
    import torch
    from ase import Atoms, units
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
    bar = tqdm(total=n, desc=f"labelling Ti{n_ti}H MD snapshots (CHGNet)", unit="cfg")
    run = 0
    while len(frames) < n:
        phase, reps = _CELLS[n_ti][run % len(_CELLS[n_ti])]
        atoms = _ti_cell(phase, reps)
        n_h = int(rng.integers(0, max_h + 1))
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
                         info={"temperature": temperature, "run": run, "phase": phase})
            snap.calc = SinglePointCalculator(snap, **res)
            frames.append(snap)
            bar.update(1)
            if len(frames) >= n:
                break
        run += 1
    bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp), frames, format="extxyz")
    tmp.replace(path)
    return frames
