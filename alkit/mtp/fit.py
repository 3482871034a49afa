"""Fitting MTPs with motep: LLS, optional BFGS over all coefficients, LLS again; metrics; a safe ASE calculator.

Labelled structures are ASE ``Atoms`` carrying a ``SinglePointCalculator`` (energy in eV, forces in eV/Å, stress in
eV/Å^3, ASE conventions). Species order = MLIP-2 type indices. alkit's ``.mtp`` files carry their species in
``potential_tag`` (see :func:`alkit.mtp.levels.make_tag`), so a trained potential knows its elements.

motep traps handled here: its ``Trainer`` writes ``intermediate_*.mtp`` into the working directory (training runs
with the CWD switched to a scratch directory, under a lock); ``Trainer(seed=0)`` means "random seed" (alkit passes an
explicit generator); ``write_mtp`` needs ``legacy=True`` for MLIP-2; one motep calculator reused on Atoms of another
size crashes (:class:`MTPCalculator` resets its neighbour list).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import atomic_numbers, chemical_symbols

from motep.calculator import MTP as MotepMTP

from alkit.errors import ConfigError, InputError
from alkit.mtp.levels import generate_mtp, make_tag, parse_tag

log = logging.getLogger(__name__)

#: eV/Å^3 -> GPa
EV_A3_TO_GPA = 160.21766208
_CWD_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------------------------
# .mtp files
# ----------------------------------------------------------------------------------------------------------------


def load_mtp(path: str | os.PathLike):
    """Read an MLIP-2 ``.mtp`` file with motep and check it; ``ConfigError`` naming the file and the problem."""
    from motep.io.mlip.mtp import read_mtp

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"MTP file {path} does not exist")
    try:
        head = path.read_text(errors="replace")[:4096]
    except OSError as exc:
        raise ConfigError(f"cannot read MTP file {path}: {exc}") from exc
    if not head.lstrip().startswith("MTP"):
        raise ConfigError(f"{path} is not an MLIP-2 .mtp file (it does not start with 'MTP')")
    try:
        data = read_mtp(path)
    except Exception as exc:  # motep raises ValueError/KeyError/StopIteration/... on broken files
        raise ConfigError(f"MTP file {path} is corrupt: {type(exc).__name__}: {exc}") from None
    try:
        _validate_mtp(data, path)
    except (TypeError, ValueError, IndexError, AttributeError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"MTP file {path} is corrupt: {type(exc).__name__}: {exc}") from None
    return data


def _validate_mtp(data, path: Path) -> None:
    def bad(msg: str):
        raise ConfigError(f"MTP file {path} is corrupt: {msg}")

    if type(data).__name__ != "MTPData":
        bad("magnetic MTPs are not supported")
    for key in ("species_count", "radial_funcs_count", "alpha_moments_count", "alpha_index_basic_count",
                "alpha_index_times_count", "alpha_scalar_moments"):
        if not isinstance(getattr(data, key), (int, np.integer)):
            bad(f"{key} = {getattr(data, key)!r} is not an integer")
    if data.species_count < 1:
        bad("species_count is missing or < 1")
    rb = data.radial_basis
    if rb.size < 1 or not np.isfinite(rb.min) or not np.isfinite(rb.max):
        bad("radial basis (min_dist, max_dist, radial_basis_size) is missing")
    if not 0 <= rb.min < rb.max:
        bad(f"need 0 <= min_dist < max_dist, got {rb.min}, {rb.max}")
    if data.radial_funcs_count < 1:
        bad("radial_funcs_count is missing")
    basic = data.alpha_index_basic
    times = data.alpha_index_times
    mapping = data.alpha_moment_mapping
    if basic is None or mapping is None or times is None:
        bad("alpha_index_basic, alpha_index_times or alpha_moment_mapping is missing")
    if len(basic) != data.alpha_index_basic_count:
        bad(f"alpha_index_basic has {len(basic)} entries, alpha_index_basic_count says {data.alpha_index_basic_count}")
    if len(times) != data.alpha_index_times_count:
        bad(f"alpha_index_times has {len(times)} entries, alpha_index_times_count says {data.alpha_index_times_count}")
    if len(mapping) != data.alpha_scalar_moments:
        bad(f"alpha_moment_mapping has {len(mapping)} entries, alpha_scalar_moments says {data.alpha_scalar_moments}")
    if basic.ndim != 2 or basic.shape[1] != 4 or (len(basic) and (basic[:, 0].max() >= data.radial_funcs_count or basic.min() < 0)):
        bad("alpha_index_basic entries must be {mu, a, b, c} with mu < radial_funcs_count")
    amc = data.alpha_moments_count
    if len(times) and (times.ndim != 2 or times.shape[1] != 4 or times[:, [0, 1, 3]].max() >= amc or times.min() < 0):
        bad("alpha_index_times refers to moments outside alpha_moments_count")
    if len(mapping) and (mapping.max() >= amc or mapping.min() < 0):
        bad("alpha_moment_mapping refers to moments outside alpha_moments_count")
    spc, rfc = data.species_count, data.radial_funcs_count
    if data.radial_coeffs is not None and data.radial_coeffs.shape != (spc, spc, rfc, rb.size):
        bad(f"radial_coeffs have shape {data.radial_coeffs.shape}, expected {(spc, spc, rfc, int(rb.size))}")
    if data.moment_coeffs is not None and len(data.moment_coeffs) != data.alpha_scalar_moments:
        bad(f"{len(data.moment_coeffs)} moment_coeffs for {data.alpha_scalar_moments} scalar moments")
    if data.species_coeffs is not None and len(data.species_coeffs) != spc:
        bad(f"{len(data.species_coeffs)} species_coeffs for {spc} species")
    for name in ("radial_coeffs", "moment_coeffs", "species_coeffs"):
        arr = getattr(data, name)
        if arr is not None and not np.all(np.isfinite(arr)):
            bad(f"{name} contain non-finite values")


def is_trained(data) -> bool:
    """True when the potential holds all its coefficients."""
    return all(getattr(data, k) is not None for k in ("radial_coeffs", "moment_coeffs", "species_coeffs"))


def mtp_species(path_or_data) -> list[str] | None:
    """Species (type order) recorded in an alkit ``.mtp`` file's ``potential_tag``; None if not recorded."""
    data = load_mtp(path_or_data) if isinstance(path_or_data, (str, os.PathLike)) else path_or_data
    return parse_tag(data.potential_tag)[1]


