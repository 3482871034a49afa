"""Ti-H structures and MD scenarios, following the reference paper's Ti-H campaign.

What is built (every size, count and length is a parameter; see ``PRESETS``):

* Ti in four phases -- hcp alpha (P6_3/mmc), bcc beta (Im-3m), fcc (Fm-3m) and hexagonal omega (P6/mmm) --
  as 36-Ti supercells holding n_H = round(x * n_Ti) hydrogen atoms for x in ``h_per_ti`` (default TiH0 .. TiH2 in
  steps of 0.25, i.e. 0, 9, ..., 72 H), placed at random (seeded) on tetrahedral and octahedral interstitial sites;
* a supercell of face-centred tetragonal epsilon-TiH2 (I4/mmm);
* one twist and one symmetric-tilt grain boundary (GB) for each of hcp, bcc and fcc, made with pymatgen's
  ``GrainBoundaryGenerator``, holding H at the same H/Ti ratios, with >= ``gb_min_separation`` between the two
  boundaries of the periodic cell;
* the H2 molecular crystal (P6_3/mmc, molecules on the hcp lattice);

and ``ti_h_scenarios`` turns them into :class:`alkit.scenarios.Scenario` objects (default: 91 Ti-containing
structures x (300, 1000, 3000 K) NpT + H2 at 300 K = 274 scenarios).

Interstitial sites. For each bulk phase the tetrahedral and octahedral sites are the known Wyckoff positions
(listed in ``_unit_cell``; tests check their coordination: 4 and 6 Ti neighbours). For a grain boundary, each
grain's sites are carried through the GB construction as ghost atoms (He = tetrahedral, Ne = octahedral) in the
structure handed to pymatgen, so the sites stay the crystal's own; at the interface, Ti atoms closer than
``gb_rm_ratio`` x the bulk Ti-Ti distance are removed (pymatgen's criterion, done here so the ghosts do not enter
it), and sites that end up too close to a Ti atom, too far from any, or on top of each other are dropped.

Hydrogen volume. Hydrogen expands the metal (alpha-Ti 17.65 A^3/Ti -> delta-TiH2 22.09 A^3/Ti, i.e. ~2.2 A^3 per
H). With ``h_volume`` > 0 each Ti-H cell is scaled isotropically to V0 + n_H * h_volume before H is inserted, so
TiH2 starts near its real density (fcc Ti 4.11 A -> 4.43 A, close to delta-TiH2's 4.454 A) instead of under tens of
GPa. Set ``h_volume=0`` to keep the metal's lattice.
"""
from __future__ import annotations

import itertools
import logging
import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from ase import Atoms

from alkit.errors import ConfigError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------
# Literature lattice constants (Angstrom)
# ---------------------------------------------------------------------------------------------------------------
LATTICE: dict[str, dict[str, float]] = {
    # alpha-Ti, hcp P6_3/mmc, room temperature: a = 2.95, c = 4.686 A (Wyckoff, Crystal Structures vol. 1, 1963;
    # the commonly tabulated 2.9508 / 4.6855 A).
    "hcp": {"a": 2.9508, "c": 4.6855},
    # beta-Ti, bcc Im-3m: a = 3.31 A, measured above the 1155 K transus (Donohue, The Structures of the Elements,
    # 1974). DFT-PBE at 0 K gives ~3.25 A; the high-temperature value suits MD at 1000-3000 K.
    "bcc": {"a": 3.31},
    # fcc Ti, Fm-3m: not a stable bulk phase. a = 4.11 A is the DFT-PBE equilibrium value for fcc Ti (e.g. the
    # Materials Project fcc Ti entry), also close to the 4.1-4.2 A of fcc Ti films. The hydride delta-TiH2 has an
    # fcc Ti sublattice with a = 4.454 A (Yakel, Acta Cryst. 11, 46 (1958)); with the default ``h_volume`` the
    # TiH2 cells are expanded towards it (see the module docstring), so the metal value is the right start.
    "fcc": {"a": 4.11},
    # omega-Ti, P6/mmm, 3 atoms (1a + 2d): a = 4.625, c = 2.813 A, the omega phase retained at ambient pressure
    # (Jamieson, Science 140, 72 (1963); reviewed in Sikka, Vohra & Chidambaram, Prog. Mater. Sci. 27, 245 (1982)).
    "omega": {"a": 4.625, "c": 2.813},
    # epsilon-TiH2, face-centred tetragonal (c/a < 1): a_fct = 4.528, c = 4.279 A at room temperature
    # (Yakel 1958). In the standard body-centred I4/mmm setting a = 4.528 / sqrt(2) = 3.202 A, c = 4.279 A;
    # Ti on 2a (0, 0, 0), H on 4d (0, 1/2, 1/4).
    "eps": {"a": 4.528 / math.sqrt(2.0), "c": 4.279},
    # Solid para-H2 at zero pressure, hcp arrangement of molecular centres: a = 3.776, c = 6.162 A (Silvera,
    # Rev. Mod. Phys. 52, 393 (1980)); H-H bond 0.741 A (gas-phase r_e). The molecules are aligned along c, which
    # keeps the P6_3/mmc symmetry (H on 4f, z = 1/4 + bond / 2c).
    "h2": {"a": 3.776, "c": 6.162, "bond": 0.741},
}

PHASES = ("hcp", "bcc", "fcc", "omega")
GB_PHASES = ("hcp", "bcc", "fcc")
GB_KINDS = ("twist", "tilt")
SITE_KINDS = ("tet", "oct")
_GHOST = {"tet": "He", "oct": "Ne"}
_KIND_OF_GHOST = {"He": "tet", "Ne": "oct"}
_SITE_CODE = {"tet": 1, "oct": 2}

DEFAULT_H_PER_TI = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
# 36 Ti each: hcp 2-atom hexagonal cell x (3,3,2); bcc 2-atom cubic cell x (3,3,2); fcc 2-atom tetragonal cell
# (a/sqrt2, a/sqrt2, a) x (3,3,2), near-cubic 8.7 x 8.7 x 8.2 A; omega 3-atom cell x (2,2,3).
DEFAULT_SUPERCELLS: dict[str, tuple[int, int, int]] = {
    "hcp": (3, 3, 2), "bcc": (3, 3, 2), "fcc": (3, 3, 2), "omega": (2, 2, 3),
}
# 3x3x4 of the 3-atom primitive (body-centred) cell: Ti36H72, 108 atoms.
DEFAULT_EPSILON_SUPERCELL = (3, 3, 4)
DEFAULT_H2_SUPERCELL = (3, 3, 2)  # 72 H (36 molecules)

_SIGMA5_ANGLE = math.degrees(2.0 * math.atan(1.0 / 3.0))  # 36.8699 deg, Sigma-5 about <001>
_SIGMA7_ANGLE = math.degrees(2.0 * math.atan(1.0 / (3.0 * math.sqrt(3.0))))  # 21.7868 deg, Sigma-7 about [0001]

