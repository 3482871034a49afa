"""MLIP-2 ``.cfg`` training sets: read and write labelled structures.

Why alkit has its own reader/writer instead of ``motep.io.mlip.cfg``: motep 0.2.0 fails on numbers in scientific
notation (``1e-05``), writes positions/forces with 6 and stress with 5 decimals (the round trip loses precision),
silently attaches a calculator to the Atoms it writes, and raises bare ``ValueError``/``RuntimeError`` on a corrupt
file. The format is the same, so files written here are read by motep and MLIP-2 and vice versa.

Units and conventions (as in MLIP-2): positions in Å, ``Energy`` in eV, forces in eV/Å, ``PlusStress`` is the virial
``-stress * volume`` in eV (ASE stress is eV/Å^3, positive when tensile), ``type`` is the index into ``species``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols

from alkit._util import species_numbers, voigt_stress
from alkit.errors import InputError

_VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")


def _species_numbers(species: Sequence[str | int] | None) -> list[int] | None:
    """Atomic number of each type index (None: types are atomic numbers), checked by the one species rule."""
    return None if species is None else species_numbers(species, InputError)


def read_cfg(path: str | os.PathLike, species: Sequence[str | int] | None) -> list[Atoms]:
    """Read every configuration of an MLIP-2 ``.cfg`` file.

    ``species[t]`` is the element of type ``t`` (symbols or atomic numbers). With ``species=None`` type ``t`` becomes
    atomic number ``t`` (MLIP-2 files hold no element names). Energies, forces and stress become a
    ``SinglePointCalculator``; ``Feature`` lines go to ``atoms.info``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f".cfg file {path} does not exist")
    numbers_of_type = _species_numbers(species)
    lines = path.read_text(errors="replace").splitlines()
    out: list[Atoms] = []
    k = 0
    n = len(lines)
    while k < n:
        if lines[k].strip().startswith("BEGIN_CFG"):
            start = k
            k += 1
            block = []
            while k < n and not lines[k].strip().startswith("END_CFG"):
                block.append(lines[k])
                k += 1
            if k >= n:
                raise InputError(f"{path}: configuration starting at line {start + 1} has no END_CFG")
            try:
                out.append(_parse_block(block, numbers_of_type))
            except InputError as exc:
                raise InputError(f"{path}: configuration {len(out) + 1} (line {start + 1}): {exc}") from None
            except (ValueError, IndexError, KeyError) as exc:
                raise InputError(
                    f"{path}: configuration {len(out) + 1} (line {start + 1}) is corrupt: {type(exc).__name__}: {exc}"
                ) from None
        elif lines[k].strip() and not lines[k].lstrip().startswith("#") and not out:
            raise InputError(f"{path} is not an MLIP-2 .cfg file: line {k + 1} is {lines[k].strip()[:60]!r}")
        k += 1
    if not out:
        raise InputError(f"{path} holds no configurations (no BEGIN_CFG ... END_CFG block)")
    return out


def _parse_block(block: list[str], numbers_of_type: list[int] | None) -> Atoms:
    size = None
    cell = None
    columns: list[str] | None = None
    rows: list[list[float]] = []
    energy = None
    plus_stress = None
    info: dict = {}
    i = 0
    while i < len(block):
        words = block[i].split()
        if not words:
            i += 1
            continue
        key = words[0]
        if key == "Size":
            size = int(block[i + 1].split()[0])
            if size <= 0:
                raise InputError(f"Size is {size}")
            i += 2
        elif key in ("Supercell", "SuperCell"):
            vecs = []
            i += 1
            while i < len(block) and len(block[i].split()) == 3 and _all_float(block[i].split()):
                vecs.append([float(x) for x in block[i].split()])
                i += 1
            if len(vecs) != 3:
                raise InputError(f"Supercell has {len(vecs)} lattice vectors; alkit handles 3-D periodic cells only")
            cell = np.array(vecs)
        elif key in ("AtomData:", "Atomic_data:"):
            if size is None:
                raise InputError("AtomData before Size")
            columns = words[1:]
            for j in range(size):
                vals = block[i + 1 + j].split()
                if len(vals) != len(columns):
                    raise InputError(f"atom line {j + 1} has {len(vals)} values for {len(columns)} columns")
                rows.append([float(v) for v in vals])
            i += 1 + size
        elif key == "Energy":
            energy = float(block[i + 1].split()[0])
            i += 2
        elif key == "PlusStress:":
            comps = words[1:]
            vals = [float(v) for v in block[i + 1].split()]
            plus_stress = dict(zip(comps, vals, strict=True))
            i += 2
        elif key == "Feature":
            if len(words) >= 3:
                info[words[1]] = _feature_value(" ".join(words[2:]))
            i += 1
        else:
            i += 1
    if columns is None or size is None:
        raise InputError("no Size/AtomData section")
    data = np.array(rows, dtype=float)
    col = {c: j for j, c in enumerate(columns)}
    if "type" not in col:
        raise InputError("AtomData has no 'type' column")
    types = data[:, col["type"]].astype(int)
    if numbers_of_type is not None:
        if types.min() < 0 or types.max() >= len(numbers_of_type):
            raise InputError(
                f"atom type {int(types.max())} but only {len(numbers_of_type)} species given "
                f"({[chemical_symbols[z] for z in numbers_of_type]})"
            )
        numbers = [numbers_of_type[t] for t in types]
    else:
        numbers = types.tolist()
    if all(c in col for c in ("cartes_x", "cartes_y", "cartes_z")):
        pos = data[:, [col["cartes_x"], col["cartes_y"], col["cartes_z"]]]
        atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=cell is not None)
    elif all(c in col for c in ("direct_x", "direct_y", "direct_z")):
        if cell is None:
            raise InputError("direct coordinates without a Supercell")
        frac = data[:, [col["direct_x"], col["direct_y"], col["direct_z"]]]
        atoms = Atoms(numbers=numbers, scaled_positions=frac, cell=cell, pbc=True)
    else:
        raise InputError("AtomData has no cartes_x/y/z or direct_x/y/z columns")
    results: dict = {}
    if energy is not None:
        results["energy"] = energy
        results["free_energy"] = energy
    if all(c in col for c in ("fx", "fy", "fz")):
        results["forces"] = data[:, [col["fx"], col["fy"], col["fz"]]].copy()
    if plus_stress is not None and cell is not None:
        missing = [c for c in _VOIGT if c not in plus_stress]
        if missing:
            raise InputError(f"PlusStress lacks components {missing}")
        virial = np.array([plus_stress[c] for c in _VOIGT])
        results["stress"] = -virial / atoms.get_volume()
    if "nbh_grades" in col:
        results["nbh_grades"] = data[:, col["nbh_grades"]].copy()
    if "MV_grade" in info:
        results["MV_grade"] = float(info.pop("MV_grade"))
    atoms.info.update(info)
    if results:
        grades = {k: results.pop(k) for k in ("nbh_grades", "MV_grade") if k in results}
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.calc.results.update(grades)  # not ASE properties; kept as MLIP-2/motep do
    return atoms


