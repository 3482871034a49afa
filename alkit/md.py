"""Molecular dynamics through ASE with blow-up detection and streaming snapshots.

:func:`run_md` is used for the universal-potential configuration pool and, later, for MTP exploration with a
grading calculator. Integrators (all from ``ase.md``):

- NVT: ``Langevin`` (default) or ``NoseHooverChainNVT`` (``thermostat="nose-hoover"``);
- NpT: ``MTKNPT`` (Martyna-Tobias-Klein barostat with fully flexible cell, Nose-Hoover chain thermostat; default) or
  ``LangevinBAOAB`` (``barostat="langevin"``: Langevin thermostat + Langevin-Hoover barostat).

After every step the run is checked for a blow-up (:class:`BlowupCheck`, the one set of checks, which the LAMMPS
engine applies too): non-finite energy/forces/positions/cell, two atoms closer than
``min_distance`` Å, or a kinetic temperature above ``max_temperature_factor`` x target. A blow-up ends the run with
status ``"blowup"``, the reason, and the last frame that passed the checks. An exception raised by the calculator or
integrator during a step (e.g. a neighbour list on exploded coordinates) is also a blow-up; exceptions raised on the
initial structure or by the callbacks propagate.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.singlepoint import SinglePointCalculator

from alkit.errors import ConfigError
from alkit.scenarios import check_md_settings, require_periodic

log = logging.getLogger(__name__)

THERMOSTATS = ("langevin", "nose-hoover")
BAROSTATS = ("mtk", "langevin")


@dataclass
class MDResult:
    """Outcome of :func:`run_md`. ``status`` is ``"completed"``, ``"blowup"`` or ``"stopped"`` (a callback said so);
    ``last_good`` is the last frame that passed the blow-up checks (with a SinglePointCalculator)."""

    status: str
    steps_done: int
    reason: str
    last_good: Atoms
    n_snapshots: int = 0


class _CallbackError(Exception):
    """Carries an exception raised by a user callback past the blow-up handler."""


def snapshot(atoms: Atoms, include_stress: bool = True) -> Atoms:
    """A copy of ``atoms`` with its current energy, forces (and stress when available) frozen in a
    SinglePointCalculator; keeps momenta and info."""
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    results = {"energy": energy, "forces": np.array(forces, copy=True)}
    if include_stress:
        try:
            results["stress"] = np.array(atoms.get_stress(voigt=True), copy=True)
        except PropertyNotImplementedError:
            pass
    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def _validate(temperature, ensemble, steps, timestep_fs, snapshot_interval, thermostat, barostat, atoms) -> None:
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise ConfigError("run_md needs a non-empty ase.Atoms")
    check_md_settings(temperature, ensemble, steps, timestep_fs, snapshot_interval)
    if thermostat not in THERMOSTATS:
        raise ConfigError(f"thermostat {thermostat!r} is not one of {THERMOSTATS}")
    if barostat not in BAROSTATS:
        raise ConfigError(f"barostat {barostat!r} is not one of {BAROSTATS}")
    if ensemble == "npt":
        require_periodic(atoms, "NpT")


def make_dynamics(atoms: Atoms, temperature: float, ensemble: str, timestep_fs: float, pressure_gpa: float,
                  seed: int, thermostat: str = "langevin", barostat: str = "mtk"):
    """The ASE integrator for the ensemble (see the module docstring); damping times are the usual defaults
    (Langevin friction 0.01/fs, thermostat 100 dt, barostat 1000 dt)."""
    from ase.md import MTKNPT, Langevin, NoseHooverChainNVT
    from ase.md.langevinbaoab import LangevinBAOAB

    dt = timestep_fs * units.fs
    rng = np.random.default_rng([int(seed), 1])
    if ensemble == "nvt":
        if thermostat == "langevin":
            return Langevin(atoms, dt, temperature_K=temperature, friction=0.01 / units.fs, fixcm=False, rng=rng)
        return NoseHooverChainNVT(atoms, dt, temperature_K=temperature, tdamp=100 * dt)
    pressure = pressure_gpa * units.GPa
    if barostat == "mtk":
        return MTKNPT(atoms, dt, temperature_K=temperature, pressure_au=pressure, tdamp=100 * dt, pdamp=1000 * dt)
    # ASE's externalstress is a stress (negative of pressure).
    return LangevinBAOAB(atoms, dt, temperature_K=temperature, externalstress=-pressure, hydrostatic=False,
                         T_tau=100 * dt, P_tau=1000 * dt, rng=rng)


@dataclass(frozen=True)
class BlowupCheck:
    """The physical blow-up checks of every MD engine (:func:`run_md`, the LAMMPS engine through ``fix external``
    or alkit's plugin): one set of rules and one wording of the reasons, whichever engine saw the frame.

    Each check returns ``""`` for a sane frame, else the reason. ``min_distance`` <= 0 disables the collapse check,
    a false ``max_temperature_factor`` (0, None) the temperature check.
    """

    temperature: float
    max_temperature_factor: float | None = 5.0
    min_distance: float = 0.5

    #: The reason given by an engine that only knows that something was not finite (alkit's LAMMPS plugin).
    NON_FINITE = "non-finite energy, forces or positions"

    @property
    def t_max(self) -> float:
        """Kinetic temperature above which a run has run away (inf: no check)."""
        f = self.max_temperature_factor
        return float(f) * float(self.temperature) if f else float("inf")

    def non_finite(self, positions=None, cell=None, energy=None, forces=None) -> str:
        """Non-finite positions, cell, energy or forces (those given), in that order."""
        if positions is not None and not np.all(np.isfinite(positions)):
            return "non-finite positions"
        if cell is not None and not np.all(np.isfinite(cell)):
            return "non-finite cell"
        if energy is not None and not np.isfinite(energy):
            return f"non-finite energy ({energy})"
        if forces is not None and not np.all(np.isfinite(forces)):
            return "non-finite forces"
        return ""

    def collapse(self, closest: float) -> str:
        """Two atoms closer than ``min_distance`` (``closest``: the shortest interatomic distance)."""
        if self.min_distance > 0 and closest < self.min_distance:
            return f"atoms closer than {self.min_distance:.3f} Å ({closest:.3f} Å)"
        return ""

    def runaway(self, t_kin: float) -> str:
        """A kinetic temperature above ``max_temperature_factor`` x the target (or not finite)."""
        if self.max_temperature_factor and (not np.isfinite(t_kin) or t_kin > self.t_max):
            return (f"runaway temperature {t_kin:.0f} K > {self.max_temperature_factor:g} x "
                    f"{self.temperature:g} K")
        return ""

    def frame(self, atoms: Atoms) -> str:
        """All checks on ASE atoms with a calculator; the energy is only computed once the geometry is finite."""
        from ase.neighborlist import neighbor_list

        reason = self.non_finite(positions=atoms.positions, cell=atoms.cell.array)
        if reason:
            return reason
        reason = self.non_finite(energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        if reason:
            return reason
        if self.min_distance > 0 and len(atoms) > 1:
            d = neighbor_list("d", atoms, self.min_distance)
            if len(d):
                return self.collapse(float(d.min()))
        if len(atoms) > 0:
            return self.runaway(atoms.get_temperature())
        return ""


def run_md(
    atoms: Atoms,
    calc,
    temperature: float,
    ensemble: str = "npt",
    steps: int = 1000,
    timestep_fs: float = 0.5,
    snapshot_interval: int = 10,
    pressure_gpa: float = 0.0,
    seed: int = 0,
    thermostat: str = "langevin",
    on_snapshot: Callable[[int, Atoms], bool | None] | None = None,
    on_step: Callable[[int, Atoms], bool | None] | None = None,
    max_temperature_factor: float = 5.0,
    min_distance: float = 0.5,
    barostat: str = "mtk",
    initial_velocities: bool = True,
) -> MDResult:
    """Run ``steps`` MD steps of a copy of ``atoms`` with ``calc`` at ``temperature`` K.

    Velocities are drawn from a Maxwell-Boltzmann distribution seeded by ``seed`` (centre-of-mass motion removed)
    unless ``initial_velocities`` is False and ``atoms`` has momenta. ``on_snapshot(step, frame)`` receives a copy
    with energy, forces and stress every ``snapshot_interval`` steps; ``on_step(step, atoms)`` gets the live atoms
    after every step (keep it cheap, do not modify them). Either may return ``False`` to stop the run
    (status ``"stopped"``). NVT uses ``thermostat``; NpT uses ``barostat`` ("mtk": MTK barostat, which brings its own
    Nose-Hoover chain thermostat; "langevin": Langevin-Hoover barostat with a Langevin thermostat).
    """
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    _validate(temperature, ensemble, steps, timestep_fs, snapshot_interval, thermostat, barostat, atoms)
    steps, snapshot_interval = int(steps), int(snapshot_interval)
    atoms = atoms.copy()
    atoms.calc = calc
    if initial_velocities or not np.any(atoms.get_momenta()):
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng([int(seed), 0]))
        if len(atoms) > 1:
            Stationary(atoms)
    want_stress = True

    def freeze(full: bool) -> Atoms:
        """Frame of the current state; ``full`` also asks the calculator for stress if it has not computed it."""
        nonlocal want_stress
        results = getattr(atoms.calc, "results", None) or {}
        if not full and "energy" in results and "forces" in results:
            frame = atoms.copy()
            frame.calc = SinglePointCalculator(frame, **{k: np.array(results[k], copy=True)
                                                         for k in ("energy", "forces", "stress") if k in results})
            return frame
        try:
            return snapshot(atoms, want_stress)
        except PropertyNotImplementedError:
            want_stress = False
            return snapshot(atoms, False)

    # The initial structure: a calculator error here is a configuration problem (e.g. an element the potential does
    # not know), not a blow-up, so it propagates. No temperature check on the Maxwell-Boltzmann draw.
    reason = BlowupCheck(temperature, 0, min_distance).frame(atoms)
    last_good = freeze(True) if not reason else atoms.copy()
    if reason:
        return MDResult("blowup", 0, reason, last_good)

    checks = BlowupCheck(temperature, max_temperature_factor, min_distance)
    dyn = make_dynamics(atoms, temperature, ensemble, timestep_fs, pressure_gpa, seed, thermostat, barostat)
    n_snapshots = 0
    status, reason, steps_done = "completed", "", 0
    it = dyn.irun(steps)
    try:
        next(it)  # step 0: ASE computes the initial forces
        while steps_done < steps:
            try:
                next(it)
                step = dyn.nsteps
                reason = checks.frame(atoms)
            except StopIteration:
                break
            except Exception as exc:  # the calculator/integrator failed on this step's coordinates
                log.debug("MD step %d raised", steps_done + 1, exc_info=True)
                reason = f"error at step {steps_done + 1}: {type(exc).__name__}: {exc}"
            if reason:
                status = "blowup"
                break
            steps_done = step
            is_snapshot = step % snapshot_interval == 0
            last_good = freeze(is_snapshot)
            try:
                stop = on_step is not None and on_step(step, atoms) is False
                if is_snapshot:
                    n_snapshots += 1
                    if on_snapshot is not None and on_snapshot(step, _copy_frame(last_good)) is False:
                        stop = True
            except Exception as exc:
                raise _CallbackError() from exc
            if stop:
                status, reason = "stopped", f"stopped by callback at step {step}"
                break
    except _CallbackError as wrapped:
        raise wrapped.__cause__  # type: ignore[misc]
    finally:
        it.close()
    if status == "blowup":
        log.info("MD blow-up after %d steps: %s", steps_done, reason)
    return MDResult(status, steps_done, reason, last_good, n_snapshots)


def _copy_frame(frame: Atoms) -> Atoms:
    """Copy of a snapshot including its SinglePointCalculator results."""
    out = frame.copy()
    calc = frame.calc
    if calc is not None:
        out.calc = SinglePointCalculator(out, **{k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                                                 for k, v in calc.results.items()})
    return out