# Grain boundaries: axis/plane in the conventional cubic cell (3 indices) or 4-index Miller-Bravais for hcp.
# Cubic: Sigma-5 (001)[001] twist and Sigma-5 (120)[001] symmetric tilt (36.87 deg; pymatgen's
# ``enum_possible_plane_cubic`` lists (120) as a symmetric-tilt plane at this angle).
# hcp: Sigma-7 (0001)[0001] twist and Sigma-7 (1 2 -3 0)[0001] symmetric tilt (21.79 deg), a common low-Sigma pair
# for hcp metals; the tilt is symmetric because the two grains' boundary normals are related by a point-group
# operation (checked by ``is_symmetric_tilt``).
DEFAULT_GB_SPECS: dict[str, dict[str, dict[str, Any]]] = {
    "hcp": {
        "twist": {"sigma": 7, "axis": [0, 0, 0, 1], "angle": _SIGMA7_ANGLE, "plane": [0, 0, 0, 1]},
        "tilt": {"sigma": 7, "axis": [0, 0, 0, 1], "angle": _SIGMA7_ANGLE, "plane": [1, 2, -3, 0]},
    },
    "bcc": {
        "twist": {"sigma": 5, "axis": [0, 0, 1], "angle": _SIGMA5_ANGLE, "plane": [0, 0, 1]},
        "tilt": {"sigma": 5, "axis": [0, 0, 1], "angle": _SIGMA5_ANGLE, "plane": [1, 2, 0]},
    },
    "fcc": {
        "twist": {"sigma": 5, "axis": [0, 0, 1], "angle": _SIGMA5_ANGLE, "plane": [0, 0, 1]},
        "tilt": {"sigma": 5, "axis": [0, 0, 1], "angle": _SIGMA5_ANGLE, "plane": [1, 2, 0]},
    },
}


