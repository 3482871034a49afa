"""Exploration: MD of one scenario under an uncertainty monitor, collecting the extrapolative structures.

:class:`GammaMonitor` is shared by every engine and backend (ASE and LAMMPS MD of the MTP, and
:func:`explore_with_ase` for any backend): gamma > ``gamma_select`` collects the frame, gamma > ``gamma_break``
stops the run, and after a physical blow-up one frame from just before it is collected.

:func:`run_graded_md` is the one graded ASE MD loop (:func:`alkit.md.run_md` and its blow-up checks under a
monitor), and :class:`MDStop` how a graded run ended, as every engine reports it (the LAMMPS engine too).
:func:`explore_with_ase` is the generic explorer of :mod:`alkit.backend` built on it: a backend that offers an ASE
calculator and an uncertainty ``grade(atoms) -> (gamma, per-atom gammas)`` gets scenario MD (Langevin NVT, MTK NpT)
without writing an MD loop of its own; the MTP backend's ASE engine (:mod:`alkit.mtp.md`) uses the same loop.
"""
from __future__ import annotations

import heapq
import time
from collections import deque
from typing import Callable, NamedTuple

import numpy as np
from ase import Atoms

from alkit.backend import ExploreOutcome, ExploreSettings

# --------------------------------------------------------------------------------------------------------------
# collection of extrapolative structures (shared by every engine and backend)
# --------------------------------------------------------------------------------------------------------------
BLOWUP_LOOKBACK = 20  # graded frames kept to collect one from before a physical blow-up


