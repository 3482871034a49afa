"""MaxVol extrapolation grade (gamma) of a moment tensor potential, and select-add.

Theory (Podryabinkin & Shapeev 2017; Gubaev et al. 2019): linearise the MTP energy in its parameters theta. Each
training configuration (configuration mode) or each atomic neighbourhood (neighbourhood mode) gives a row
``b = dE/dtheta`` (p = number of parameters: the linear ones by default, all including the radial ones as in
MLIP-2 and motep with ``parameters="all"``). The
*active set* is the p x p submatrix ``A`` of maximal volume |det A| among the training rows. The grade of a new row
is ``gamma = max_j |(b A^-1)_j|``: gamma <= 1 means interpolation, gamma > 1 extrapolation. In neighbourhood mode a
configuration's gamma is the maximum over its atoms.

The rows come from alkit's compiled core (:mod:`alkit.mtp.engine`: the per-site basis values and, for
``parameters="all"``, the site-energy derivatives w.r.t. the radial coefficients, from the same pass as energies and
forces); they equal the rows motep's ``Grader`` takes from ``jac_energies``/``jac_energy`` (tested against motep's
train mode). When the training rows have full rank, the active set is chosen by the same algorithm as motep's
default ``MaxVol`` (QR-pivoting start, then row swaps until max |c| <= 1 + tol), so gammas agree with
``motep.grade.Grader`` to round-off (tested, ``parameters="linear"``, both modes).

Where alkit's own MaxVol differs from motep's, and why:

1. Persistence. motep keeps the active set in memory only (``Grader.maxvol_result``); the active-learning loop must
   grade in other processes (MD workers, the CLI), so :class:`ActiveSet` stores the active-set matrix ``A``, where
   each row came from, and a SHA-256 of the ``.mtp`` file it belongs to in one file next to the potential (the role
   of MLIP-2's ``state.als``), and refuses to load against a different potential.
2. Rank-deficient training rows. With all coefficients (motep's default and MLIP-2's), the rows are *always* rank
   deficient: the MTP parametrisation has exact symmetries (scaling the radial coefficients of one radial function
   and inversely the moment coefficients leaves every energy unchanged, and the sums of radial basis functions that
   make up a moment also appear in other moments), so a few directions of parameter space change no energy at all
   (3 for a level-6 Ti MTP, 7 for level-6 Ti-H on our test data). Fewer configurations than parameters
   (configuration mode in early iterations) and species pairs never seen within the cutoff add more. motep's
   ``MaxVol`` refuses ``nrows < ncols`` and otherwise picks a singular submatrix and grades with a minimum-norm
   ``lstsq``, which (a) makes the "maximum volume" choice meaningless (every candidate volume is 0) and (b) silently
   drops any component of a new configuration outside the span of the training set, i.e. it under-estimates gamma
   where the potential extrapolates. alkit then uses MLIP-2's regularised start instead: ``A = eps * I`` (MLIP-2's
   ``threshold_init``, 1e-5) and training rows are swapped in greedily (Sherman-Morrison updates) until no training
   row has |c| > 1 + tol. The real rows end up spanning the training rows' span, so the exact symmetry directions
   (where every configuration's row has a zero component) do not affect gamma; training configurations grade
   <= 1 + tol; a new configuration with a component in a direction the training set never spanned grades
   ~ |component| / eps >> 1. Here ``eps`` is relative to each column's largest training value, not absolute as in
   MLIP-2 (see :func:`maxvol_regularized` for the failure an absolute ``eps`` caused on level-16 rows).
3. Grading uses a precomputed inverse of ``A`` (``inv``, falling back to ``pinv`` if ``A`` is singular) instead of a
   ``lstsq`` solve per call, because MD grades every step.
4. Rows come from the compiled core's evaluation pass (which keeps its neighbour list between MD steps) instead of
   motep's train mode, which rebuilds the neighbour list per structure and also differentiates every force and
   stress component with respect to every parameter.
5. Configuration mode divides the energy row by the number of atoms (MLIP-2's default "vibrations" weighting) so
   that structures of different sizes are comparable; ``energy_per_atom=False`` gives motep's plain energy row.

Which parameters. With ``parameters="all"`` (radial coefficients included, MLIP-2's choice) the regularised start
keeps ``eps`` rows for the directions that the training rows span only weakly; on small training sets many radial
directions are like that, and the grade then reacts to noise: on the tests' 40-structure Ti-H set a 0.02 Å rattle
of a training cell grades 20-100, and the active-learning driver saw a 0.01 Å displacement of one H take gamma from
0.8 to 5.6 after 58 training structures. The default ``parameters="linear"`` grades in the space of the linear
coefficients only (moment and species coefficients, as linear-MTP active learning does); its rows have full rank as
soon as the data do, so motep's algorithm applies and gamma varies smoothly. It is also cheaper (no radial
Jacobian). ``"all"`` stays available; the core computes its rows in the evaluation pass.

Distances. Atoms closer than half the potential's ``min_dist`` (:data:`COLLAPSE_FRACTION`) make a structure
"collapsed" (InputError when grading, a blow-up in MD); closer contacts down to that are graded, not refused.

MLIP-2 keeps one active set for all species (``MaxvolSelection`` holds a single ``MaxVol``; the species columns of
``b`` separate the types), and so does alkit; per-species active sets are an MLIP-3 feature.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from alkit._util import species_numbers
from alkit.errors import ConfigError, InputError
from alkit.mtp.engine import COLLAPSE_FRACTION, MTPEngine
from alkit.mtp.potential import MTPPotential

log = logging.getLogger(__name__)

ALS_FORMAT = "alkit-als-2"
NEIGHBORHOOD = "neighborhood"
CONFIGURATION = "configuration"
_MODE_ALIASES = {
    "neighborhood": NEIGHBORHOOD,
    "neighbourhood": NEIGHBORHOOD,
    "nbh": NEIGHBORHOOD,
    "configuration": CONFIGURATION,
    "cfg": CONFIGURATION,
}
#: MLIP-2's ``threshold_init``: the regularised start of the active set is ``eps * I``.
DEFAULT_EPS = 1.0e-5
#: Parameter sets the rows are derivatives with respect to: all coefficients (MLIP-2, motep's default) or only the
#: linear ones (moment and species coefficients).
PARAMETER_SETS = ("all", "linear")
#: Submatrices whose column-scaled condition number exceeds 1/RANK_RCOND are treated as rank deficient.
RANK_RCOND = 1.0e-10


# --------------------------------------------------------------------------------------------------------------
# potential and basis rows
# --------------------------------------------------------------------------------------------------------------
def normalize_mode(mode: str) -> str:
    """Map 'nbh'/'neighbourhood'/'cfg'... to ``'neighborhood'`` or ``'configuration'``."""
    try:
        return _MODE_ALIASES[str(mode).lower()]
    except KeyError:
        raise InputError(f"unknown grading mode {mode!r}: use 'neighborhood' (nbh) or 'configuration' (cfg)") from None


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def normalize_parameters(parameters: str) -> str:
    if parameters not in PARAMETER_SETS:
        raise InputError(f"parameters must be one of {PARAMETER_SETS}, got {parameters!r}")
    return parameters


def check_atoms(atoms: Atoms, species: Sequence[int], min_dist: float, name: str = "structure") -> None:
    """Raise InputError if ``atoms`` has a species the potential does not know, non-finite positions, or atoms
    closer than ``min_dist`` (callers pass :attr:`ActiveSet.collapse_distance`)."""
    from ase.neighborlist import neighbor_list

    if len(atoms) == 0:
        raise InputError(f"{name} has no atoms")
    unknown = sorted(set(int(z) for z in atoms.numbers) - set(int(z) for z in species))
    if unknown:
        raise InputError(
            f"{name} ({atoms.get_chemical_formula()}) contains species {[chemical_symbols[z] for z in unknown]} "
            f"that the potential does not know (it knows {[chemical_symbols[z] for z in species]})"
        )
    if not np.all(np.isfinite(atoms.positions)):
        raise InputError(f"{name} has non-finite positions")
    d = neighbor_list("d", atoms, float(min_dist)) if min_dist > 0 else np.empty(0)
    if len(d):
        raise InputError(
            f"{name} ({atoms.get_chemical_formula()}) has atoms {d.min():.3f} Å apart, closer than "
            f"{min_dist:.3f} Å (half the potential's min_dist): a collapsed structure"
        )


def basis_rows(engine, atoms: Atoms, mode: str, results: dict | None = None, per_atom: bool = True,
               parameters: str = "all") -> np.ndarray:
    """Rows ``dE/dtheta`` for ``atoms``: shape (natoms, p) in neighbourhood mode (derivatives of the site energies),
    (1, p) in configuration mode (of the total energy, divided by the number of atoms if ``per_atom``: MLIP-2's
    default "vibrations" weighting).

    Columns in motep's order: moment coefficients, species coefficients, then (``parameters="all"``) the radial
    coefficients, i.e. the same rows motep's ``Grader`` builds from ``jac_energies``/``jac_energy``.
    ``engine`` is an :class:`alkit.mtp.engine.MTPEngine`; if ``results`` is given, the energy/forces/stress of the
    same evaluation are copied into it (MD gets forces and gamma from a single pass).
    """
    res = engine.compute(atoms, rows=normalize_parameters(parameters))
    if results is not None:
        results.update({k: v for k, v in res.items() if k != "rows"})
    return site_rows_to_mode(res["rows"], mode, per_atom)


def site_rows_to_mode(site_rows: np.ndarray, mode: str, per_atom: bool = True) -> np.ndarray:
    """Per-site rows as graded in ``mode``: themselves (neighbourhood) or their sum (configuration; / natoms)."""
    if mode == NEIGHBORHOOD:
        return site_rows
    row = site_rows.sum(axis=0)[None, :]
    return row / len(site_rows) if per_atom else row


# --------------------------------------------------------------------------------------------------------------
# MaxVol algorithms
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _MaxVolState:
    A: np.ndarray  # (p, p) active-set matrix
    source: np.ndarray  # (p,) row index into the matrix it was chosen from, -1 for a regulariser row
    algorithm: str
    nit: int
    success: bool


# The swap loops stop when the updated c says max |c| <= 1 + tol; they then recompute c exactly (up to MAX_REFRESH
# times) and carry on while the exact c still exceeds 1 + REFRESH_TOL (looser than tol: the exact c has round-off).
MAX_REFRESH = 8
REFRESH_TOL = 1e-6


def _rank_update(c: np.ndarray, i: int, j: int) -> None:
    """In-place Sherman-Morrison update of ``c = B A^-1`` after row ``i`` of ``B`` replaces row ``j`` of ``A``."""
    row = c[i, :].copy()
    row[j] -= 1.0
    col = c[:, j].copy()
    c -= np.outer(col, row) / c[i, j]


def _colscale(B: np.ndarray) -> np.ndarray:
    s = np.abs(B).max(axis=0)
    s[s == 0] = 1.0
    return s


def _is_full_rank(A: np.ndarray, scale: np.ndarray, rcond: float = RANK_RCOND) -> bool:
    if not np.all(np.isfinite(A)):
        return False
    sv = np.linalg.svd(A / scale, compute_uv=False)
    return bool(sv.size and sv[-1] > rcond * sv[0])


def maxvol_qr(B: np.ndarray, tol: float = 1e-9, max_iter: int = 100_000) -> _MaxVolState | None:
    """motep's default MaxVol (QR-pivoting start, swaps until max |c| - 1 < tol). None if ``B`` is rank deficient."""
    from scipy.linalg import qr

    n, p = B.shape
    if n < p:
        return None
    selected = np.array(qr(B.T, pivoting=True, mode="r")[-1][:p], dtype=int)
    if not _is_full_rank(B[selected], _colscale(B)):
        return None
    in_sel = np.zeros(n, dtype=bool)
    in_sel[selected] = True
    c = np.linalg.lstsq(B[selected].T, B.T, rcond=None)[0].T
    success, nit = True, 0
    refreshes = 0
    for nit in range(max_iter):
        i, j = np.divmod(int(np.argmax(np.abs(c))), p)
        if abs(c[i, j]) - 1.0 < tol or in_sel[i]:
            if refreshes >= MAX_REFRESH:
                break
            c, refreshes = _refresh(B, B[selected]), refreshes + 1
            i, j = np.divmod(int(np.argmax(np.abs(c))), p)
            if abs(c[i, j]) - 1.0 < REFRESH_TOL or in_sel[i]:
                break
        in_sel[selected[j]] = False
        in_sel[i] = True
        selected[j] = i
        _rank_update(c, i, j)
    else:
        success = False
        log.warning("MaxVol did not converge in %d swaps", max_iter)
    order = np.argsort(selected)  # motep sorts the indices; the row order of A does not change gamma
    selected = selected[order]
    return _MaxVolState(A=B[selected].copy(), source=selected, algorithm="maxvol-qr", nit=nit, success=success)


