"""Evaluating an MTP with alkit's compiled core: :class:`MTPEngine` (one structure at a time, persistent neighbour
list) and :class:`MTPCalculator`, the one ASE calculator of alkit's MTPs (energies, forces, stress and, given an
active set, the extrapolation grade from the same pass).

Distances. MLIP-2 sets a trained potential's ``min_dist`` to the shortest distance in its training set, so its own
training structures touch it; contacts below ``min_dist`` are extrapolation, which the grade measures. Hence the
default policy ``on_close_atoms="warn"``: a contact below ``min_dist`` is logged (once per calculator) and
evaluated; only atoms closer than :data:`COLLAPSE_FRACTION` x ``min_dist`` (a collapsed structure) are refused.
"""
from __future__ import annotations

import logging
import os
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from alkit._util import species_numbers, voigt_stress
from alkit.errors import ConfigError, InputError
from alkit.mtp.potential import MTPPotential, read_potential

log = logging.getLogger(__name__)

#: Structures with atoms closer than this fraction of the potential's min_dist are refused as collapsed.
COLLAPSE_FRACTION = 0.5
#: Row sets for the MaxVol grade: derivatives of the site energies w.r.t. the linear (moment + species)
#: coefficients, or w.r.t. all coefficients (radial ones included).
ROW_MODES = {None: 0, "none": 0, "linear": 1, "all": 2}
CLOSE_POLICIES = ("error", "warn", "ignore")


def core_cell(atoms: Atoms) -> np.ndarray:
    """The cell handed to the core: periodic rows as they are; a non-periodic row that is zero or (nearly) in the
    plane of the others is replaced by a unit normal (only periodic rows create images)."""
    cell = np.array(atoms.cell.array, dtype=float)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.all() or not pbc.any():
        return cell
    for d in np.where(~pbc)[0]:
        a, b = cell[(d + 1) % 3], cell[(d + 2) % 3]
        n = np.cross(a, b)
        vol = abs(np.dot(n, cell[d]))
        if not np.linalg.norm(n) > 0:  # other rows degenerate too (e.g. a wire): pick any orthonormal completion
            n = np.eye(3)[d]
        if vol < 1e-8 * max(1.0, np.linalg.norm(a) * np.linalg.norm(b) * np.linalg.norm(cell[d])):
            cell[d] = n / np.linalg.norm(n)
    return cell


class SpeciesMap:
    """Atomic numbers -> MTP type indices (species in type order, checked by the one species rule)."""

    def __init__(self, species: Sequence[str]):
        self.numbers = species_numbers(species, ConfigError)
        self.species = [chemical_symbols[z] for z in self.numbers]
        self._lut = np.full(119, -1, dtype=np.int32)
        for t, z in enumerate(self.numbers):
            self._lut[z] = t

    def types(self, atoms: Atoms, name: str = "structure") -> np.ndarray:
        z = np.asarray(atoms.numbers)
        t = self._lut[np.clip(z, 0, 118)]
        if (t < 0).any() or (z > 118).any():
            extra = sorted(set(int(x) for x in z[t < 0]))
            raise InputError(f"{name} ({atoms.get_chemical_formula()}) contains "
                             f"{[chemical_symbols[x] if x < len(chemical_symbols) else x for x in extra]}, "
                             f"which the potential (species {self.species}) does not know")
        return t


class MTPEngine:
    """Energies, forces, virial and per-atom basis rows of one structure at a time, from the compiled core.

    Keeps a Verlet neighbour list (cutoff + ``skin``) between calls and rebuilds it only when an atom or the cell
    has moved more than half the skin (MD steps then cost no neighbour search). ``n_threads`` threads share the
    atoms of a structure (results are identical for any thread count).
    """

    def __init__(self, potential: MTPPotential, species: Sequence[str], n_threads: int = 1, skin: float = 1.0):
        from alkit.mtp import _core

        potential.require_trained()
        self.potential = potential
        self.species_map = SpeciesMap(potential.resolve_species(species))
        self.theta = np.ascontiguousarray(potential.theta, dtype=float)
        self.n_threads = max(1, int(n_threads))
        self._calc = _core.Calculator(potential.basis, float(skin))
        self.last_min_distance = float("inf")

    @property
    def species(self) -> list[str]:
        return self.species_map.species

    @property
    def n_builds(self) -> int:
        """Neighbour-list builds so far."""
        return int(self._calc.n_builds)

    def compute(self, atoms: Atoms, rows: str | None = None, forces: bool = True) -> dict:
        """``energy``, ``energies``, ``forces``, ``virial`` (3x3, eV), ``stress`` (Voigt, eV/Å^3; fully periodic cells
        only), ``min_distance`` and, with ``rows="linear"|"all"``, ``rows`` (natoms x p, motep's column order:
        moment, species, radial coefficients)."""
        if rows not in ROW_MODES:
            raise ConfigError(f"rows must be None, 'linear' or 'all', not {rows!r}")
        if len(atoms) == 0:
            raise InputError("cannot evaluate an MTP on a structure without atoms")
        types = self.species_map.types(atoms)
        pos = np.ascontiguousarray(atoms.positions, dtype=float)
        if not np.all(np.isfinite(pos)):
            raise InputError(f"{atoms.get_chemical_formula()} has non-finite positions")
        try:
            res = self._calc.compute(self.theta, pos, core_cell(atoms), np.asarray(atoms.pbc, dtype=bool), types,
                                     self.n_threads, ROW_MODES[rows], bool(forces))
        except ValueError as exc:
            raise InputError(f"{atoms.get_chemical_formula()}: {exc}") from None
        self.last_min_distance = float(res["min_distance"])
        if atoms.cell.rank == 3 and np.all(atoms.pbc):
            w = res["virial"]
            res["stress"] = voigt_stress(0.5 * (w + w.T) / atoms.get_volume())
        return res