def _resolve_species(data, species: Sequence[str] | None, path) -> list[str]:
    tagged = parse_tag(data.potential_tag)[1]
    if species is None:
        if tagged is None:
            raise ConfigError(f"{path} does not record its species; give them (e.g. species=['Ti', 'H'])")
        species = tagged
    species = [str(s) for s in species]
    unknown = [s for s in species if s not in atomic_numbers]
    if unknown:
        raise ConfigError(f"unknown chemical symbol(s) {unknown}")
    if len(species) != data.species_count:
        raise ConfigError(f"{path} has species_count = {data.species_count} but {len(species)} species were given: {species}")
    if tagged is not None and tagged != species:
        raise ConfigError(f"{path} was made for species {tagged} (in this type order), not {species}")
    return species


# ----------------------------------------------------------------------------------------------------------------
# Training sets
# ----------------------------------------------------------------------------------------------------------------


def read_training_set(path: str | os.PathLike, species: Sequence[str] | None = None) -> list[Atoms]:
    """Read labelled structures from an MLIP-2 ``.cfg`` (``species`` maps type indices to elements) or any format
    ASE reads (extxyz ...)."""
    path = Path(path)
    if path.suffix.lower() == ".cfg":
        from alkit.mtp.cfg import read_cfg

        if species is None:
            raise InputError(f"{path}: a .cfg file holds type indices only; give the species (e.g. Ti H)")
        return read_cfg(path, species)
    from alkit.io import read_structures

    return read_structures(path)


