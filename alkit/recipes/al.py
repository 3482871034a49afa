"""Aluminium recipe: the recipe pattern for a second chemistry (single element, defects and surfaces).

Scenarios: fcc bulk, a bulk vacancy, a (111) slab with vacuum (NVT: the slab's cell must not shrink), and a
Sigma-5 (310)[001] tilt grain boundary, each at 300, 900 and 1500 K (above the 933 K melting point: liquid Al).

Presets: ``quick`` (small cells, CHGNet labels, minutes to an hour on 2 cores), ``paper-like`` (larger cells,
longer runs, GPAW PBE labels), ``tiny`` (for tests).

Usage: ``alkit run al --preset quick --mode direct``.
"""
from __future__ import annotations

import numpy as np
from ase.build import bulk, fcc111

from alkit.campaign import ALConfig
from alkit.scenarios import Scenario

PRESETS = {
    "quick": "Al bulk/vacancy/(111) slab/GB at 300, 900 and 1500 K, CHGNet labels, MTP level 12 fitted to convergence",
    "paper-like": "larger Al cells and 10 ps runs, GPAW PBE labels, MTP level 16",
    "tiny": "Al bulk and vacancy at 300 K in 4-atom-cubic x2 cells (tests)",
}

A_AL = 4.04  # Å, fcc Al lattice constant (experiment 4.05 Å at room temperature; PBE 4.04 Å)


def structures(rep: int) -> dict:
    """Starting structures, with ``rep`` repeats of the 4-atom cubic cell per direction for the bulk cells."""
    cell = bulk("Al", "fcc", a=A_AL, cubic=True).repeat(rep)
    vac = cell.copy()
    del vac[0]
    slab = fcc111("Al", size=(rep, rep, 2 * rep), a=A_AL, vacuum=6.0, periodic=True)
    gb = grain_boundary(rep)
    return {"bulk": (cell, "npt"), "vacancy": (vac, "npt"), "slab111": (slab, "nvt"), "gb-s5": (gb, "npt")}


def grain_boundary(rep: int):
    """Sigma-5 (310)[001] symmetric tilt GB of Al via pymatgen's generator (two boundaries per periodic cell)."""
    from pymatgen.core.interface import GrainBoundaryGenerator
    from pymatgen.io.ase import AseAtomsAdaptor

    conv = AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=A_AL, cubic=True))
    gen = GrainBoundaryGenerator(conv)
    angle = float(2 * np.degrees(np.arctan(1 / 3)))  # 36.87 deg: Sigma-5 about [001]
    gb = gen.gb_from_parameters([0, 0, 1], angle, expand_times=max(2, rep), plane=[3, 1, 0], rm_ratio=0.7)
    return AseAtomsAdaptor.get_atoms(gb)


def scenarios(rep: int, temperatures, steps: int, interval: int, kinds=None) -> list[Scenario]:
    out = []
    for name, (atoms, ensemble) in structures(rep).items():
        if kinds and name not in kinds:
            continue
        for t in temperatures:
            out.append(Scenario(id=f"al-{name}-{t:g}K", atoms=atoms.copy(), temperature=float(t), ensemble=ensemble,
                                steps=steps, snapshot_interval=interval, tags={"system": "Al", "kind": name}))
    return out


def build(preset: str, mode: str) -> ALConfig:
    if preset == "quick":
        return ALConfig(
            name="al-quick", species=["Al"], mode=mode,
            scenarios=scenarios(2, (300, 900, 1500), steps=500, interval=100),
            pool_scenarios=scenarios(2, (300, 900, 1500), steps=300, interval=10),
            n_clusters=40, labeller="chgnet", mtp_level=12, al_budget=10, max_iterations=10,
            max_collect_per_scenario=10,
        )
    if preset == "paper-like":
        return ALConfig(
            name="al-paper-like", species=["Al"], mode=mode,
            scenarios=scenarios(3, (300, 900, 1500), steps=20000, interval=100),
            pool_scenarios=scenarios(3, (300, 900, 1500), steps=20000, interval=1),
            pool_per_trajectory=1000, n_clusters=500, labeller="gpaw", labeller_kwargs={"preset": "paper"},
            mtp_level=16, bfgs_maxiter=1000, al_budget=50, max_iterations=30, explore_engine="lammps",
            executor="dask", n_workers=32,
        )
    if preset == "tiny":
        kinds = ("bulk", "vacancy")
        return ALConfig(
            name="al-tiny", species=["Al"], mode=mode,
            scenarios=scenarios(2, (300,), steps=100, interval=10, kinds=kinds),
            pool_scenarios=scenarios(2, (300,), steps=60, interval=5, kinds=kinds),
            n_clusters=3, labeller="chgnet", mtp_level=6, al_budget=6, max_iterations=6, executor="serial",
        )
    raise ValueError(f"unknown preset {preset!r}")
