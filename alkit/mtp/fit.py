"""Fitting MTPs: alkit's compiled engine (default) or motep (the second engine and the tests' oracle); metrics;
training-set I/O.

Labelled structures are ASE ``Atoms`` carrying a ``SinglePointCalculator`` (energy in eV, forces in eV/Å, stress in
eV/Å^3, ASE conventions). Species order = MLIP-2 type indices. alkit's ``.mtp`` files carry their species in
``potential_tag`` (see :func:`alkit.mtp.levels.make_tag`), so a trained potential knows its elements.

``engine="alkit"`` (:mod:`alkit.mtp.train`): variable projection (L-BFGS over the radial coefficients with the
linear ones solved by least squares at every step) on the reverse-mode loss gradient of the compiled core, to
MLIP-2's convergence rule (relative loss decrease over 50 iterations below ``tol``) or ``bfgs_maxiter`` iterations.

``engine="motep"``: motep's ``Trainer`` (LLS -> BFGS(``bfgs_maxiter``) -> LLS). Its traps, handled here: it writes
``intermediate_*.mtp`` into the working directory (training runs with the CWD switched to a scratch directory,
under a lock); ``Trainer(seed=0)`` means "random seed" (alkit passes an explicit generator); ``write_mtp`` needs
``legacy=True`` for MLIP-2.
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
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols
from ase.stress import voigt_6_to_full_3x3_stress

from alkit._util import species_numbers, species_symbols, voigt_stress
from alkit.errors import ConfigError, InputError
from alkit.mtp.levels import make_tag

log = logging.getLogger(__name__)

#: eV/Å^3 -> GPa
EV_A3_TO_GPA = 160.21766208
_CWD_LOCK = threading.Lock()


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
    allowed = set(species_numbers(species, ConfigError))
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
                stress = voigt_stress(stress)
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
    report: object = None  # alkit.mtp.train.TrainReport (engine "alkit")


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


ENGINES = ("alkit", "motep")
#: Default cap on optimiser iterations: MLIP-2's ``--max-iter`` default.
DEFAULT_MAX_ITER = 1000
#: Default relative loss decrease over 50 iterations below which training stops (MLIP-2's rule).
DEFAULT_TOL = 1e-3


def train_mtp(
    train: list[Atoms],
    out_path: str | os.PathLike,
    species: Sequence[str],
    level: int = 8,
    cutoff: float = 5.0,
    initial: str | os.PathLike | None = None,
    weights: Sequence[float] = (1.0, 0.01, 0.0),
    bfgs_maxiter: int = DEFAULT_MAX_ITER,
    valid: list[Atoms] | None = None,
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
    radial_basis_size: int = 8,
    engine: str = "alkit",
    tol: float = DEFAULT_TOL,
    threads: int = 1,
    method: str = "varpro",
    progress: bool | None = None,
) -> FitResult:
    """Fit an MTP to labelled structures and write it (MLIP-2 format) to ``out_path``.

    ``engine="alkit"``: least squares on the linear coefficients (moment and species coefficients), then L-BFGS
    (``method``: "varpro", the radial coefficients with the linear ones solved exactly at every step, or "bfgs",
    all coefficients; see :mod:`alkit.mtp.train`) until the loss drops by less than ``tol`` (relative) over 50
    iterations or ``bfgs_maxiter`` iterations, then least squares again. ``bfgs_maxiter=0``: least squares only.
    ``threads`` threads share the configurations (same result for any count). ``engine="motep"``: motep's LLS ->
    BFGS(``bfgs_maxiter``) -> LLS (no convergence rule; ``tol``, ``threads`` and ``method`` do not apply).

    ``initial``: start from an existing ``.mtp`` (untrained level file, or a trained potential to warm-start across
    active-learning iterations); its basis and cutoff are kept and ``level``/``cutoff``/``radial_basis_size`` are
    ignored. Without it a level-``level`` potential with cutoff ``cutoff`` is generated, its radial coefficients
    drawn from ``seed``. ``min_dist`` of the radial basis is set from the data: ``MIN_DIST_MARGIN`` (0.9) x the
    shortest distance in ``train``, rounded down to 0.01 Å; a warm start keeps its ``min_dist`` when the data do not
    reach below it (so its radial functions keep their meaning).
    ``weights`` = (energy, forces, stress) loss weights (energies per atom, as in motep/MLIP-2).
    """
    from alkit.mtp.potential import MTPPotential

    t0 = time.perf_counter()
    species = species_symbols(species, ConfigError)
    w = [float(x) for x in weights]
    if len(w) != 3 or any(not math.isfinite(x) or x < 0 for x in w) or w[0] + w[1] + w[2] == 0:
        raise ConfigError(f"weights must be three non-negative numbers (energy, forces, stress), not all 0; got {weights}")
    if int(bfgs_maxiter) < 0:
        raise ConfigError(f"bfgs_maxiter must be >= 0, got {bfgs_maxiter}")
    if engine not in ENGINES:
        raise ConfigError(f"training engine must be one of {ENGINES}, not {engine!r}")
    if int(threads) < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ConfigError(f"tol must be a number >= 0, got {tol}")
    pot = None
    if initial is not None:
        pot = MTPPotential.read(initial)
        pot.resolve_species(species)
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
    if pot is None:
        pot = MTPPotential.untrained(level, species, cutoff=cutoff, min_dist=min_dist,
                                     radial_basis_size=radial_basis_size)
    elif pot.is_trained and pot.min_dist <= dmin:
        min_dist = float(pot.min_dist)
    if min_dist >= pot.max_dist:
        raise InputError(f"shortest distance in the training set ({dmin:.3f} Å) is not below the cutoff "
                         f"{pot.max_dist} Å")
    pot.min_dist = float(min_dist)
    level_used = pot.level if pot.level is not None else (None if initial is not None else int(level))
    pot.potential_tag = make_tag(level_used, species)
    out_path = Path(out_path)
    log.info("training MTP (level %s, %d species, %d structures, %d atoms, %d parameters) with %s", level_used,
             len(species), len(images), sum(len(a) for a in images), pot.n_params, engine)
    report = None
    if engine == "alkit":
        from alkit.mtp import train as trainer

        if not pot.is_trained:
            pot.initialize(np.random.default_rng(seed))
        data = trainer.TrainingData(pot, images, species)
        report = trainer.fit(pot, data, weights=w, max_iter=int(bfgs_maxiter), tol=float(tol), method=method,
                             n_threads=int(threads), progress=progress)
        steps = [{"method": "LLS"}] + ([{"method": f"L-BFGS ({method})", "iterations": report.iterations,
                                         "evaluations": report.evaluations, "stopped": report.reason},
                                        {"method": "LLS"}] if bfgs_maxiter else [])
        log.info("fit: %d iterations (%s), loss %.6g -> %.6g in %.1f s", report.iterations, report.reason,
                 report.loss_start, report.loss_final, report.seconds)
        pot.write(out_path)
    else:
        steps = _train_motep(pot, images, species, w, int(bfgs_maxiter), seed, workdir, out_path)
    for step in steps:
        step.setdefault("minimized", ["energy", "forces"] + (["stress"] if w[2] > 0 else []))
    seconds = time.perf_counter() - t0
    train_metrics = evaluate(out_path, images, species=species, threads=threads)
    valid_metrics = (evaluate(out_path, valid_images, species=species, on_close_atoms="warn", threads=threads)
                     if valid_images else None)
    log.info("MTP written to %s in %.1f s; train: %s", out_path, seconds, format_metrics(train_metrics))
    if valid_metrics:
        log.info("validation: %s", format_metrics(valid_metrics))
    return FitResult(out_path, train_metrics, valid_metrics, seconds, len(images), min_dist=min_dist,
                     n_parameters=pot.n_params, steps=steps, report=report)


def _train_motep(pot, images, species, w, bfgs_maxiter, seed, workdir, out_path) -> list[dict]:
    """motep's Trainer: LLS -> BFGS(bfgs_maxiter) -> LLS, in a scratch directory; writes ``out_path``."""
    from motep.io.mlip.mtp import write_mtp
    from motep.train.trainer import Trainer

    from alkit.mtp.potential import MTPPotential

    data = pot.to_motep(species)
    minimized = ["energy", "forces"] + (["stress"] if w[2] > 0 else [])
    steps: list[dict] = [{"method": "LLS", "minimized": minimized}]
    if bfgs_maxiter > 0:
        steps += [
            {"method": "minimize", "optimized": ["species_coeffs", "moment_coeffs", "radial_coeffs"],
             "kwargs": {"method": "BFGS", "options": {"maxiter": int(bfgs_maxiter)}}},
            {"method": "LLS", "minimized": minimized},
        ]
    loss = {"energy_weight": w[0], "forces_weight": w[1], "stress_weight": w[2]}
    bar = None
    if bfgs_maxiter > 0:
        from tqdm.auto import tqdm

        # one tick per logged loss: LLS before/after (2), BFGS start + iterations, LLS before/after (2)
        bar = tqdm(total=int(bfgs_maxiter) + 5, desc="MTP fit (motep)", unit="it", leave=False, disable=None)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="alkit-mtp-fit-") if workdir is None else contextlib.nullcontext(workdir)
    with tmp_ctx as scratch:
        scratch = Path(scratch).resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            with _in_directory(scratch), _quiet_motep(bar):
                trainer = Trainer(data, rng=np.random.default_rng(seed), engine="cext", loss=loss, steps=steps)
                trainer.train(images)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise InputError(f"MTP training failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if bar is not None:
                bar.close()
        if any(getattr(data, k) is None for k in ("radial_coeffs", "moment_coeffs", "species_coeffs")) or \
                not np.all(np.isfinite(data.parameters)):
            raise InputError("MTP training produced non-finite coefficients (is the training set degenerate?)")
        tmp_out = scratch / "trained.mtp"
        write_mtp(tmp_out, data, legacy=True)
        trained = MTPPotential.read(tmp_out)
    trained.potential_tag = pot.potential_tag
    trained.source = str(out_path)
    trained.write(out_path)
    return steps


# ----------------------------------------------------------------------------------------------------------------
# Calculator and metrics
# ----------------------------------------------------------------------------------------------------------------


def mtp_calculator(mtp_path: str | os.PathLike, species: Sequence[str] | None = None, on_close_atoms: str = "warn",
                   threads: int = 1):
    """An ASE calculator (:class:`alkit.mtp.engine.MTPCalculator`) for a trained ``.mtp`` (species in type order;
    read from the file's tag when omitted)."""
    from alkit.mtp.engine import MTPCalculator

    return MTPCalculator(mtp_path, species, on_close_atoms=on_close_atoms, n_threads=threads)


def evaluate(mtp_path: str | os.PathLike, structures: list[Atoms], species: Sequence[str] | None = None,
             on_close_atoms: str = "warn", threads: int = 1) -> dict:
    """Errors of a potential on labelled structures: ``energy_rmse``/``energy_mae`` in meV/atom, ``force_rmse``/
    ``force_mae`` in eV/Å (per Cartesian component), ``stress_rmse``/``stress_mae`` in GPa (per component of the
    3x3 tensor; None without stress labels), plus ``energy_max``, ``force_max``, ``n_structures``, ``n_atoms``.

    Contacts below the potential's ``min_dist``: ``on_close_atoms`` ('warn' by default, 'error', 'ignore');
    structures closer than the collapse distance are refused unless 'ignore'."""
    from alkit.mtp.engine import COLLAPSE_FRACTION, CLOSE_POLICIES
    from alkit.mtp.potential import read_potential
    from alkit.mtp.train import TrainingData

    if on_close_atoms not in CLOSE_POLICIES:
        raise ConfigError(f"on_close_atoms must be one of {CLOSE_POLICIES}, not {on_close_atoms!r}")
    pot, species = read_potential(mtp_path, species)
    images = prepare_labelled(structures, species, "evaluation set")
    data = TrainingData(pot, images, species)
    dmin = float(data.data.min_distance)
    if on_close_atoms != "ignore" and dmin < pot.min_dist:
        msg = (f"evaluation set: atoms {dmin:.3f} Å apart, closer than the potential's min_dist {pot.min_dist:.3f} Å "
               "(outside its training data)")
        if on_close_atoms == "error" or dmin < COLLAPSE_FRACTION * pot.min_dist:
            raise InputError(msg + ("" if on_close_atoms == "error" else ": a collapsed structure"))
        log.warning(msg)
    E, F, S = data.predict(pot.theta, threads)
    de, df, ds = [], [], []
    offset = 0
    for k, atoms in enumerate(images):
        ref = atoms.calc.results
        n = len(atoms)
        de.append((E[k] - ref["energy"]) / n)
        if "forces" in ref:
            df.append((F[offset:offset + n] - ref["forces"]).ravel())
        if "stress" in ref and np.all(atoms.pbc) and atoms.cell.rank == 3:
            ds.append((S[k] - voigt_6_to_full_3x3_stress(ref["stress"])).ravel())
        offset += n
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
             on_close_atoms: str = "warn") -> list[Atoms]:
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