def maxvol_regularized(B: np.ndarray, eps: float = DEFAULT_EPS, tol: float = 1e-9, max_iter: int = 100_000) -> _MaxVolState:
    """MLIP-2's MaxVol from a regularised start ``eps * I``; works for any number of rows and any rank.

    Unlike MLIP-2, the regulariser is relative to each column's largest training value: the loop runs on the
    column-scaled rows ``B / s`` from ``eps * I`` and returns ``A = A_scaled * s`` (gamma of a data row is unchanged
    by column scaling). Why: level-16 columns reach 3e13, where round-off alone is ~1e-3, far above an absolute
    ``eps = 1e-5``; a workstation campaign swapped such noise in for the one direction its rows did not span, and
    the active set graded 198 of its 202 own training structures above 1 (up to 10.7) and broke every MD at step 0.
    A direction the training rows span only weakly (below ``eps`` relative) still keeps its ``eps`` row, and any new
    row with a component along it grades high, as in MLIP-2.
    """
    n, p = B.shape
    scale = _colscale(B) if n else np.ones(p)
    B = B / scale
    A = eps * np.eye(p)
    source = np.full(p, -1, dtype=int)
    c = B / eps
    in_sel = np.zeros(n, dtype=bool)
    success, nit = True, 0
    refreshes = 0
    for nit in range(max_iter):
        if n == 0:
            break
        i, j = np.divmod(int(np.argmax(np.abs(c))), p)
        if abs(c[i, j]) - 1.0 < tol or in_sel[i]:
            if refreshes >= MAX_REFRESH:
                break
            c, refreshes = _refresh(B, A), refreshes + 1
            i, j = np.divmod(int(np.argmax(np.abs(c))), p)
            if abs(c[i, j]) - 1.0 < REFRESH_TOL or in_sel[i]:
                break
        if source[j] >= 0:
            in_sel[source[j]] = False
        in_sel[i] = True
        source[j] = i
        A[j] = B[i]
        _rank_update(c, i, j)
    else:
        success = False
        log.warning("regularised MaxVol did not converge in %d swaps", max_iter)
    return _MaxVolState(A=A * scale, source=source, algorithm="maxvol-regularized", nit=nit, success=success)


