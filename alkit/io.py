"""Structure I/O and checks shared by every stage. ASE ``Atoms`` is alkit's common currency."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms

from alkit.errors import InputError


def to_atoms(structure) -> Atoms:
    """Return an ASE ``Atoms`` for an ``Atoms`` or a pymatgen ``Structure``/``Molecule``."""
    if isinstance(structure, Atoms):
        return structure
    try:
        from pymatgen.core import IStructure, Molecule, Structure
    except ImportError:  # pragma: no cover - pymatgen is a hard dependency
        Structure = IStructure = Molecule = ()
    if isinstance(structure, (Structure, IStructure, Molecule)):
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_atoms(structure)
    raise InputError(f"expected ase.Atoms or pymatgen Structure, got {type(structure).__name__}")


def to_structure(atoms):
    """Return a pymatgen ``Structure`` for an ``Atoms`` (or pass a ``Structure`` through)."""
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(atoms, Structure):
        return atoms
    return AseAtomsAdaptor.get_structure(to_atoms(atoms))


def structure_hash(atoms: Atoms, decimals: int = 6) -> str:
    """A stable content hash of a structure (numbers, positions, cell, pbc), rounded to ``decimals``.

    Used as a cache key and to recognise a structure that was already labelled.
    """
    atoms = to_atoms(atoms)
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(atoms.positions, dtype=np.float64), decimals).tobytes())
    h.update(np.round(np.asarray(atoms.cell.array, dtype=np.float64), decimals).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.int8).tobytes())
    return h.hexdigest()[:32]


def min_distance(atoms: Atoms) -> float:
    """Shortest interatomic distance (minimum image); ``inf`` for a single atom with no periodic images."""
    from ase.neighborlist import neighbor_list

    atoms = to_atoms(atoms)
    if len(atoms) == 0:
        return float("inf")
    cutoff = 6.0
    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else float("inf")


def check_structure(atoms: Atoms, min_dist: float = 0.5, name: str = "structure") -> None:
    """Raise InputError if ``atoms`` is empty, has non-finite positions/cell, or atoms closer than ``min_dist`` Å."""
    atoms = to_atoms(atoms)
    if len(atoms) == 0:
        raise InputError(f"{name} has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise InputError(f"{name} has non-finite positions")
    if np.any(atoms.pbc) and (not np.all(np.isfinite(atoms.cell.array)) or abs(atoms.cell.volume) < 1e-8):
        raise InputError(f"{name} is periodic but its cell is degenerate: {atoms.cell.cellpar().round(3).tolist()}")
    d = min_distance(atoms)
    if d < min_dist:
        raise InputError(f"{name} ({atoms.get_chemical_formula()}) has overlapping atoms: {d:.3f} Å < {min_dist} Å")


def read_structures(paths: str | os.PathLike | Iterable[str | os.PathLike], index: str = ":") -> list[Atoms]:
    """Read every structure from one or more files in any format ASE reads (extxyz, traj, db, POSCAR, cif ...).

    Raises InputError naming the file that is missing or unreadable.
    """
    from ase.io import read

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Atoms] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError(f"structure file {path} does not exist")
        try:
            frames = read(str(path), index=index)
        except Exception as exc:  # ASE raises many types; the user needs the file name and the reason
            raise InputError(f"cannot read structures from {path}: {type(exc).__name__}: {exc}") from exc
        if isinstance(frames, Atoms):
            frames = [frames]
        if not frames:
            raise InputError(f"structure file {path} holds no structures")
        out.extend(frames)
    return out


def write_structures(path: str | os.PathLike, structures: Sequence[Atoms], append: bool = False) -> None:
    """Write structures (with any attached energies/forces/stress) to ``path`` in a format chosen by its suffix."""
    from ase.io import write

    write(str(path), [to_atoms(s) for s in structures], append=append)
