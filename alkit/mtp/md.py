"""MTP molecular dynamics with on-the-fly extrapolation grading (MLIP-2's ``calc-grade`` during MD).

Two thresholds as in MLIP-2 and the paper (defaults 3 and 3): a structure with gamma > ``gamma_select`` is collected
(with its grade and step) for labelling; gamma > ``gamma_break`` stops the run (that structure is collected too). A
run is *stable* when it reaches its full length without gamma > ``gamma_break`` and without a physical blow-up
(non-finite energies/forces/positions, atoms closer than the potential's ``min_dist``, runaway temperature).

Engines:

- ``"ase"``: :func:`alkit.md.run_md` (NVT Langevin, NpT MTK) with :class:`alkit.mtp.engine.MTPCalculator` given the
  active set: energy/forces/stress from alkit's compiled core and the grade in ``results['gamma']`` (per-atom grades
  in ``results['gammas']``) from the same evaluation.
- ``"lammps"``: LAMMPS through its Python module with alkit's plugin (``pair_style mtp``: potential, grade and
  break inside LAMMPS), or forces by ``fix external`` as the fallback (see :mod:`alkit.mtp.lammps_engine`).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms

from alkit._util import species_numbers
from alkit.errors import ConfigError, InputError
from alkit.explore import GammaMonitor, MDStop, run_graded_md
from alkit.mtp.engine import MTPCalculator
from alkit.mtp.grade import ActiveSet, check_atoms, file_sha256
from alkit.mtp.lammps_engine import require_lammps_cell, run_lammps_md
from alkit.scenarios import check_md_settings, require_periodic

log = logging.getLogger(__name__)

ENGINES = ("ase", "lammps")


@dataclass
class ExploreResult:
    """Outcome of :func:`run_mtp_md` for one scenario.

    ``stop_reason``: ``"completed"``, ``"gamma"`` (gamma > gamma_break), or ``"blowup: <why>"``. ``steps_done`` is
    the step at which the run stopped (``steps_total`` if it completed). ``collected`` holds the extrapolative
    structures (no calculator; ``info['gamma']``, ``info['step']``, ``info['scenario_id']``; per-atom grades in
    ``arrays['gamma']``), in step order.
    """

    scenario_id: str | None
    stable: bool
    steps_done: int
    steps_total: int
    max_gamma: float
    collected: list[Atoms] = field(default_factory=list)
    stop_reason: str = "completed"
    seconds: float = 0.0
    engine: str = "ase"
    graded_steps: int = 0


# --------------------------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------------------------
def _resolve_active_set(active_set, mtp_path, species) -> ActiveSet:
    if isinstance(active_set, (str, os.PathLike)):
        active_set = ActiveSet.load(active_set, mtp_path=mtp_path)
    if not isinstance(active_set, ActiveSet):
        raise InputError(f"active_set must be an ActiveSet or a path to one, got {type(active_set).__name__}")
    if mtp_path is not None:
        mtp_path = Path(mtp_path)
        if not mtp_path.is_file():
            raise InputError(f"potential file {mtp_path} does not exist")
        if file_sha256(mtp_path) != active_set.mtp_sha256:
            raise InputError(f"active set was built for a different potential than {mtp_path} (SHA-256 differs)")
    if species is not None and species_numbers(species, InputError) != list(active_set.species):
        raise InputError(
            f"species {list(species)} differ from the active set's species (atomic numbers {active_set.species})"
        )
    return active_set


def run_mtp_md(
    atoms: Atoms,
    mtp_path: str | os.PathLike | None,
    active_set: ActiveSet | str | os.PathLike,
    species: Sequence[int | str] | None,
    temperature: float,
    steps: int,
    ensemble: str = "nvt",
    timestep_fs: float = 0.5,
    gamma_select: float = 3.0,
    gamma_break: float = 3.0,
    engine: str = "ase",
    grade_every: int = 1,
    seed: int = 0,
    max_collect: int = 50,
    scenario_id: str | None = None,
    pressure_gpa: float = 0.0,
    max_temperature_factor: float = 5.0,
    lammps_coupling: str | None = None,
) -> ExploreResult:
    """MTP MD of ``atoms`` for ``steps`` steps at ``temperature`` K, grading every ``grade_every`` steps.

    Stops (unstable) when gamma > ``gamma_break`` or on a physical blow-up; collects the structures with
    gamma > ``gamma_select`` (the starting structure, step 0, is graded too). NVT: Langevin (friction 0.01/fs) in
    both engines; NpT: MTK barostat with a fully flexible cell (ASE ``MTKNPT``; LAMMPS ``fix npt ... tri``).
    """
    t0 = time.perf_counter()
    if engine not in ENGINES:
        raise ConfigError(f"MD engine {engine!r} is not one of {ENGINES}")
    check_md_settings(temperature, ensemble, steps, timestep_fs)
    if not (np.isfinite(gamma_select) and np.isfinite(gamma_break) and gamma_select >= 1.0 and gamma_break >= 1.0):
        raise ConfigError(f"gamma thresholds must be finite and >= 1, got select={gamma_select}, break={gamma_break}")
    if gamma_select > gamma_break:
        raise ConfigError(f"gamma_select ({gamma_select}) must not exceed gamma_break ({gamma_break})")
    if int(grade_every) < 1:
        raise ConfigError(f"grade_every must be >= 1, got {grade_every}")
    steps, grade_every = int(steps), int(grade_every)
    aset = _resolve_active_set(active_set, mtp_path, species)
    check_atoms(atoms, aset.species, collapse_distance(aset), name=f"starting structure of {scenario_id or 'the run'}")
    if engine == "lammps":
        require_lammps_cell(atoms)
    if ensemble == "npt":
        require_periodic(atoms, "NpT", InputError)
    monitor = GammaMonitor(gamma_select, gamma_break, max_collect, scenario_id)

    with _single_threaded_blas():
        # Step 0: the starting structure.
        gamma0, gammas0 = aset.grade(atoms, check=False)
        if monitor.observe(0, atoms, gamma0, gammas0):
            return ExploreResult(scenario_id, False, 0, steps, monitor.max_gamma, monitor.collected, "gamma",
                                 time.perf_counter() - t0, engine, monitor.graded)

        if engine == "lammps":
            steps_done, reason = run_lammps_md(
                atoms, aset, monitor, temperature=temperature, steps=steps, ensemble=ensemble,
                timestep_fs=timestep_fs, pressure_gpa=pressure_gpa, seed=seed, grade_every=grade_every,
                max_temperature_factor=max_temperature_factor, coupling=lammps_coupling,
            )
        else:
            steps_done, reason = _run_ase(atoms, aset, monitor, temperature, steps, ensemble, timestep_fs,
                                          pressure_gpa, seed, grade_every, max_temperature_factor)
    if reason.startswith("blowup"):
        monitor.collect_before_blowup(atoms)
    stable = reason == "completed"
    res = ExploreResult(scenario_id, stable, steps_done, steps, monitor.max_gamma, monitor.collected, reason,
                        time.perf_counter() - t0, engine, monitor.graded)
    log.info("MTP MD%s (%s, %s engine): %s after %d/%d steps, max gamma %.3g, %d collected, %.1f s",
             f" {scenario_id}" if scenario_id else "", ensemble, engine, reason, steps_done, steps, res.max_gamma, len(res.collected),
             res.seconds)
    return res


def _single_threaded_blas():
    """Limit BLAS to one thread for an MD run (a context manager; a no-op without threadpoolctl).

    The per-step products (rows x A^-1, a few hundred x a few hundred) are far too small for threads, and on a busy
    machine OpenBLAS's spinning worker threads made them cost ~20 ms each: grading then halved the MD speed of a
    300-atom level-16 run; with one thread it costs < 1 ms. MD workers run one scenario each anyway.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def collapse_distance(aset: ActiveSet) -> float:
    """Interatomic distance below which an MD run counts as collapsed (a blow-up): half the potential's min_dist.

    Distances between that and min_dist are outside the radial basis' training range, i.e. extrapolation, which
    the grade flags (the structure is collected); stopping there as a "blow-up" would lose the structure that
    AL needs (seen on Ti-H: runs stopped at a 1.44 Å Ti-H contact with min_dist 1.47 Å and gamma 2.3).
    """
    return aset.collapse_distance


def _run_ase(atoms, aset, monitor, temperature, steps, ensemble, timestep_fs, pressure_gpa, seed, grade_every,
             max_temperature_factor) -> MDStop:
    """ASE MD with the grading calculator: the grade comes from the same evaluation as the forces, on every
    ``grade_every``-th step."""
    calc = MTPCalculator(active_set=aset, grade_next=(1 % grade_every == 0), on_close_atoms="ignore")

    def grade(step: int, live: Atoms):
        res = calc.results
        graded = "gamma" in res and calc.grade_next
        calc.grade_next = (step + 1) % grade_every == 0
        return (res["gamma"], res["gammas"], res.get("energy")) if graded else None

    return run_graded_md(atoms, calc, monitor, grade, temperature=temperature, ensemble=ensemble, steps=steps,
                         timestep_fs=timestep_fs, pressure_gpa=pressure_gpa, seed=seed,
                         max_temperature_factor=max_temperature_factor, min_distance=collapse_distance(aset))