# ---------------------------------------------------------------------------------------------------------------
# Host cells: Ti atoms plus the interstitial sites they offer
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class HostCell:
    """Ti atoms and their interstitial sites (Cartesian ``sites``, kinds 'tet'/'oct').

    For grain boundaries ``grain`` labels every Ti atom (0 = bottom grain, 1 = top grain) and ``site_grain`` every
    site; ``info`` carries the GB description.
    """

    atoms: Atoms
    sites: np.ndarray
    site_kinds: np.ndarray
    grain: np.ndarray | None = None
    site_grain: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    _pairs: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_ti(self) -> int:
        return len(self.atoms)

    def site_pairs(self, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Site index pairs (i, j, distance), both directions, closer than ``cutoff`` (cached per cutoff)."""
        from ase.neighborlist import neighbor_list

        key = round(float(cutoff), 6)
        if key not in self._pairs:
            if cutoff > 0 and len(self.sites):
                ghosts = Atoms("H%d" % len(self.sites), positions=self.sites, cell=self.atoms.cell, pbc=True)
                self._pairs[key] = neighbor_list("ijd", ghosts, float(cutoff))
            else:
                self._pairs[key] = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
        return self._pairs[key]

    @property
    def n_sites(self) -> int:
        return len(self.sites)


def _lattice(phase: str, lattice: Mapping[str, Mapping[str, float]] | None) -> dict[str, float]:
    values = dict(LATTICE[phase])
    if lattice and phase in lattice:
        extra = set(lattice[phase]) - set(values)
        if extra:
            raise ConfigError(f"lattice[{phase!r}]: unknown constants {sorted(extra)}; {phase} takes {sorted(values)}")
        for k, v in lattice[phase].items():
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ConfigError(f"lattice[{phase!r}][{k!r}] must be a positive number, got {v!r}")
            values[k] = float(v)
    return values


def _decorated(cell: np.ndarray, ti_frac: Sequence, tet_frac: Sequence, oct_frac: Sequence) -> Atoms:
    """Ti atoms plus ghost atoms marking the sites (He tetrahedral, Ne octahedral) in one cell."""
    symbols = ["Ti"] * len(ti_frac) + [_GHOST["tet"]] * len(tet_frac) + [_GHOST["oct"]] * len(oct_frac)
    frac = np.array(list(ti_frac) + list(tet_frac) + list(oct_frac), dtype=float) % 1.0
    return Atoms(symbols, scaled_positions=frac, cell=cell, pbc=True)


def _recell(atoms: Atoms, new_cell: np.ndarray, tol: float = 1e-4) -> Atoms:
    """Re-express a periodic decoration in another cell of the same lattice (a sub- or supercell)."""
    new_cell = np.asarray(new_cell, dtype=float)
    ratio = abs(np.linalg.det(new_cell) / atoms.cell.volume)
    expected = ratio * len(atoms)
    if abs(expected - round(expected)) > 1e-6:
        raise ConfigError("internal: new cell is not a lattice supercell/subcell")
    # Range of old-cell translations covering the new cell's corners.
    corners = np.array(list(itertools.product((0, 1), repeat=3)), dtype=float) @ new_cell
    fc = np.linalg.solve(atoms.cell.array.T, corners.T).T
    lo, hi = np.floor(fc.min(0)).astype(int) - 1, np.ceil(fc.max(0)).astype(int) + 1
    shifts = np.array(list(itertools.product(*[range(l, h + 1) for l, h in zip(lo, hi)])))
    pos = (atoms.positions[None, :, :] + (shifts @ atoms.cell.array)[:, None, :]).reshape(-1, 3)
    sym = np.tile(np.array(atoms.get_chemical_symbols()), len(shifts))
    frac = np.linalg.solve(new_cell.T, pos.T).T
    keep = np.all((frac >= -tol) & (frac < 1.0 - tol), axis=1)
    frac = np.where(np.abs(frac) < tol, 0.0, frac)
    out = Atoms(list(sym[keep]), scaled_positions=frac[keep], cell=new_cell, pbc=True)
    if len(out) != round(expected):
        raise ConfigError(f"internal: re-cell gave {len(out)} sites, expected {round(expected)}")
    return out


def _unit_cell(phase: str, lattice: Mapping | None = None, setting: str = "bulk") -> Atoms:
    """Decorated unit cell (Ti + ghost sites). ``setting='gb'`` gives the cell pymatgen's GB generator expects
    (primitive cubic cells in its convention)."""
    p = _lattice(phase, lattice)
    if phase == "hcp":
        a, c = p["a"], p["c"]
        cell = np.array([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]])
        # Ti at (0,0,0), (1/3,2/3,1/2). Tetrahedral (4f-type): on the c-line of each atom at height u*c, where u
        # puts the site equidistant from its 4 Ti: u = (a^2/3 + c^2/4) / c^2 (3/8 for ideal c/a).
        # Octahedral (2a-type): (2/3,1/3,1/4), (2/3,1/3,3/4). Per Ti: 2 tet + 1 oct.
        u = (a * a / 3 + c * c / 4) / (c * c)
        ti = [(0, 0, 0), (1 / 3, 2 / 3, 0.5)]
        tet = [(0, 0, u), (0, 0, -u), (1 / 3, 2 / 3, 0.5 + u), (1 / 3, 2 / 3, 0.5 - u)]
        octa = [(2 / 3, 1 / 3, 0.25), (2 / 3, 1 / 3, 0.75)]
        return _decorated(cell, ti, tet, octa)
    if phase in ("bcc", "fcc"):
        a = p["a"]
        conv = np.eye(3) * a
        if phase == "bcc":
            # Ti 2a; tetrahedral 12d (1/2,1/4,0) and permutations; octahedral 6b (1/2,1/2,0), (1/2,0,0) + perms.
            # Per Ti: 6 tet + 3 oct.
            ti = [(0, 0, 0), (0.5, 0.5, 0.5)]
            tet = sorted({p3 for q in (0.25, 0.75) for p3 in itertools.permutations((0.5, q, 0.0))})
            octa = sorted({p3 for p3 in itertools.permutations((0.5, 0.5, 0.0))}
                          | {p3 for p3 in itertools.permutations((0.5, 0.0, 0.0))})
            prim = np.array([[0.5, 0.5, -0.5], [-0.5, 0.5, 0.5], [0.5, -0.5, 0.5]]) * a
        else:
            # Ti 4a; tetrahedral 8c (1/4,1/4,1/4)-type; octahedral 4b (1/2,1/2,1/2)-type. Per Ti: 2 tet + 1 oct.
            ti = [(0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)]
            tet = list(itertools.product((0.25, 0.75), repeat=3))
            octa = [(0.5, 0.5, 0.5), (0.5, 0, 0), (0, 0.5, 0), (0, 0, 0.5)]
            prim = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]]) * a
        conv_atoms = _decorated(conv, ti, tet, octa)
        if setting == "gb":
            return _recell(conv_atoms, prim)
        if phase == "fcc":  # 2-atom tetragonal cell (a/sqrt2, a/sqrt2, a) -> near-cubic 36-Ti supercells
            return _recell(conv_atoms, np.array([[a / 2, -a / 2, 0], [a / 2, a / 2, 0], [0, 0, a]]))
        return conv_atoms
    if phase == "omega":
        a, c = p["a"], p["c"]
        cell = np.array([[a, 0, 0], [-a / 2, a * math.sqrt(3) / 2, 0], [0, 0, c]])
        # Ti on 1a (0,0,0) and 2d (1/3,2/3,1/2), (2/3,1/3,1/2).
        # Tetrahedral 6k (x,0,1/2): equidistant from 2 Ti(1a) above/below and 2 Ti(2d) in-plane when
        # x = 1/3 - c^2/(4a^2) (0.241 here, 1.79 A from 4 Ti). Octahedral 3f (1/2,0,0): 4 Ti at 1.94 A + 2 at 2.31 A.
        # Per Ti: 2 tet + 1 oct.
        x = 1 / 3 - c * c / (4 * a * a)
        ti = [(0, 0, 0), (1 / 3, 2 / 3, 0.5), (2 / 3, 1 / 3, 0.5)]
        tet = [(x, 0, 0.5), (0, x, 0.5), (-x, -x, 0.5), (-x, 0, 0.5), (0, -x, 0.5), (x, x, 0.5)]
        octa = [(0.5, 0, 0), (0, 0.5, 0), (0.5, 0.5, 0)]
        return _decorated(cell, ti, tet, octa)
    raise ConfigError(f"unknown Ti phase {phase!r}; choose from {PHASES}")


def _split(decorated: Atoms) -> tuple[Atoms, np.ndarray, np.ndarray]:
    sym = np.array(decorated.get_chemical_symbols())
    is_ti = sym == "Ti"
    ti = Atoms("Ti%d" % is_ti.sum(), positions=decorated.positions[is_ti], cell=decorated.cell, pbc=True)
    ghosts = ~is_ti
    kinds = np.array([_KIND_OF_GHOST[s] for s in sym[ghosts]], dtype=object).astype(str)
    return ti, decorated.positions[ghosts].copy(), kinds


def _supercell_matrix(spec, name: str) -> np.ndarray:
    try:
        m = np.array(spec, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: supercell must be 3 integers or a 3x3 integer matrix, got {spec!r}") from exc
    if m.shape == (3,):
        m = np.diag(m)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)) or not np.allclose(m, np.round(m)):
        raise ConfigError(f"{name}: supercell must be 3 integers or a 3x3 integer matrix, got {spec!r}")
    m = np.round(m).astype(int)
    det = round(np.linalg.det(m))
    if det < 1 or (np.count_nonzero(m - np.diag(np.diag(m))) == 0 and np.any(np.diag(m) < 1)):
        raise ConfigError(f"{name}: supercell {spec!r} must have positive repeats / a positive determinant")
    return m


def _make_supercell(atoms: Atoms, m: np.ndarray) -> Atoms:
    if np.count_nonzero(m - np.diag(np.diag(m))) == 0:
        return atoms.repeat(tuple(int(v) for v in np.diag(m)))
    from ase.build import make_supercell

    return make_supercell(atoms, m)


def ti_unit_cell(phase: str, lattice: Mapping | None = None) -> Atoms:
    """The H-free Ti unit cell of ``phase`` used for the supercells (literature lattice constants)."""
    _check_phase(phase)
    return _split(_unit_cell(phase, lattice))[0]


def bulk_host(phase: str, supercell=None, lattice: Mapping | None = None) -> HostCell:
    """Ti supercell of ``phase`` with all its tetrahedral and octahedral sites (default: 36 Ti)."""
    _check_phase(phase)
    m = _supercell_matrix(DEFAULT_SUPERCELLS[phase] if supercell is None else supercell, f"supercell[{phase!r}]")
    ti, sites, kinds = _split(_make_supercell(_unit_cell(phase, lattice), m))
    return HostCell(ti, sites, kinds, info={"phase": phase, "supercell": m.tolist()})


# ---------------------------------------------------------------------------------------------------------------
# Grain boundaries
# ---------------------------------------------------------------------------------------------------------------
def _gb_spec(phase: str, kind: str, spec: Mapping | None) -> dict[str, Any]:
    if kind not in GB_KINDS:
        raise ConfigError(f"unknown grain-boundary kind {kind!r} for {phase}; choose from {GB_KINDS}")
    out = dict(DEFAULT_GB_SPECS[phase][kind])
    if spec:
        extra = set(spec) - {"sigma", "axis", "angle", "plane", "ratio"}
        if extra:
            raise ConfigError(f"GB spec {phase}/{kind}: unknown keys {sorted(extra)} "
                              "(use sigma, axis, angle, plane, ratio)")
        out.update(spec)
    for key in ("axis", "plane"):
        v = out[key]
        if not (isinstance(v, (list, tuple)) and len(v) in (3, 4) and all(float(x).is_integer() for x in v)):
            raise ConfigError(f"GB spec {phase}/{kind}: {key} must be 3 (or 4, hcp) integer indices, got {v!r}")
        if not any(v):
            raise ConfigError(f"GB spec {phase}/{kind}: {key} must not be zero")
        out[key] = [int(x) for x in v]
    if not (isinstance(out["angle"], (int, float)) and 0 < float(out["angle"]) < 180):
        raise ConfigError(f"GB spec {phase}/{kind}: angle must be in (0, 180) degrees, got {out['angle']!r}")
    return out


def _three_index(v: Sequence[int], is_plane: bool) -> np.ndarray:
    """Miller-Bravais (4) -> Miller (3) for hcp (directions [UVTW] -> [2U+V, 2V+U, W], planes (hkil) -> (hkl))."""
    if len(v) == 3:
        return np.array(v, dtype=float)
    if is_plane:
        return np.array([v[0], v[1], v[3]], dtype=float)
    return np.array([2 * v[0] + v[1], 2 * v[1] + v[0], v[3]], dtype=float)


def is_symmetric_tilt(phase: str, spec: Mapping, lattice: Mapping | None = None) -> bool:
    """True if ``spec`` is a tilt GB (plane contains the axis) whose boundary plane has symmetry-equivalent indices
    in both grains (the plane normal rotated by the misorientation is a point-group image of itself, up to sign)."""
    from pymatgen.core import Lattice
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from scipy.spatial.transform import Rotation

    from alkit.io import to_structure

    ti = ti_unit_cell(phase, lattice)
    if phase in ("bcc", "fcc"):
        ti = Atoms("Ti", positions=[[0, 0, 0]], cell=np.eye(3) * ti.cell.lengths()[0], pbc=True)
    lat = Lattice(ti.cell.array)
    axis = lat.get_cartesian_coords(_three_index(spec["axis"], False))
    normal = lat.reciprocal_lattice_crystallographic.get_cartesian_coords(_three_index(spec["plane"], True))
    axis, normal = axis / np.linalg.norm(axis), normal / np.linalg.norm(normal)
    if abs(axis @ normal) > 1e-6:
        return False
    ops = SpacegroupAnalyzer(to_structure(ti)).get_point_group_operations(cartesian=True)
    for sign in (1.0, -1.0):
        rotated = Rotation.from_rotvec(sign * math.radians(float(spec["angle"])) * axis).as_matrix() @ normal
        if any(np.allclose(op.rotation_matrix @ normal, s * rotated, atol=1e-4) for op in ops for s in (1, -1)):
            return True
    return False


def _circular_extent(s: np.ndarray, height: float) -> tuple[float, float]:
    """(start, end) of the slab occupied by values ``s`` on a circle of length ``height`` (end may exceed height)."""
    s = np.sort(np.mod(s, height))
    gaps = np.diff(np.concatenate([s, [s[0] + height]]))
    i = int(np.argmax(gaps))  # the largest gap is where the other grain sits
    start = s[(i + 1) % len(s)]
    end = s[i] if i + 1 < len(s) else s[i]
    if end < start:
        end += height
    return float(start), float(end)


def gb_separation(atoms: Atoms, grain: np.ndarray | None = None) -> float:
    """Distance between the two grain boundaries of a periodic bicrystal, in Angstrom.

    Positions are projected on the boundary normal (the normal of the a-b plane; the GB cells have c normal to
    it). Each grain occupies a slab on the periodic axis of length h = V / |a x b|; a boundary plane is the
    mid-plane between the facing outermost atomic layers of the two grains. The separation is the shorter of the
    two normal distances between the two boundary planes (for equal grains, half the cell height).
    ``grain`` (0/1 per atom) defaults to the ``grain`` array the GB builders attach; only Ti atoms are used when
    the structure holds Ti (H near the boundary does not move it).
    """
    if grain is None:
        if "grain" not in atoms.arrays:
            raise ConfigError("gb_separation needs grain labels (the 'grain' array of a GB structure)")
        grain = atoms.get_array("grain")
    grain = np.asarray(grain)
    if len(grain) != len(atoms):
        raise ConfigError(f"gb_separation: {len(grain)} grain labels for {len(atoms)} atoms")
    if np.any(atoms.numbers == 22):
        keep = atoms.numbers == 22
        atoms, grain = atoms[keep], grain[keep]
    cell = atoms.cell.array
    n = np.cross(cell[0], cell[1])
    n /= np.linalg.norm(n)
    height = abs(atoms.cell.volume) / np.linalg.norm(np.cross(cell[0], cell[1]))
    s = atoms.positions @ n
    b0, b1 = _circular_extent(s[grain == 0], height)
    t0, t1 = _circular_extent(s[grain == 1], height)
    # Boundary between bottom's end and top's start, and between top's end and bottom's start (circularly).
    gap1 = np.mod(t0 - b1, height)
    gap2 = np.mod(b0 - t1, height)
    p1 = b1 + gap1 / 2
    p2 = t1 + gap2 / 2
    d = np.mod(p2 - p1, height)
    return float(min(d, height - d))


def _raw_gb(unit: Atoms, spec: Mapping, expand: int) -> tuple[Atoms, np.ndarray]:
    """pymatgen's bicrystal of ``unit`` (c normal to the boundary) and each atom's grain (0 bottom, 1 top)."""
    from pymatgen.core.interface import GrainBoundaryGenerator
    from pymatgen.io.ase import AseAtomsAdaptor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about the ghosts' missing electronegativities
        gen = GrainBoundaryGenerator(AseAtomsAdaptor.get_structure(unit))
        # rm_ratio ~0: pymatgen's own merge would treat ghosts as atoms; the interface clean-up is done by the caller.
        gb = gen.gb_from_parameters(
            rotation_axis=tuple(spec["axis"]), rotation_angle=float(spec["angle"]), expand_times=int(expand),
            plane=tuple(spec["plane"]), normal=True, ratio=spec.get("ratio"), rm_ratio=1e-3,
        )
    atoms = AseAtomsAdaptor.get_atoms(gb)
    atoms = Atoms(atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    labels = np.array([str(x) for x in gb.site_properties["grain_label"]])
    return atoms, np.where(np.char.startswith(labels, "top"), 1, 0)


def _mic_distances(a: np.ndarray, b: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Minimum-image distance matrix between point sets ``a`` (n, 3) and ``b`` (m, 3) in a periodic ``cell``."""
    from ase.geometry import get_distances

    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return get_distances(a, b, cell=cell, pbc=True)[1]


def _close_pairs(pos: np.ndarray, cell: np.ndarray, cutoff: float) -> list[tuple[int, int]]:
    """Index pairs (i < j) of points closer than ``cutoff`` (minimum image) in a periodic cell."""
    from ase.neighborlist import neighbor_list

    if len(pos) < 2:
        return []
    i, j = neighbor_list("ij", Atoms("H%d" % len(pos), positions=pos, cell=cell, pbc=True), cutoff)
    return sorted({(int(p), int(q)) for p, q in zip(i, j) if p < q})


def _gb_once(phase: str, spec: dict, lattice, expand: int, rm_ratio: float) -> HostCell:
    unit = _unit_cell(phase, lattice, setting="gb")
    ti_unit, unit_sites, _ = _split(unit)
    # Bulk references: Ti-Ti nearest neighbour and the range of nearest-Ti distances over the sites.
    big = ti_unit.repeat(3)
    d_ti = big.get_all_distances(mic=True)[np.triu_indices(len(big), 1)].min()
    near_bulk = _mic_distances(unit_sites, big.positions, big.cell.array).min(axis=1)
    site_lo, site_hi = near_bulk.min(), near_bulk.max()

    atoms, grain_all = _raw_gb(unit, spec, expand)
    cell = atoms.cell.array
    sym = np.array(atoms.get_chemical_symbols())
    is_ti = sym == "Ti"

    # 1) Ti atoms too close across the interface (pymatgen's criterion: < rm_ratio x bulk bond length): remove
    #    greedily, the atom with most close contacts first (ties: the top grain's, then the later index).
    ti_idx = np.where(is_ti)[0]
    ti_atoms = atoms[ti_idx]
    removed_ti: set[int] = set()
    if rm_ratio > 0:
        pairs = set(_close_pairs(ti_atoms.positions, cell, rm_ratio * d_ti))
        while pairs:
            counts: dict[int, int] = {}
            for p, q in pairs:
                counts[p] = counts.get(p, 0) + 1
                counts[q] = counts.get(q, 0) + 1
            victim = max(counts, key=lambda k: (counts[k], grain_all[ti_idx[k]], k))
            removed_ti.add(victim)
            pairs = {pq for pq in pairs if victim not in pq}
    keep_ti = np.array([k for k in range(len(ti_idx)) if k not in removed_ti], dtype=int)
    ti_final = ti_atoms[keep_ti]
    ti_grain = grain_all[ti_idx[keep_ti]]

    # 2) Sites: keep those whose nearest Ti lies in the bulk range (90% .. 115% of the bulk min .. max), so none
    #    sits on a Ti atom or in an empty gap; then drop near-duplicates (< 0.5 A) from the two grains.
    g_idx = np.where(~is_ti)[0]
    sites = atoms.positions[g_idx]
    kinds = np.array([_KIND_OF_GHOST[x] for x in sym[g_idx]])
    near = _mic_distances(sites, ti_final.positions, cell).min(axis=1)
    ok = (near >= 0.9 * site_lo) & (near <= 1.15 * site_hi)
    sites, kinds, s_grain = sites[ok], kinds[ok], grain_all[g_idx][ok]
    drop: set[int] = set()
    for p, q in sorted(_close_pairs(sites, cell, 0.5)):
        if p not in drop:
            drop.add(q)
    keep = np.array([k for k in range(len(sites)) if k not in drop], dtype=int)
    ti_final.wrap()
    host = HostCell(ti_final, sites[keep], kinds[keep], grain=ti_grain, site_grain=s_grain[keep])
    host.info.update(
        phase=phase, sigma=int(spec.get("sigma", 0)) or None, axis=list(spec["axis"]), plane=list(spec["plane"]),
        angle=float(spec["angle"]), expand_times=int(expand), n_ti_removed=len(removed_ti),
        separation=gb_separation(ti_final, ti_grain),
    )
    return host


def grain_boundary_host(
    phase: str,
    kind: str,
    spec: Mapping | None = None,
    min_separation: float = 10.0,
    lattice: Mapping | None = None,
    rm_ratio: float = 0.7,
    max_expand: int = 12,
) -> HostCell:
    """A periodic bicrystal of ``phase`` with two ``kind`` ('twist' or 'tilt') boundaries >= ``min_separation`` apart.

    Built with pymatgen's ``GrainBoundaryGenerator`` (``normal=True``: c is normal to the boundary); the grain
    thickness (``expand_times``) is the smallest that meets ``min_separation`` (see :func:`gb_separation`).
    """
    if phase not in GB_PHASES:
        raise ConfigError(f"grain boundaries are built for {GB_PHASES}, not {phase!r}")
    spec = _gb_spec(phase, kind, spec)
    if not (np.isfinite(min_separation) and min_separation >= 0):
        raise ConfigError(f"gb_min_separation must be >= 0 Angstrom, got {min_separation!r}")
    if not (0 <= rm_ratio < 1):
        raise ConfigError(f"gb_rm_ratio must be in [0, 1), got {rm_ratio!r}")
    plane_n, axis_n = _three_index(spec["plane"], True), _three_index(spec["axis"], False)
    if kind == "tilt" and not is_symmetric_tilt(phase, spec, lattice):
        raise ConfigError(f"GB spec {phase}/tilt {spec}: not a symmetric tilt boundary (plane must contain the axis "
                          "and have equivalent indices in both grains)")
    if kind == "twist" and phase in ("bcc", "fcc") and np.linalg.matrix_rank(np.vstack([plane_n, axis_n])) != 1:
        raise ConfigError(f"GB spec {phase}/twist {spec}: a twist boundary's plane must be normal to its axis")
    try:
        # Grain thickness: one cheap Ti-only build gives the boundary spacing per expand_times unit.
        unit = _raw_gb(_split(_unit_cell(phase, lattice, setting="gb"))[0], spec, 1)
        ti = unit[0]
        per_unit = gb_separation(ti, unit[1])
        expand = max(1, math.ceil(min_separation / max(per_unit, 1e-3) - 1e-9))
        while True:
            if expand > max_expand:
                raise ConfigError(f"{phase} {kind} GB: cannot reach {min_separation} A between boundaries with "
                                  f"expand_times <= {max_expand}")
            host = _gb_once(phase, spec, lattice, expand, rm_ratio)
            if host.info["separation"] >= min_separation:
                break
            expand += 1
    except ConfigError:
        raise
    except Exception as exc:  # pymatgen raises bare RuntimeError/ValueError for impossible CSLs
        raise ConfigError(
            f"pymatgen could not build the {phase} {kind} GB {spec}: {type(exc).__name__}: {exc}") from exc
    host.info["kind"] = kind
    return host


# ---------------------------------------------------------------------------------------------------------------
# Hydrogen insertion
# ---------------------------------------------------------------------------------------------------------------
def n_hydrogen(h_per_ti: float, n_ti: int) -> int:
    """Number of H for an H/Ti ratio (rounded half up, so 36 Ti x 0.25 -> 9)."""
    return int(math.floor(h_per_ti * n_ti + 0.5 + 1e-9))


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, key), so a structure does not change when others are added."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