def _all_float(words: list[str]) -> bool:
    try:
        [float(w) for w in words]
    except ValueError:
        return False
    return True


def _feature_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def write_cfg(path: str | os.PathLike, structures: Sequence[Atoms], species: Sequence[str | int], append: bool = False) -> Path:
    """Write structures (with any attached energy/forces/stress) to an MLIP-2 ``.cfg`` file.

    Type indices follow ``species``; an element not in ``species`` is an error. Numbers are written with full
    precision. Scalar ``atoms.info`` entries become ``Feature`` lines.
    """
    path = Path(path)
    numbers_of_type = _species_numbers(species)
    parts = []
    for k, atoms in enumerate(structures):
        unknown = sorted(set(atoms.numbers.tolist()) - set(numbers_of_type))
        if unknown:
            raise InputError(
                f"structure {k} ({atoms.get_chemical_formula()}) has species "
                f"{[chemical_symbols[z] for z in unknown]} not in {list(species)}"
            )
        parts.append(_format_block(atoms, numbers_of_type))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w") as fh:
        fh.write("".join(parts))
    return path


def _results(atoms: Atoms) -> dict:
    calc = atoms.calc
    return dict(calc.results) if calc is not None and getattr(calc, "results", None) else {}


def _num(x) -> str:
    """Shortest text that reads back to exactly the same float, without an exponent (motep's reader and many
    MLIP-2 scripts do not accept ``1e-05``)."""
    return np.format_float_positional(float(x), unique=True, trim="-")


def _format_block(atoms: Atoms, numbers_of_type: list[int]) -> str:
    res = _results(atoms)
    periodic = bool(np.all(atoms.pbc))
    if np.any(atoms.pbc) and not periodic:
        raise InputError(f"{atoms.get_chemical_formula()}: .cfg supports fully periodic or non-periodic cells, pbc={atoms.pbc}")
    out = ["BEGIN_CFG", " Size", f"    {len(atoms)}"]
    if periodic:
        out.append(" Supercell")
        out += ["    " + " ".join(_num(x) for x in v) for v in atoms.cell.array]
    forces = res.get("forces")
    header = " AtomData:  id type cartes_x cartes_y cartes_z"
    if forces is not None:
        header += " fx fy fz"
    out.append(header)
    types = [numbers_of_type.index(int(z)) for z in atoms.numbers]
    for i, (t, p) in enumerate(zip(types, atoms.positions)):
        line = f"    {i + 1} {t} " + " ".join(_num(x) for x in p)
        if forces is not None:
            line += " " + " ".join(_num(x) for x in forces[i])
        out.append(line)
    energy = res.get("energy", res.get("free_energy"))
    if energy is not None:
        out += [" Energy", f"    {_num(energy)}"]
    stress = res.get("stress")
    if stress is not None and periodic:
        stress = np.asarray(stress, dtype=float)
        if stress.shape == (3, 3):
            stress = voigt_stress(stress)  # ASE's Voigt order is MLIP-2's (_VOIGT)
        virial = -stress * atoms.get_volume()
        out.append(" PlusStress:  " + " ".join(_VOIGT))
        out.append("    " + " ".join(_num(x) for x in virial))
    for key, value in atoms.info.items():
        if isinstance(value, (bool, np.bool_)):
            continue
        if isinstance(value, (int, float, np.integer, np.floating)) or (isinstance(value, str) and value and "\n" not in value):
            if " " in str(key):
                continue
            out.append(f" Feature   {key}\t{value}")
    out.append("END_CFG")
    return "\n".join(out) + "\n\n"