def write_training_set(path: str | os.PathLike, structures: Sequence[Atoms], species: Sequence[str] | None = None) -> Path:
    """Write labelled structures to ``.cfg`` (needs ``species``) or any ASE format (by suffix, e.g. ``.extxyz``)."""
    path = Path(path)
    if path.suffix.lower() == ".cfg":
        from alkit.mtp.cfg import write_cfg

        if species is None:
            raise InputError(f"{path}: writing a .cfg needs the species (type order)")
        return write_cfg(path, structures, species)
    from ase.io import write

    path.parent.mkdir(parents=True, exist_ok=True)
    write(str(path), list(structures), format="extxyz" if path.suffix.lower() in (".xyz", ".extxyz") else None)
    return path


def _labels(atoms: Atoms) -> dict:
    calc = atoms.calc
    if calc is None:
        return {}
    res = getattr(calc, "results", None) or {}
    return dict(res)


def prepare_labelled(structures: Iterable[Atoms], species: Sequence[str], name: str = "training set",
                     need_forces: bool = False) -> list[Atoms]:
    """Clean copies of labelled structures (numbers, positions, cell, pbc + a SinglePointCalculator holding only
    energy/forces/stress), checked: non-empty set, every structure labelled with a finite energy, only known species,
    no atoms closer than 0.3 Å."""
    from alkit.io import min_distance

    structures = list(structures)
    if not structures:
        raise InputError(f"the {name} is empty")
    allowed = {atomic_numbers[s] for s in species}
    out = []
    for k, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise InputError(f"{name}: item {k} is a {type(atoms).__name__}, not ase.Atoms")
        what = f"{name}: structure {k} ({atoms.get_chemical_formula() or 'no atoms'})"
        if len(atoms) == 0:
            raise InputError(f"{what} has no atoms")
        extra = sorted(set(atoms.numbers.tolist()) - allowed)
        if extra:
            raise InputError(f"{what} contains {[chemical_symbols[z] for z in extra]}, which the potential "
                             f"(species {list(species)}) does not know")
        res = _labels(atoms)
        energy = res.get("energy", res.get("free_energy"))
        if energy is None:
            raise InputError(f"{what} is not labelled: it has no energy (attach a SinglePointCalculator)")
        if not np.isfinite(energy):
            raise InputError(f"{what} has a non-finite energy {energy}")
        clean = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        labels = {"energy": float(energy)}
        forces = res.get("forces")
        if forces is not None:
            forces = np.asarray(forces, dtype=float)
            if forces.shape != (len(atoms), 3) or not np.all(np.isfinite(forces)):
                raise InputError(f"{what} has forces of shape {forces.shape} or non-finite forces")
            labels["forces"] = forces.copy()
        elif need_forces:
            raise InputError(f"{what} has no forces")
        stress = res.get("stress")
        if stress is not None and np.all(atoms.pbc) and atoms.cell.rank == 3:
            stress = np.asarray(stress, dtype=float)
            if stress.shape == (3, 3):
                stress = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            if stress.shape != (6,) or not np.all(np.isfinite(stress)):
                raise InputError(f"{what} has a malformed stress {stress.shape}")
            labels["stress"] = stress.copy()
        d = min_distance(clean)
        if d < 0.3:
            raise InputError(f"{what} has overlapping atoms ({d:.3f} Å apart)")
        clean.calc = SinglePointCalculator(clean, **labels)
        out.append(clean)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """Outcome of :func:`train_mtp`. Metrics as returned by :func:`evaluate`."""

    mtp_path: Path
    train_metrics: dict
    valid_metrics: dict | None
    seconds: float
    n_train: int
    min_dist: float = float("nan")
    n_parameters: int = 0
    steps: list = field(default_factory=list)


@contextlib.contextmanager
def _in_directory(path: Path):
    """Run with the CWD switched to ``path`` (motep's Trainer writes intermediate_*.mtp into the CWD)."""
    with _CWD_LOCK:
        old = os.getcwd()
        os.chdir(path)
        try:
            yield
        finally:
            os.chdir(old)