def add_hydrogen(
    host: HostCell,
    n_h: int,
    rng: np.random.Generator | int = 0,
    min_hh_distance: float = 1.0,
    h_volume: float = 2.2,
    site_kinds: Sequence[str] = SITE_KINDS,
    attempts: int = 20,
    name: str = "structure",
) -> Atoms:
    """Put ``n_h`` H atoms on randomly chosen interstitial sites of ``host`` (uniform over the allowed sites).

    Sites are visited in random order and accepted unless an accepted H lies within ``min_hh_distance``
    (random sequential filling; retried ``attempts`` times with new orders). The cell is first scaled
    isotropically by (1 + n_h * h_volume / V)^(1/3). Returns Ti + H ``Atoms`` with arrays ``site_kind``
    (0 Ti, 1 tetrahedral, 2 octahedral) and, for GBs, ``grain``.
    """
    if isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(int(rng))
    bad = set(site_kinds) - set(SITE_KINDS)
    if bad or not site_kinds:
        raise ConfigError(f"site_kinds must be a non-empty subset of {SITE_KINDS}, got {list(site_kinds)}")
    if int(n_h) != n_h or n_h < 0:
        raise ConfigError(f"{name}: number of H must be a non-negative integer, got {n_h!r}")
    n_h = int(n_h)
    allowed = np.where(np.isin(host.site_kinds, list(site_kinds)))[0]
    if n_h > len(allowed):
        raise ConfigError(
            f"{name}: {n_h} H requested but the {host.n_ti}-Ti cell has only {len(allowed)} "
            f"{'+'.join(site_kinds)} interstitial sites; lower the H content or enlarge the supercell")
    scale = (1.0 + n_h * float(h_volume) / host.atoms.cell.volume) ** (1.0 / 3.0) if n_h else 1.0
    chosen: list[int] = []
    if n_h:
        # Site pairs closer than min_hh_distance after the cell is scaled (distances scale with it).
        i, j, d = host.site_pairs(min_hh_distance)
        position = np.full(host.n_sites, -1)
        position[allowed] = np.arange(len(allowed))
        close = (d * scale < min_hh_distance) & (position[i] >= 0) & (position[j] >= 0)
        conflicts: list[list[int]] = [[] for _ in range(len(allowed))]
        for p, q in zip(position[i[close]], position[j[close]]):
            conflicts[p].append(int(q))
        best = 0
        for _ in range(max(1, int(attempts))):
            order = rng.permutation(len(allowed))
            taken = np.zeros(len(allowed), dtype=bool)
            picked: list[int] = []
            for k in order:
                if not any(taken[c] for c in conflicts[k]):
                    taken[k] = True
                    picked.append(int(k))
                    if len(picked) == n_h:
                        break
            best = max(best, len(picked))
            if len(picked) == n_h:
                chosen = picked
                break
        else:
            raise ConfigError(
                f"{name}: could place only {best} of {n_h} H on the {len(allowed)} sites with H-H >= "
                f"{min_hh_distance} A; lower min_hh_distance or the H content")
    idx = allowed[np.array(chosen, dtype=int)]
    atoms = host.atoms.copy()
    atoms.set_cell(atoms.cell.array * scale, scale_atoms=True)
    n_ti = len(atoms)
    if n_h:
        atoms += Atoms("H%d" % n_h, positions=host.sites[idx] * scale)
    atoms.pbc = True
    atoms.set_array("site_kind", np.concatenate([np.zeros(n_ti, int),
                                                 [_SITE_CODE[k] for k in host.site_kinds[idx]]]).astype(int))
    if host.grain is not None:
        atoms.set_array("grain", np.concatenate([host.grain, host.site_grain[idx]]).astype(int))
    atoms.wrap()
    return atoms