class GammaMonitor:
    """Collects structures with gamma > gamma_select (keeping the ``max_collect`` most extrapolative) and says when
    gamma > gamma_break."""

    def __init__(self, gamma_select: float, gamma_break: float, max_collect: int, scenario_id: str | None) -> None:
        self.gamma_select = float(gamma_select)
        self.gamma_break = float(gamma_break)
        self.max_collect = int(max_collect)
        self.scenario_id = scenario_id
        self.max_gamma = 0.0
        self.graded = 0
        self._heap: list[tuple[float, int, Atoms]] = []
        self.break_step: int | None = None
        self._recent: deque = deque(maxlen=BLOWUP_LOOKBACK)

    def observe(self, step: int, atoms: Atoms, gamma: float, gammas: np.ndarray, energy: float | None = None) -> bool:
        """Record a graded frame; True if the run must stop (gamma > gamma_break)."""
        self.graded += 1
        gamma = float(gamma) if np.isfinite(gamma) else float("inf")
        self.max_gamma = max(self.max_gamma, gamma)
        if self.max_collect > 0:
            self._recent.append((step, atoms.positions.copy(), atoms.cell.array.copy(), gamma, np.array(gammas)))
        if gamma > self.gamma_select and self.max_collect > 0:
            frame = self._frame(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, step, gamma, gammas)
            if energy is not None and np.isfinite(energy):
                frame.info["mtp_energy"] = float(energy)
            item = (gamma, int(step), frame)
            if len(self._heap) < self.max_collect:
                heapq.heappush(self._heap, item)
            elif gamma > self._heap[0][0]:
                heapq.heapreplace(self._heap, item)
        if gamma > self.gamma_break:
            self.break_step = int(step)
            return True
        return False

    def remember(self, step: int, atoms: Atoms, gamma: float) -> None:
        """Keep a frame (positions and cell) for :meth:`collect_before_blowup` without grading it here (engines
        that grade inside their MD code, such as the LAMMPS plugin)."""
        if self.max_collect > 0:
            self._recent.append((step, atoms.positions.copy(), atoms.cell.array.copy(), float(gamma),
                                 np.full(len(atoms), float(gamma))))

    def note_run(self, max_gamma: float, graded: int) -> None:
        """Fold in the maximum grade and the number of graded frames of a run graded elsewhere."""
        if np.isfinite(max_gamma):
            self.max_gamma = max(self.max_gamma, float(max_gamma))
        else:
            self.max_gamma = float("inf")
        self.graded += int(graded)

    def _frame(self, numbers, positions, cell, pbc, step, gamma, gammas) -> Atoms:
        frame = Atoms(numbers=np.array(numbers), positions=np.array(positions), cell=np.array(cell), pbc=np.array(pbc))
        frame.info.update({"gamma": float(gamma), "step": int(step)})
        if self.scenario_id is not None:
            frame.info["scenario_id"] = self.scenario_id
        frame.arrays["gamma"] = np.asarray(gammas, dtype=float).copy()
        return frame

    def collect_before_blowup(self, atoms: Atoms) -> None:
        """After a physical blow-up (runaway temperature, collapse) *inside* the grade's trust region, collect one
        of the last ``BLOWUP_LOOKBACK`` graded frames: the potential is wrong there although gamma is low
        (an interpolation error), and only data from that trajectory can fix it. Without this, AL stalls: on the
        quick Ti-H preset 13 of 31 scenarios blew up at gamma <= 2.1 and left nothing to learn from."""
        if not self._recent or self.max_collect < 1:
            return
        # The middle of the buffer: ~BLOWUP_LOOKBACK/2 steps before the blow-up on a long run, and not the
        # (already known) starting structure when the run blew up within its first steps.
        step, pos, cell, gamma, gammas = self._recent[len(self._recent) // 2]
        frame = self._frame(atoms.numbers, pos, cell, atoms.pbc, step, gamma, gammas)
        frame.info["before_blowup"] = True
        item = (max(float(gamma), self.gamma_select), int(step), frame)
        if len(self._heap) < self.max_collect:
            heapq.heappush(self._heap, item)
        else:
            heapq.heapreplace(self._heap, item)

    @property
    def collected(self) -> list[Atoms]:
        return [frame for _, _, frame in sorted(self._heap, key=lambda t: t[1])]


class MDStop(NamedTuple):
    """How a graded MD run ended, as every engine reports it (ASE here, LAMMPS in :mod:`alkit.mtp.lammps_engine`):
    the step at which it stopped and why: ``"completed"``, ``"gamma"`` (gamma > gamma_break) or ``"blowup: ..."``."""

    steps_done: int
    reason: str


def run_graded_md(atoms: Atoms, calculator, monitor: GammaMonitor,
                  grade: Callable[[int, Atoms], "tuple[float, np.ndarray, float | None] | None"], *,
                  temperature: float, ensemble: str, steps: int, timestep_fs: float, pressure_gpa: float, seed: int,
                  max_temperature_factor: float, min_distance: float) -> MDStop:
    """ASE MD (:func:`alkit.md.run_md`, its blow-up checks) of ``atoms`` under ``monitor``: after every step
    ``grade(step, live_atoms)`` gives (gamma, per-atom gammas, energy or None), or None for a step it does not grade;
    gamma > gamma_break stops the run. The starting structure (step 0) and the frame from before a blow-up are the
    caller's to grade and collect (once for every engine)."""
    from alkit.md import run_md

    steps = int(steps)
    stop: dict[str, int | None] = {"step": None}

    def on_step(step: int, live: Atoms) -> bool:
        graded = grade(step, live)
        if graded is not None and monitor.observe(step, live, *graded):
            stop["step"] = step
            return False
        return True

    md = run_md(atoms, calculator, temperature=temperature, ensemble=ensemble, steps=steps, timestep_fs=timestep_fs,
                snapshot_interval=max(1, steps), pressure_gpa=pressure_gpa, seed=seed, on_step=on_step,
                max_temperature_factor=max_temperature_factor, min_distance=min_distance)
    if stop["step"] is not None:
        return MDStop(int(stop["step"]), "gamma")
    if md.status == "blowup":
        return MDStop(int(md.steps_done) + 1, f"blowup: {md.reason}")
    if md.status == "completed" and md.steps_done >= steps:
        return MDStop(steps, "completed")
    return MDStop(int(md.steps_done), f"{md.status}: {md.reason}")


def explore_with_ase(scenario, calculator, grade: Callable[[Atoms], tuple[float, np.ndarray]],
                     settings: ExploreSettings, min_distance: float = 0.5) -> ExploreOutcome:
    """MD of ``scenario`` with ``calculator``, grading every step with ``grade``; see the module docstring.

    ``min_distance``: atoms closer than this (Å) count as a collapse (a physical blow-up)."""
    t0 = time.perf_counter()
    atoms = scenario.atoms.copy()
    monitor = GammaMonitor(settings.gamma_select, settings.gamma_break, settings.max_collect, scenario.id)
    steps = int(settings.steps)

    def outcome(stable: bool, steps_done: int, reason: str) -> ExploreOutcome:
        return ExploreOutcome(id=scenario.id, temperature=float(scenario.temperature), stable=stable,
                              steps_done=int(steps_done), steps_total=steps, max_gamma=monitor.max_gamma,
                              stop_reason=reason, seconds=time.perf_counter() - t0, collected=monitor.collected)

    g0, gs0 = grade(atoms)
    if monitor.observe(0, atoms, g0, gs0):
        return outcome(False, 0, "gamma")
    steps_done, reason = run_graded_md(
        atoms, calculator, monitor, lambda step, live: (*grade(live), None), temperature=scenario.temperature,
        ensemble=scenario.ensemble, steps=steps, timestep_fs=scenario.timestep_fs, pressure_gpa=scenario.pressure_gpa,
        seed=settings.seed, max_temperature_factor=settings.max_temperature_factor, min_distance=min_distance)
    if reason.startswith("blowup"):
        monitor.collect_before_blowup(atoms)
    return outcome(reason == "completed", steps_done, reason)