class _IterationBar(logging.Handler):
    """Turns motep's per-iteration 'loss N: value' log lines into a tqdm progress bar."""

    def __init__(self, bar):
        super().__init__(logging.INFO)
        self.bar = bar

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "loss %d: %s":
            self.bar.update(1)
            try:
                self.bar.set_postfix(loss=f"{float(record.args[1]):.4g}", refresh=False)
            except Exception:  # pragma: no cover - cosmetic only
                pass


@contextlib.contextmanager
def _quiet_motep(bar=None):
    """motep logs every parameter at INFO; keep it to warnings (plus the progress bar) while alkit trains."""
    import io

    motep_log = logging.getLogger("motep")
    old = motep_log.level
    quiet = not log.isEnabledFor(logging.DEBUG)
    if quiet:
        motep_log.setLevel(logging.WARNING)
    # motep prints step timings with print(): keep them out of alkit's stdout
    redirect = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
    handler = None
    if bar is not None:
        handler = _IterationBar(bar)
        scipy_log = logging.getLogger("motep.optimizers.scipy")
        scipy_log.addHandler(handler)
        scipy_old = scipy_log.level, scipy_log.propagate
        scipy_log.setLevel(logging.INFO)
        scipy_log.propagate = not quiet  # per-iteration lines feed the bar, not the console
    try:
        with redirect:
            yield
    finally:
        motep_log.setLevel(old)
        if handler is not None:
            scipy_log.removeHandler(handler)
            scipy_log.setLevel(scipy_old[0])
            scipy_log.propagate = scipy_old[1]


MIN_DIST_MARGIN = 0.9  # min_dist = 0.9 x the shortest distance in the training data


def _data_min_dist(images: list[Atoms]) -> float:
    from alkit.io import min_distance

    return float(min(min_distance(a) for a in images))