# ---------------------------------------------------------------------------------------------------------------
# Single structures
# ---------------------------------------------------------------------------------------------------------------
def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ConfigError(f"unknown Ti phase {phase!r}; choose from {PHASES}")


def ti_h_bulk(
    phase: str,
    h_per_ti: float,
    supercell=None,
    seed: int = 0,
    lattice: Mapping | None = None,
    min_hh_distance: float = 1.0,
    h_volume: float = 2.2,
    site_kinds: Sequence[str] = SITE_KINDS,
) -> Atoms:
    """One bulk Ti-H structure: a Ti supercell of ``phase`` with round(h_per_ti * n_Ti) interstitial H."""
    host = bulk_host(phase, supercell, lattice)
    _check_ratio(h_per_ti)
    key = f"{phase}-TiH{h_per_ti:.2f}"
    return add_hydrogen(host, n_hydrogen(h_per_ti, host.n_ti), _rng(seed, key), min_hh_distance, h_volume,
                        site_kinds, name=key)


def ti_h_grain_boundary(
    phase: str,
    kind: str,
    h_per_ti: float,
    spec: Mapping | None = None,
    min_separation: float = 10.0,
    seed: int = 0,
    lattice: Mapping | None = None,
    min_hh_distance: float = 1.0,
    h_volume: float = 2.2,
    site_kinds: Sequence[str] = SITE_KINDS,
    rm_ratio: float = 0.7,
) -> Atoms:
    """One Ti-H grain-boundary structure (see :func:`grain_boundary_host`)."""
    host = grain_boundary_host(phase, kind, spec, min_separation, lattice, rm_ratio)
    _check_ratio(h_per_ti)
    key = f"gb-{kind}-{phase}-TiH{h_per_ti:.2f}"
    return add_hydrogen(host, n_hydrogen(h_per_ti, host.n_ti), _rng(seed, key), min_hh_distance, h_volume,
                        site_kinds, name=key)