class MTPCalculator(Calculator):
    """ASE calculator of an alkit/MLIP-2 MTP, optionally grading every evaluation against a MaxVol active set.

    ``potential``: a path or :class:`MTPPotential` (species from its tag unless given). With ``active_set`` (an
    :class:`alkit.mtp.grade.ActiveSet`) the potential is the active set's, and while ``grade_next`` is True each
    evaluation also returns ``gamma`` (float) and ``gammas`` (per atom) computed from the same pass; MD drivers
    toggle ``grade_next`` to grade every k-th step. ``on_close_atoms`` sets what a contact below ``min_dist`` does
    ('warn' by default, 'error', or 'ignore'); atoms closer than ``COLLAPSE_FRACTION`` x ``min_dist`` raise
    ``InputError`` unless the policy is 'ignore' (MD engines then judge the blow-up themselves from
    ``last_min_distance``).
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")

    def __init__(self, potential: MTPPotential | str | os.PathLike | None = None, species: Sequence[str] | None = None,
                 active_set=None, grade_next: bool = True, on_close_atoms: str = "warn", n_threads: int = 1,
                 skin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if on_close_atoms not in CLOSE_POLICIES:
            raise ConfigError(f"on_close_atoms must be one of {CLOSE_POLICIES}, not {on_close_atoms!r}")
        if active_set is not None:
            pot, species = active_set.potential, active_set.species_symbols
        elif isinstance(potential, MTPPotential):
            pot = potential.require_trained()
        elif potential is not None:
            pot, species = read_potential(potential, species)
        else:
            raise ConfigError("MTPCalculator needs a potential or an active set")
        self.engine = MTPEngine(pot, species if species is not None else pot.resolve_species(None),
                                n_threads=n_threads, skin=skin)
        self.active_set = active_set
        self.grade_next = bool(grade_next)
        self.on_close_atoms = on_close_atoms
        self.min_dist = float(pot.min_dist)
        self.cutoff = float(pot.max_dist)
        self.collapse_distance = COLLAPSE_FRACTION * self.min_dist
        self.n_close_contacts = 0

    @property
    def species(self) -> list[str]:
        return self.engine.species

    @property
    def last_min_distance(self) -> float:
        return self.engine.last_min_distance

    def _check_distance(self, atoms: Atoms, d: float) -> None:
        if self.on_close_atoms == "ignore" or d >= self.min_dist:
            return
        formula = atoms.get_chemical_formula()
        if d < self.collapse_distance:
            raise InputError(f"{formula}: atoms {d:.3f} Å apart, closer than half the potential's min_dist "
                             f"({self.min_dist:.3f} Å): a collapsed structure")
        msg = (f"{formula}: atoms {d:.3f} Å apart, closer than the potential's min_dist {self.min_dist:.3f} Å "
               "(outside its training data: extrapolation, see the grade)")
        if self.on_close_atoms == "error":
            raise InputError(msg)
        self.n_close_contacts += 1
        if self.n_close_contacts == 1:
            log.warning("%s; further such contacts are not reported", msg)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        aset = self.active_set
        grading = aset is not None and self.grade_next
        res = self.engine.compute(a, rows=aset.parameters if grading else None)
        self._check_distance(a, res["min_distance"])
        out = {"energy": float(res["energy"]), "free_energy": float(res["energy"]), "energies": res["energies"],
               "forces": res["forces"]}
        if "stress" in res:
            out["stress"] = res["stress"]
        if grading:
            gamma, gammas = aset.gamma_from_site_rows(res["rows"])
            out["gamma"], out["gammas"] = gamma, gammas
        self.results = out