def _inverse(A: np.ndarray) -> np.ndarray:
    """Inverse of the active-set matrix, computed after equilibrating its rows and columns; pseudo-inverse if it is
    singular (never raises).

    Why equilibrate: the columns of basis rows span many orders of magnitude (level-16 Ti-H: 1e-5 to 4e11), so ``A``
    has a condition number near 1e17 even when it is well conditioned up to scaling, and ``np.linalg.inv(A)`` then
    returns an inverse that grades the active set's own training structures at gamma ~ 500. With
    ``A = R As C`` (R, C diagonal) the inverse ``C^-1 As^-1 R^-1`` is exact up to the conditioning of ``As``.
    """
    c = _colscale(A)
    As = A / c
    r = np.abs(As).max(axis=1)
    r[r == 0] = 1.0
    As = As / r[:, None]
    try:
        inv = np.linalg.inv(As)
        if np.all(np.isfinite(inv)):
            return inv / c[:, None] / r[None, :]
    except np.linalg.LinAlgError:
        pass
    log.warning("active-set matrix is singular; grading with its pseudo-inverse")
    return np.linalg.pinv(As) / c[:, None] / r[None, :]


def _refresh(B: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``c = B A^-1`` recomputed from scratch: the Sherman-Morrison updates of a long swap sequence drift (on rows of
    ~1e11 they lose every digit), so the MaxVol loops re-check their result with this before they stop."""
    return B @ _inverse(A)


# --------------------------------------------------------------------------------------------------------------
# ActiveSet
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ActiveSet:
    """A MaxVol active set of an MTP (MLIP-2's ``state.als``): grades any structure, saves and reloads.

    Build it with :meth:`fit`; grade with :meth:`grade` / :meth:`grade_many`; :meth:`save` / :meth:`load`.
    ``sources[k] = (training index, atom index)`` tells where row k of ``matrix`` came from (atom index -1 in
    configuration mode; (-1, -1) for a regulariser row of the regularised start).
    """

    mtp_path: str
    species: list[int]
    mode: str
    matrix: np.ndarray
    sources: np.ndarray
    mtp_sha256: str
    eps: float = DEFAULT_EPS
    tol: float = 1e-9
    energy_per_atom: bool = True
    parameters: str = "linear"
    algorithm: str = ""
    n_train: int = 0
    n_rows: int = 0
    success: bool = True
    _inv: np.ndarray | None = field(default=None, repr=False, compare=False)
    _data: object = field(default=None, repr=False, compare=False)
    _engine: object = field(default=None, repr=False, compare=False)

    # ---- construction ------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        mtp_path: str | os.PathLike,
        train: Sequence[Atoms],
        species: Sequence[int | str],
        mode: str = NEIGHBORHOOD,
        max_iter: int = 100_000,
        tol: float = 1e-9,
        eps: float = DEFAULT_EPS,
        energy_per_atom: bool = True,
        parameters: str = "linear",
    ) -> "ActiveSet":
        """Select the MaxVol active set from the training structures ``train``.

        ``parameters``: ``"linear"`` (default) linearises the MTP in its linear coefficients (moment and species
        coefficients), as linear-MTP active learning does (Podryabinkin & Shapeev 2017); ``"all"`` also in the radial
        coefficients (MLIP-2, motep's default). See the module docstring for why linear is the default.

        Configuration mode grades the energy row divided by the number of atoms (``energy_per_atom``, MLIP-2's
        default weighting, so that structures of different sizes are comparable); motep's ``Grader`` uses the
        plain energy row (``energy_per_atom=False``). Neighbourhood mode is unaffected.

        Full-rank rows: motep's MaxVol (QR start + swaps). Rank-deficient rows (e.g. fewer configurations than
        parameters in configuration mode): MLIP-2's regularised start ``eps * I``.
        """
        mode = normalize_mode(mode)
        species = species_numbers(species, InputError)
        train = list(train)
        if not train:
            raise InputError("the training set for the active set is empty")
        self = cls(
            mtp_path=str(Path(mtp_path)),
            species=species,
            mode=mode,
            matrix=np.zeros((0, 0)),
            sources=np.zeros((0, 2), dtype=int),
            mtp_sha256="",
            eps=float(eps),
            tol=float(tol),
            energy_per_atom=bool(energy_per_atom),
            parameters=normalize_parameters(parameters),
        )
        self.potential  # reads and validates the file
        self.mtp_sha256 = file_sha256(mtp_path)
        B, owners = self.rows_of(train, check=True)
        p = self.n_parameters
        state = maxvol_qr(B, tol=tol, max_iter=max_iter)
        if state is None:
            log.info(
                "training rows are rank deficient (%d rows, %d parameters, %s mode): regularised MaxVol start",
                B.shape[0], p, mode,
            )
            state = maxvol_regularized(B, eps=eps, tol=tol, max_iter=max_iter)
        src = np.full((p, 2), -1, dtype=int)
        real = state.source >= 0
        src[real] = owners[state.source[real]]
        self.matrix, self.sources = state.A, src
        self.algorithm, self.success = state.algorithm, state.success
        self.n_train, self.n_rows = len(train), int(B.shape[0])
        log.info(
            "active set (%s mode, %s): %d parameters, %d of them from %d training rows, %d swaps",
            mode, state.algorithm, p, int(real.sum()), B.shape[0], state.nit,
        )
        return self

    def __getstate__(self) -> dict:
        """Pickle without the cached potential, inverse and engine (rebuilt on demand in the other process)."""
        state = dict(self.__dict__)
        state.update(_inv=None, _data=None, _engine=None)
        return state

    # ---- potential / engine ------------------------------------------------------------------------------
    @property
    def potential(self) -> MTPPotential:
        """The potential (read and checked once; ``InputError`` naming the file if it is missing or corrupt)."""
        if self._data is None:
            try:
                pot = MTPPotential.read(self.mtp_path).require_trained()
                pot.resolve_species(self.species_symbols)
            except ConfigError as exc:
                raise InputError(str(exc)) from None
            self._data = pot
        return self._data

    @property
    def species_symbols(self) -> list[str]:
        return [chemical_symbols[z] for z in self.species]

    @property
    def min_dist(self) -> float:
        """The potential's ``min_dist`` (start of its radial basis)."""
        return float(self.potential.min_dist)

    @property
    def collapse_distance(self) -> float:
        """Distance below which a structure counts as collapsed: ``COLLAPSE_FRACTION`` x min_dist. Contacts between
        that and min_dist lie outside the radial basis' training range: they are graded (and grade high), not
        refused, because active learning needs exactly those structures."""
        return COLLAPSE_FRACTION * self.min_dist

    @property
    def n_parameters(self) -> int:
        pot = self.potential
        return pot.n_params if self.parameters == "all" else pot.n_linear

    @property
    def engine(self) -> MTPEngine:
        """The (persistent) evaluation engine; its neighbour list is reused between calls."""
        if self._engine is None:
            self._engine = MTPEngine(self.potential, self.species_symbols)
        return self._engine

    @property
    def inverse(self) -> np.ndarray:
        if self._inv is None:
            self._inv = _inverse(self.matrix)
        return self._inv

    def rows_of(self, structures: Iterable[Atoms], check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Stack the basis rows of ``structures``; also return (structure index, atom index) per row."""
        blocks, owners = [], []
        for k, atoms in enumerate(structures):
            if check:
                check_atoms(atoms, self.species, self.collapse_distance, name=f"structure {k}")
            rows = basis_rows(self.engine, atoms, self.mode, per_atom=self.energy_per_atom, parameters=self.parameters)
            blocks.append(rows)
            if self.mode == NEIGHBORHOOD:
                owners.append(np.column_stack([np.full(len(rows), k), np.arange(len(rows))]))
            else:
                owners.append(np.array([[k, -1]]))
        if not blocks:
            return np.zeros((0, self.n_parameters)), np.zeros((0, 2), dtype=int)
        return np.vstack(blocks), np.vstack(owners).astype(int)

    # ---- grading ----------------------------------------------------------------------------------------
    def rows(self, atoms: Atoms, results: dict | None = None) -> np.ndarray:
        """Basis rows of one structure (no checks); ``results`` receives energy/forces/stress if given."""
        return basis_rows(self.engine, atoms, self.mode, results=results, per_atom=self.energy_per_atom,
                          parameters=self.parameters)

    def gamma_from_site_rows(self, site_rows: np.ndarray) -> tuple[float, np.ndarray]:
        """(gamma, per-atom gammas) of a structure from its per-site rows (see :meth:`grade`)."""
        g = self.gamma_of_rows(site_rows_to_mode(site_rows, self.mode, self.energy_per_atom))
        if self.mode == NEIGHBORHOOD:
            return float(g.max()), g
        return float(g[0]), np.full(len(site_rows), float(g[0]))

    def gamma_of_rows(self, rows: np.ndarray) -> np.ndarray:
        """max_j |(b A^-1)_j| for each row b."""
        return np.abs(rows @ self.inverse).max(axis=1)

    def grade(self, atoms: Atoms, check: bool = True) -> tuple[float, np.ndarray]:
        """gamma of ``atoms`` and per-atom gammas (neighbourhood mode; in configuration mode every atom carries
        the configuration's gamma)."""
        if check:
            check_atoms(atoms, self.species, self.collapse_distance)
        g = self.gamma_of_rows(self.rows(atoms))
        if self.mode == NEIGHBORHOOD:
            return float(g.max()), g
        return float(g[0]), np.full(len(atoms), float(g[0]))

    def grade_many(self, structures: Iterable[Atoms], check: bool = True) -> np.ndarray:
        """gamma of each structure."""
        return np.array([self.grade(a, check=check)[0] for a in structures], dtype=float)

    # ---- persistence --------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the active set to ``path`` (``state.als`` by convention) in alkit's active-set format.

        Format ``alkit-als-2`` (read here and by alkit's LAMMPS pair style): a first line ``alkit-als-2``, a second
        line with a JSON header (mode, parameters, p, species, the potential's path relative to ``path``'s folder,
        its SHA-256 and CRC-32, eps, tol, ...), then little-endian binary arrays: the active-set matrix ``A``
        (p x p float64), its inverse (p x p float64, the one gamma is graded with) and ``sources`` (p x 2 int64).
        """
        import json
        import zlib

        path = Path(path)
        try:
            rel = os.path.relpath(Path(self.mtp_path).resolve(), path.parent.resolve())
        except ValueError:  # different drive
            rel = str(Path(self.mtp_path).resolve())
        p = int(self.matrix.shape[0])
        header = {
            "mode": self.mode, "parameters": self.parameters, "p": p, "species": [int(z) for z in self.species],
            "mtp_relpath": rel, "mtp_sha256": self.mtp_sha256,
            "mtp_crc32": zlib.crc32(Path(self.mtp_path).read_bytes()), "eps": float(self.eps), "tol": float(self.tol),
            "energy_per_atom": bool(self.energy_per_atom), "algorithm": self.algorithm, "n_train": int(self.n_train),
            "n_rows": int(self.n_rows), "success": bool(self.success),
        }
        body = b"".join([
            (ALS_FORMAT + "\n" + json.dumps(header) + "\n").encode(),
            np.ascontiguousarray(self.matrix, dtype="<f8").tobytes(),
            np.ascontiguousarray(self.inverse, dtype="<f8").tobytes(),
            np.ascontiguousarray(self.sources, dtype="<i8").reshape(p, 2).tobytes(),
        ])
        from alkit._util import atomic_write

        return atomic_write(path, body)

    @classmethod
    def load(cls, path: str | os.PathLike, mtp_path: str | os.PathLike | None = None) -> "ActiveSet":
        """Read an active set written by :meth:`save`. ``mtp_path`` defaults to the potential it was saved with;
        a potential whose content differs from the one the active set was built for is refused."""
        import json

        path = Path(path)
        if not path.is_file():
            raise InputError(f"active-set file {path} does not exist")
        try:
            raw = path.read_bytes()
            first = raw.index(b"\n")
            if raw[:first].decode() != ALS_FORMAT:
                raise ValueError(f"format {raw[:first][:40]!r}, expected {ALS_FORMAT}")
            second = raw.index(b"\n", first + 1)
            d = json.loads(raw[first + 1:second].decode())
            p = int(d["p"])
            blob = raw[second + 1:]
            if len(blob) != 8 * (2 * p * p + 2 * p):
                raise ValueError(f"{len(blob)} bytes of arrays for p = {p}")
            matrix = np.frombuffer(blob, dtype="<f8", count=p * p).reshape(p, p).astype(float)
            inverse = np.frombuffer(blob, dtype="<f8", count=p * p, offset=8 * p * p).reshape(p, p).astype(float)
            sources = np.frombuffer(blob, dtype="<i8", count=2 * p, offset=16 * p * p).reshape(p, 2).astype(int)
        except Exception as exc:
            raise InputError(f"cannot read active-set file {path}: {type(exc).__name__}: {exc}") from exc
        if mtp_path is None:
            mtp_path = path.parent / str(d["mtp_relpath"])
        mtp_path = Path(mtp_path)
        if not mtp_path.is_file():
            raise InputError(f"potential {mtp_path} of active set {path} does not exist")
        sha = file_sha256(mtp_path)
        if sha != str(d["mtp_sha256"]):
            raise InputError(
                f"active set {path} was built for a different potential than {mtp_path} (SHA-256 differs); "
                "rebuild it with ActiveSet.fit / `alkit mtp grade`"
            )
        out = cls(
            mtp_path=str(mtp_path), species=[int(z) for z in d["species"]], mode=str(d["mode"]), matrix=matrix,
            sources=sources, mtp_sha256=sha, eps=float(d["eps"]), tol=float(d["tol"]),
            energy_per_atom=bool(d["energy_per_atom"]), parameters=str(d["parameters"]),
            algorithm=str(d["algorithm"]), n_train=int(d["n_train"]), n_rows=int(d["n_rows"]),
            success=bool(d["success"]), _inv=inverse,
        )
        if out.matrix.shape != (out.n_parameters, out.n_parameters):
            raise InputError(
                f"active set {path} has a {out.matrix.shape} matrix but potential {mtp_path} has "
                f"{out.n_parameters} parameters"
            )
        return out


# --------------------------------------------------------------------------------------------------------------
# select-add
# --------------------------------------------------------------------------------------------------------------
def select_add(
    active_set: ActiveSet,
    candidates: Sequence[Atoms],
    max_add: int,
    threshold: float = 1.0,
    max_iter: int = 100_000,
    train: Sequence[Atoms] | None = None,
) -> list[int]:
    """MLIP-2 ``select-add``: indices of the candidates that most enlarge the active-set volume, at most ``max_add``.

    Greedy MaxVol: starting from the active set of the training set, repeatedly swap in the row with the largest
    |c| = |b A^-1| (each swap multiplies |det A| by |c|) while it exceeds ``threshold``; once ``max_add`` candidates
    hold rows of the active set, only rows of those candidates (and training rows) may still enter. The candidates
    that hold rows at the end are returned, in the order they first entered. With ``train`` (MLIP-2's select-add
    also reads the training set) training rows compete too, so a candidate that merely duplicates training data is
    never chosen. ``active_set`` is not modified.
    """
    candidates = list(candidates)
    if max_add <= 0 or not candidates:
        return []
    C, owners = active_set.rows_of(candidates, check=True)
    owner = owners[:, 0]
    if train:
        T, _ = active_set.rows_of(list(train), check=True)
        C = np.vstack([T, C])  # training rows first: ties go to training data
        owner = np.concatenate([np.full(len(T), -1), owner])
    p = active_set.matrix.shape[0]
    c = C @ active_set.inverse
    row_owner = np.full(p, -1, dtype=int)  # candidate owning each active-set row (-1: training/regulariser)
    row_src = np.full(p, -1, dtype=int)  # pool row index in C
    first_entry: dict[int, int] = {}
    limit = max(float(threshold), 1.0 + active_set.tol)
    for it in range(max_iter):
        current = set(row_owner[row_owner >= 0].tolist())
        absc = np.abs(c)
        if len(current) >= max_add:
            allowed = (owner < 0) | np.isin(owner, list(current))
            absc[~allowed] = 0.0
        absc[row_src[row_src >= 0]] = 0.0  # rows already in the active set
        i, j = np.divmod(int(np.argmax(absc)), p)
        if absc[i, j] <= limit:
            break
        _rank_update(c, i, j)
        row_owner[j], row_src[j] = owner[i], i
        if owner[i] >= 0:
            first_entry.setdefault(int(owner[i]), it)
    final = set(row_owner[row_owner >= 0].tolist())
    chosen = sorted(final, key=lambda k: first_entry[k])
    log.info("select-add: %d of %d candidates enlarge the active set", len(chosen), len(candidates))
    return [int(k) for k in chosen]