def epsilon_tih2(supercell=DEFAULT_EPSILON_SUPERCELL, lattice: Mapping | None = None) -> Atoms:
    """Face-centred tetragonal epsilon-TiH2 (I4/mmm), ``supercell`` of the 3-atom primitive (body-centred) cell."""
    from ase.spacegroup import crystal

    p = _lattice("eps", lattice)
    prim = crystal(["Ti", "H"], [(0, 0, 0), (0, 0.5, 0.25)], spacegroup=139,
                   cellpar=[p["a"], p["a"], p["c"], 90, 90, 90], primitive_cell=True)
    prim = Atoms(prim.numbers, positions=prim.positions, cell=prim.cell, pbc=True)
    return _make_supercell(prim, _supercell_matrix(supercell, "epsilon_supercell"))


def h2_crystal(supercell=DEFAULT_H2_SUPERCELL, lattice: Mapping | None = None) -> Atoms:
    """Molecular H2 crystal, P6_3/mmc (hcp molecular centres, molecules along c), ``supercell`` of the 4-H cell."""
    from ase.spacegroup import crystal

    p = _lattice("h2", lattice)
    z = 0.25 + p["bond"] / (2.0 * p["c"])
    cell = crystal("H", [(1 / 3, 2 / 3, z)], spacegroup=194, cellpar=[p["a"], p["a"], p["c"], 90, 90, 120])
    cell = Atoms(cell.numbers, positions=cell.positions, cell=cell.cell, pbc=True)
    return _make_supercell(cell, _supercell_matrix(supercell, "h2_supercell"))