def train_mtp(
    train: list[Atoms],
    out_path: str | os.PathLike,
    species: Sequence[str],
    level: int = 8,
    cutoff: float = 5.0,
    initial: str | os.PathLike | None = None,
    weights: Sequence[float] = (1.0, 0.01, 0.0),
    bfgs_maxiter: int = 0,
    valid: list[Atoms] | None = None,
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
    radial_basis_size: int = 8,
    engine: str = "cext",
) -> FitResult:
    """Fit an MTP to labelled structures and write it (MLIP-2 format, ``legacy=True``) to ``out_path``.

    Steps: LLS on the linear coefficients (moment and species coefficients); with ``bfgs_maxiter > 0`` then BFGS over
    all coefficients (radial ones included) for at most that many iterations, then LLS again.

    ``initial``: start from an existing ``.mtp`` (untrained level file, or a trained potential to warm-start across
    active-learning iterations); its basis and cutoff are kept and ``level``/``cutoff``/``radial_basis_size`` are
    ignored. Without it a level-``level`` potential with cutoff ``cutoff`` is generated. ``min_dist`` of the radial
    basis is always set from the data: ``MIN_DIST_MARGIN`` (0.9) x the shortest distance in ``train``, rounded down to
    0.01 Å.
    ``weights`` = (energy, forces, stress) loss weights (energies per atom, as in motep/MLIP-2).
    """
    from motep.io.mlip.mtp import read_mtp, write_mtp
    from motep.train.trainer import Trainer

    t0 = time.perf_counter()
    species = [str(s) for s in species]
    unknown = [s for s in species if s not in atomic_numbers]
    if not species or unknown or len(set(species)) != len(species):
        raise ConfigError(f"species must be distinct chemical symbols, got {species}")
    w = [float(x) for x in weights]
    if len(w) != 3 or any(not math.isfinite(x) or x < 0 for x in w) or w[0] + w[1] + w[2] == 0:
        raise ConfigError(f"weights must be three non-negative numbers (energy, forces, stress), not all 0; got {weights}")
    if int(bfgs_maxiter) < 0:
        raise ConfigError(f"bfgs_maxiter must be >= 0, got {bfgs_maxiter}")
    images = prepare_labelled(train, species, "training set")
    if w[1] > 0 and not any("forces" in a.calc.results for a in images):
        log.warning("no structure in the training set has forces; fitting energies only")
    if w[2] > 0 and not any("stress" in a.calc.results for a in images):
        log.warning("stress weight %s but no structure has a stress label", w[2])
    valid_images = prepare_labelled(valid, species, "validation set") if valid else None

    dmin = _data_min_dist(images)
    if not math.isfinite(dmin):
        raise InputError("the training set has no interatomic distances (single atoms without periodic images)")
    # The radial basis starts a little below the shortest training distance: MD samples compressions slightly beyond
    # the data (an H2 bond vibrating around 0.74 Å), and gamma, not min_dist, is what flags extrapolation.
    min_dist = math.floor(dmin * MIN_DIST_MARGIN * 100.0) / 100.0

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="alkit-mtp-fit-") if workdir is None else contextlib.nullcontext(workdir)
    with tmp_ctx as scratch:
        scratch = Path(scratch).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        if initial is not None:
            data = load_mtp(initial)
            _resolve_species(data, species, initial)
            level_used = parse_tag(data.potential_tag)[0]
        else:
            start = scratch / "initial.mtp"
            start.write_text(generate_mtp(level, species, cutoff=cutoff, min_dist=min_dist,
                                          radial_basis_size=radial_basis_size))
            data = read_mtp(start)
            level_used = int(level)
        if min_dist >= data.radial_basis.max:
            raise InputError(f"shortest distance in the training set ({dmin:.3f} Å) is not below the cutoff "
                             f"{data.radial_basis.max} Å")
        data.radial_basis.min = np.float64(min_dist)
        data.species = [atomic_numbers[s] for s in species]
        data.potential_tag = make_tag(level_used, species)

        minimized = ["energy", "forces"] + (["stress"] if w[2] > 0 else [])
        steps: list[dict] = [{"method": "LLS", "minimized": minimized}]
        if bfgs_maxiter > 0:
            steps += [
                {"method": "minimize", "optimized": ["species_coeffs", "moment_coeffs", "radial_coeffs"],
                 "kwargs": {"method": "BFGS", "options": {"maxiter": int(bfgs_maxiter)}}},
                {"method": "LLS", "minimized": minimized},
            ]
        loss = {"energy_weight": w[0], "forces_weight": w[1], "stress_weight": w[2]}
        log.info("training MTP (level %s, %d species, %d structures, %d atoms) with %s", level_used, len(species),
                 len(images), sum(len(a) for a in images), " -> ".join(
                     s["method"] if s["method"] != "minimize" else f"BFGS(maxiter={bfgs_maxiter})" for s in steps))
        bar = None
        if bfgs_maxiter > 0:
            from tqdm.auto import tqdm

            # one tick per logged loss: LLS before/after (2), BFGS start + iterations, LLS before/after (2)
            bar = tqdm(total=int(bfgs_maxiter) + 5, desc="MTP fit", unit="it", leave=False, disable=None)
        try:
            with _in_directory(scratch), _quiet_motep(bar):
                trainer = Trainer(data, rng=np.random.default_rng(seed), engine=engine, loss=loss, steps=steps)
                trainer.train(images)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise InputError(f"MTP training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if bar is not None:
                bar.close()
        if not is_trained(data) or not np.all(np.isfinite(data.parameters)):
            raise InputError("MTP training produced non-finite coefficients (is the training set degenerate?)")
        tmp_out = out_path.with_name(out_path.name + ".tmp")
        write_mtp(tmp_out, data, legacy=True)
        os.replace(tmp_out, out_path)
    seconds = time.perf_counter() - t0
    train_metrics = evaluate(out_path, images, species=species)
    valid_metrics = evaluate(out_path, valid_images, species=species, on_close_atoms="warn") if valid_images else None
    log.info("MTP written to %s in %.1f s; train: %s", out_path, seconds, format_metrics(train_metrics))
    if valid_metrics:
        log.info("validation: %s", format_metrics(valid_metrics))
    n_params = int(data.alpha_scalar_moments + data.species_count + np.size(data.radial_coeffs))
    return FitResult(out_path, train_metrics, valid_metrics, seconds, len(images), min_dist=min_dist,
                     n_parameters=n_params, steps=steps)


# ----------------------------------------------------------------------------------------------------------------
# Calculator and metrics
# ----------------------------------------------------------------------------------------------------------------


class MTPCalculator(MotepMTP):
    """ASE calculator: motep's :class:`motep.calculator.MTP`, made safe for Atoms of varying size and species.

    Checks every structure: elements the potential does not know -> ``InputError``; atoms closer than the potential's
    ``min_dist`` -> ``InputError`` (``on_close_atoms='error'``), a log warning (``'warn'``) or nothing (``'ignore'``).
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces", "stress")

    def __init__(self, mtp_data, species: Sequence[str], on_close_atoms: str = "error", engine: str = "cext",
                 label: str = "MTP", **kwargs):
        if on_close_atoms not in ("error", "warn", "ignore"):
            raise ConfigError(f"on_close_atoms must be 'error', 'warn' or 'ignore', not {on_close_atoms!r}")
        self.species = list(species)
        mtp_data.species = [atomic_numbers[s] for s in self.species]
        super().__init__(mtp_data, engine=engine, mode="run", label=label, **kwargs)
        self.mtp_data = mtp_data
        self.on_close_atoms = on_close_atoms
        self.min_dist = float(mtp_data.radial_basis.min)
        self.cutoff = float(mtp_data.radial_basis.max)
        self._signature = None
        self._allowed = set(mtp_data.species.tolist())

    def _check(self, atoms: Atoms) -> None:
        extra = sorted(set(atoms.numbers.tolist()) - self._allowed)
        if extra:
            raise InputError(f"{atoms.get_chemical_formula()} contains {[chemical_symbols[z] for z in extra]}, "
                             f"which the potential (species {self.species}) does not know")
        if self.on_close_atoms == "ignore" or self.min_dist <= 0:
            return
        from ase.neighborlist import neighbor_list

        d = neighbor_list("d", atoms, self.min_dist)
        if len(d):
            msg = (f"{atoms.get_chemical_formula()}: atoms {d.min():.3f} Å apart, closer than the potential's "
                   f"min_dist {self.min_dist:.3f} Å (outside its training data)")
            if self.on_close_atoms == "error":
                raise InputError(msg)
            log.warning(msg)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        if len(atoms) == 0:
            raise InputError("cannot evaluate an MTP on a structure without atoms")
        self._check(atoms)
        signature = (len(atoms), atoms.numbers.tobytes(), tuple(atoms.pbc))
        if signature != self._signature:
            # motep's neighbour list is sized for one structure: start a fresh one
            self.engine.neighbor_list = None
            self._signature = signature
        results = self.engine.calculate(atoms)
        self.results = {
            "energy": float(results["energy"]),
            "free_energy": float(results["energy"]),
            "energies": np.array(results["energies"], copy=True),
            "forces": np.array(results["forces"], copy=True),
        }
        if atoms.cell.rank == 3 and np.all(atoms.pbc):
            self.results["stress"] = np.array(results["stress"], copy=True)


def mtp_calculator(mtp_path: str | os.PathLike, species: Sequence[str] | None = None, on_close_atoms: str = "error",
                   engine: str = "cext") -> MTPCalculator:
    """An ASE calculator for a trained ``.mtp`` (species in type order; read from the file's tag when omitted)."""
    data = load_mtp(mtp_path)
    if not is_trained(data):
        raise ConfigError(f"{mtp_path} is an untrained MTP (no coefficients); train it first")
    species = _resolve_species(data, species, mtp_path)
    return MTPCalculator(data, species, on_close_atoms=on_close_atoms, engine=engine)


def _voigt_to_full(s: np.ndarray) -> np.ndarray:
    s = np.asarray(s, dtype=float)
    if s.shape == (3, 3):
        return s
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def evaluate(mtp_path: str | os.PathLike, structures: list[Atoms], species: Sequence[str] | None = None,
             on_close_atoms: str = "error") -> dict:
    """Errors of a potential on labelled structures: ``energy_rmse``/``energy_mae`` in meV/atom, ``force_rmse``/
    ``force_mae`` in eV/Å (per Cartesian component), ``stress_rmse``/``stress_mae`` in GPa (per component of the
    3x3 tensor; None without stress labels), plus ``energy_max``, ``force_max``, ``n_structures``, ``n_atoms``."""
    from tqdm.auto import tqdm

    calc = mtp_calculator(mtp_path, species, on_close_atoms=on_close_atoms)
    images = prepare_labelled(structures, calc.species, "evaluation set")
    de, df, ds = [], [], []
    for atoms in tqdm(images, desc="MTP evaluate", unit="cfg", leave=False, disable=True if len(images) < 200 else None):
        ref = atoms.calc.results
        work = atoms.copy()
        work.calc = calc
        de.append((work.get_potential_energy() - ref["energy"]) / len(atoms))
        if "forces" in ref:
            df.append((work.get_forces() - ref["forces"]).ravel())
        if "stress" in ref and "stress" in calc.results:
            ds.append((_voigt_to_full(calc.results["stress"]) - _voigt_to_full(ref["stress"])).ravel())
    de = np.array(de) * 1000.0
    out = {
        "n_structures": len(images),
        "n_atoms": int(sum(len(a) for a in images)),
        "energy_rmse": float(np.sqrt(np.mean(de**2))),
        "energy_mae": float(np.mean(np.abs(de))),
        "energy_max": float(np.max(np.abs(de))),
        "force_rmse": None, "force_mae": None, "force_max": None,
        "stress_rmse": None, "stress_mae": None,
    }
    if df:
        f = np.concatenate(df)
        out.update(force_rmse=float(np.sqrt(np.mean(f**2))), force_mae=float(np.mean(np.abs(f))),
                   force_max=float(np.max(np.abs(f))))
    if ds:
        s = np.concatenate(ds) * EV_A3_TO_GPA
        out.update(stress_rmse=float(np.sqrt(np.mean(s**2))), stress_mae=float(np.mean(np.abs(s))))
    return out


def format_metrics(m: dict) -> str:
    """One line: energy meV/atom, forces eV/Å, stress GPa (RMSE / MAE)."""
    def f(x, p):
        return "n/a" if x is None else f"{x:.{p}f}"

    return (f"E rmse {f(m['energy_rmse'], 2)} mae {f(m['energy_mae'], 2)} meV/atom | "
            f"F rmse {f(m['force_rmse'], 4)} mae {f(m['force_mae'], 4)} eV/Å | "
            f"S rmse {f(m['stress_rmse'], 3)} mae {f(m['stress_mae'], 3)} GPa | {m['n_structures']} cfgs")


def calc_efs(mtp_path: str | os.PathLike, structures: list[Atoms], species: Sequence[str] | None = None,
             on_close_atoms: str = "error") -> list[Atoms]:
    """Energies, forces and stress of ``structures`` with the potential (copies with a SinglePointCalculator)."""
    calc = mtp_calculator(mtp_path, species, on_close_atoms=on_close_atoms)
    out = []
    for atoms in structures:
        work = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc, info=dict(atoms.info))
        work.calc = calc
        res = {"energy": work.get_potential_energy(), "forces": work.get_forces()}
        if "stress" in calc.results:
            res["stress"] = calc.results["stress"]
        work.calc = SinglePointCalculator(work, **res)
        out.append(work)
    return out