def relax_lattice(atoms: Atoms, calc, fmax: float = 0.01, steps: int = 200, hydrostatic: bool = False) -> Atoms:
    """Relax positions and cell of a copy of ``atoms`` with any ASE calculator (FrechetCellFilter + FIRE)."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    relaxed = atoms.copy()
    relaxed.calc = calc
    opt = FIRE(FrechetCellFilter(relaxed, hydrostatic_strain=hydrostatic), logfile=None)
    opt.run(fmax=fmax, steps=steps)
    return relaxed


# ---------------------------------------------------------------------------------------------------------------
# Scenario sets
# ---------------------------------------------------------------------------------------------------------------
PAPER = {
    "phases": PHASES,
    "h_per_ti": DEFAULT_H_PER_TI,
    "supercells": DEFAULT_SUPERCELLS,
    "gbs": {p: list(GB_KINDS) for p in GB_PHASES},
    "gb_h_per_ti": None,  # None: same as h_per_ti
    "gb_min_separation": 10.0,
    "gb_rm_ratio": 0.7,
    "epsilon": True,
    "epsilon_supercell": DEFAULT_EPSILON_SUPERCELL,
    "h2": True,
    "h2_supercell": DEFAULT_H2_SUPERCELL,
    "h2_temperatures": (300.0,),
    # A 300 K "H2 crystal" is far above the 14 K melting point; at 0 GPa under NpT it is a gas and the cell would
    # expand without bound, so it runs at the solid's density (NVT). Set "npt" to follow a barostat anyway.
    "h2_ensemble": "nvt",
    "temperatures": (300.0, 1000.0, 3000.0),
    "ensemble": "npt",
    "pressure_gpa": 0.0,
    # The paper's trajectories hold 20,001 snapshots each: 20,000 steps of 0.5 fs (10 ps), every step kept.
    "steps": 20000,
    "snapshot_interval": 1,
    "timestep_fs": 0.5,
    "seed": 0,
    "lattice": None,
    "min_hh_distance": 1.0,
    "h_volume": 2.2,
    "site_kinds": SITE_KINDS,
}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # Laptop scale: 16-24 Ti bulk cells, two compositions, one GB per phase with a 6 A separation,
    # 300 and 1000 K, 400 steps. 4 x 2 + 3 x 2 + 1 = 15 Ti structures x 2 T + H2 = 31 scenarios.
    "quick": {
        "h_per_ti": (0.25, 1.0),
        "supercells": {"hcp": (2, 2, 2), "bcc": (2, 2, 2), "fcc": (2, 2, 2), "omega": (2, 2, 2)},
        "gbs": {"hcp": ["tilt"], "bcc": ["tilt"], "fcc": ["tilt"]},
        "gb_min_separation": 6.0,
        "epsilon_supercell": (2, 2, 2),
        "h2_supercell": (2, 2, 1),
        "temperatures": (300.0, 1000.0),
        "steps": 400,
        "snapshot_interval": 10,
    },
    # For tests: 7 scenarios of <= 20 atoms.
    "tiny": {
        "phases": ("hcp", "bcc"),
        "h_per_ti": (0.0, 1.0),
        "supercells": {"hcp": (2, 2, 1), "bcc": (2, 2, 1)},
        "gbs": {"bcc": ["tilt"]},
        "gb_h_per_ti": (0.0,),
        "gb_min_separation": 5.0,
        "epsilon_supercell": (1, 1, 1),
        "h2_supercell": (1, 1, 1),
        "temperatures": (300.0,),
        "steps": 20,
        "snapshot_interval": 5,
    },
}


def _check_ratio(x) -> float:
    if not (isinstance(x, (int, float, np.integer, np.floating)) and np.isfinite(x) and x >= 0):
        raise ConfigError(f"H/Ti ratio must be a finite number >= 0, got {x!r}")
    return float(x)


def _resolve(preset: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    if preset not in PRESETS:
        raise ConfigError(f"unknown Ti-H preset {preset!r}; choose from {sorted(PRESETS)}")
    unknown = set(overrides) - set(PAPER)
    if unknown:
        raise ConfigError(f"unknown Ti-H scenario parameters {sorted(unknown)}; valid: {sorted(PAPER)}")
    cfg = dict(PAPER)
    cfg.update(PRESETS[preset])
    cfg.update(overrides)
    # Validate everything before any structure is built.
    phases = tuple(cfg["phases"])
    for p in phases:
        _check_phase(p)
    if len(set(phases)) != len(phases):
        raise ConfigError(f"phases repeated: {list(phases)}")
    cfg["phases"] = phases
    for key in ("h_per_ti", "gb_h_per_ti"):
        if key == "gb_h_per_ti" and cfg[key] is None:
            continue
        ratios = tuple(_check_ratio(x) for x in cfg[key])
        labels = [f"{x:.2f}" for x in ratios]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"{key} {list(ratios)} has values equal to 2 decimals; ids would collide")
        cfg[key] = ratios
    sc = dict(DEFAULT_SUPERCELLS)
    sc.update(cfg["supercells"] or {})
    for p in sc:
        if p not in PHASES:
            raise ConfigError(f"supercells: unknown phase {p!r}; choose from {PHASES}")
        _supercell_matrix(sc[p], f"supercells[{p!r}]")
    cfg["supercells"] = sc
    gbs = cfg["gbs"] or {}
    if not isinstance(gbs, Mapping):
        raise ConfigError(f"gbs must map a phase to GB kinds, e.g. {{'bcc': ['tilt']}}, got {gbs!r}")
    norm: dict[str, dict[str, dict]] = {}
    for p, kinds in gbs.items():
        if p not in GB_PHASES:
            raise ConfigError(f"gbs: grain boundaries are built for {GB_PHASES}, not {p!r}")
        kinds = {k: {} for k in kinds} if not isinstance(kinds, Mapping) else dict(kinds)
        norm[p] = {k: _gb_spec(p, k, v) for k, v in kinds.items()}
    cfg["gbs"] = norm
    if cfg["lattice"]:
        for p in cfg["lattice"]:
            if p not in LATTICE:
                raise ConfigError(f"lattice: unknown phase {p!r}; choose from {sorted(LATTICE)}")
            _lattice(p, cfg["lattice"])
    for key in ("temperatures", "h2_temperatures"):
        temps = tuple(float(t) for t in cfg[key])
        if any(not (np.isfinite(t) and t > 0) for t in temps) or len(set(f"{t:g}" for t in temps)) != len(temps):
            raise ConfigError(f"{key} must be distinct temperatures > 0 K, got {list(cfg[key])}")
        cfg[key] = temps
    for key in ("steps", "snapshot_interval"):
        if not (float(cfg[key]).is_integer() and int(cfg[key]) >= 1):
            raise ConfigError(f"{key} must be an integer >= 1, got {cfg[key]!r}")
    if not (cfg["timestep_fs"] > 0):
        raise ConfigError(f"timestep_fs must be > 0, got {cfg['timestep_fs']!r}")
    for key in ("ensemble", "h2_ensemble"):
        if cfg[key] not in ("nvt", "npt"):
            raise ConfigError(f"{key} must be 'nvt' or 'npt', got {cfg[key]!r}")
    if not (isinstance(cfg["pressure_gpa"], (int, float)) and np.isfinite(cfg["pressure_gpa"])):
        raise ConfigError(f"pressure_gpa must be a finite number, got {cfg['pressure_gpa']!r}")
    for key in ("min_hh_distance", "h_volume", "gb_min_separation"):
        if not (isinstance(cfg[key], (int, float)) and np.isfinite(cfg[key]) and cfg[key] >= 0):
            raise ConfigError(f"{key} must be a number >= 0, got {cfg[key]!r}")
    if not (isinstance(cfg["gb_rm_ratio"], (int, float)) and 0 <= cfg["gb_rm_ratio"] < 1):
        raise ConfigError(f"gb_rm_ratio must be in [0, 1), got {cfg['gb_rm_ratio']!r}")
    kinds = tuple(cfg["site_kinds"])
    if not kinds or set(kinds) - set(SITE_KINDS):
        raise ConfigError(f"site_kinds must be a non-empty subset of {SITE_KINDS}, got {list(kinds)}")
    cfg["site_kinds"] = kinds
    _supercell_matrix(cfg["epsilon_supercell"], "epsilon_supercell")
    _supercell_matrix(cfg["h2_supercell"], "h2_supercell")
    if not isinstance(cfg["seed"], (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {cfg['seed']!r}")
    return cfg


@dataclass
class TiHStructure:
    """A starting structure of the scenario set: its stable ``key`` (the scenario id without temperature),
    the ``atoms`` (with ``site_kind`` / ``grain`` arrays) and the scenario ``tags``."""

    key: str
    atoms: Atoms
    tags: dict[str, Any]


def ti_h_structures(preset: str = "paper", **overrides) -> list[TiHStructure]:
    """Every starting structure of the Ti-H scenario set, as (key, atoms, tags) records (no temperatures)."""
    cfg = _resolve(preset, overrides)
    lat, seed = cfg["lattice"], int(cfg["seed"])
    put = dict(min_hh_distance=float(cfg["min_hh_distance"]), h_volume=float(cfg["h_volume"]),
               site_kinds=tuple(cfg["site_kinds"]))
    out: list[TiHStructure] = []

    def record(key, atoms, phase, kind, nominal, **extra):
        n_ti = int(np.sum(atoms.numbers == 22))
        n_h = int(np.sum(atoms.numbers == 1))
        tags = {"system": "Ti-H", "phase": phase, "kind": kind, "h_per_ti": (n_h / n_ti) if n_ti else None,
                "h_per_ti_nominal": nominal, "n_ti": n_ti, "n_h": n_h, "structure": key}
        tags.update(extra)
        out.append(TiHStructure(key, atoms, tags))

    for phase in cfg["phases"]:
        host = bulk_host(phase, cfg["supercells"][phase], lat)
        for x in cfg["h_per_ti"]:
            key = f"{phase}-TiH{x:.2f}"
            atoms = add_hydrogen(host, n_hydrogen(x, host.n_ti), _rng(seed, key), name=key, **put)
            record(key, atoms, phase, "bulk", x)
    gb_ratios = cfg["gb_h_per_ti"] if cfg["gb_h_per_ti"] is not None else cfg["h_per_ti"]
    for phase, kinds in cfg["gbs"].items():
        for kind, spec in kinds.items():
            host = grain_boundary_host(phase, kind, spec, float(cfg["gb_min_separation"]), lat,
                                       float(cfg["gb_rm_ratio"]))
            log.info("%s %s GB: %d Ti, %d sites, %.1f A between boundaries", phase, kind, host.n_ti, host.n_sites,
                     host.info["separation"])
            for x in gb_ratios:
                key = f"gb-{kind}-{phase}-TiH{x:.2f}"
                atoms = add_hydrogen(host, n_hydrogen(x, host.n_ti), _rng(seed, key), name=key, **put)
                record(key, atoms, phase, "gb", x, gb=kind, sigma=host.info["sigma"], gb_axis=host.info["axis"],
                       gb_plane=host.info["plane"], gb_angle=round(host.info["angle"], 4),
                       gb_separation=round(gb_separation(atoms), 3))
    if cfg["epsilon"]:
        record("eps-TiH2", epsilon_tih2(cfg["epsilon_supercell"], lat), "eps", "bulk", 2.0)
    if cfg["h2"]:
        record("h2", h2_crystal(cfg["h2_supercell"], lat), "H2", "molecular", None)
    return out


def ti_h_scenarios(preset: str = "paper", **overrides) -> list:
    """The Ti-H scenario set: every structure of :func:`ti_h_structures` at every temperature, plus H2.

    With the paper preset: 36 bulk structures (4 phases x 9 compositions) + 54 GB structures (3 phases x 2 GBs x
    9) + epsilon-TiH2 = 91, x (300, 1000, 3000 K) NpT, + the H2 crystal at 300 K = 274 scenarios. Ids are stable
    and readable: ``hcp-TiH0.50-1000K``, ``gb-tilt-bcc-TiH1.00-300K``, ``eps-TiH2-3000K``, ``h2-300K``.
    """
    from alkit.scenarios import Scenario, check_unique_ids

    cfg = _resolve(preset, overrides)
    scenarios = []
    for rec in ti_h_structures(preset, **overrides):
        molecular = rec.tags["kind"] == "molecular"
        temps = cfg["h2_temperatures"] if molecular else cfg["temperatures"]
        for t in temps:
            atoms = Atoms(rec.atoms.numbers, positions=rec.atoms.positions, cell=rec.atoms.cell, pbc=True)
            tags = dict(rec.tags, temperature=float(t))
            scenarios.append(Scenario(
                id=f"{rec.key}-{t:g}K", atoms=atoms, temperature=float(t),
                ensemble=cfg["h2_ensemble"] if molecular else cfg["ensemble"], steps=int(cfg["steps"]),
                timestep_fs=float(cfg["timestep_fs"]), snapshot_interval=int(cfg["snapshot_interval"]),
                pressure_gpa=float(cfg["pressure_gpa"]), tags=tags,
            ))
    check_unique_ids(scenarios)
    return scenarios
