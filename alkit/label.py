"""Labellers: structures in; energy, forces, stress and a status out.

Built-ins:

- :class:`CHGNetLabeller` — CHGNet (weights ship with the ``chgnet`` package), a fast stand-in reference;
- :class:`GPAWLabeller` — real PBE DFT with plane waves (presets ``"paper"`` and ``"cheap"``);
- :class:`VaspLabeller` — VASP through ASE's calculator (runs only where VASP and its POTCARs are installed;
  :meth:`VaspLabeller.write_inputs` generates the inputs anywhere);
- :class:`CalculatorLabeller` — any ASE calculator given by import path ``"module:Name"``.

A labeller never raises for a physics failure: an exception, a NaN, an unconverged SCF or a timeout gives a
:class:`LabelResult` with ``status="failed"`` and a reason, and the campaign goes on. :func:`label_many` labels many
structures in parallel through any ``concurrent.futures.Executor`` (see :func:`alkit.executors.make_executor`).

Energies are the *force-consistent* (free) energy where the calculator provides one (DFT with smearing): it is the
energy whose derivatives are the forces, which is what a potential is fitted to. Stress is ASE's Voigt 6-vector in
eV/Å^3 (xx, yy, zz, yz, xz, xy).
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import (
    FIRST_COMPLETED,
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
from ase import Atoms

from alkit._util import import_object
from alkit.errors import ConfigError, InputError
from alkit.io import structure_hash, to_atoms

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_FAILED = "failed"

#: Where Debian's ``gpaw-data`` puts the PAW setups (used when GPAW finds no setups of its own).
DEBIAN_GPAW_SETUPS = "/usr/share/gpaw-setups"


# --------------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class LabelResult:
    """The outcome of labelling one structure.

    ``status`` is ``"ok"`` (energy in eV, forces (n, 3) in eV/Å, stress Voigt-6 in eV/Å^3 or None for a
    non-periodic structure) or ``"failed"`` (``reason`` says why). ``seconds`` is the wall time spent.
    """

    status: str
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    reason: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @classmethod
    def failure(cls, reason: str, seconds: float = 0.0) -> "LabelResult":
        return cls(status=STATUS_FAILED, reason=str(reason) or "unknown failure", seconds=float(seconds))

    @classmethod
    def from_values(cls, energy, forces, stress, n_atoms: int, seconds: float = 0.0) -> "LabelResult":
        """An ``ok`` result after checking shapes and finiteness (a NaN or a wrong shape gives a failure)."""
        try:
            energy = float(energy)
            forces = np.array(forces, dtype=np.float64)
            stress = None if stress is None else np.array(stress, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as exc:
            return cls.failure(f"calculator returned unusable values: {exc}", seconds)
        if not np.isfinite(energy):
            return cls.failure(f"non-finite energy ({energy})", seconds)
        if forces.shape != (n_atoms, 3):
            return cls.failure(f"forces have shape {forces.shape}, expected ({n_atoms}, 3)", seconds)
        if not np.all(np.isfinite(forces)):
            return cls.failure(f"non-finite forces ({int((~np.isfinite(forces)).sum())} components)", seconds)
        if stress is not None:
            if stress.shape == (9,):
                from alkit._util import voigt_stress

                stress = voigt_stress(stress)
            if stress.shape != (6,):
                return cls.failure(f"stress has shape {stress.shape}, expected Voigt (6,)", seconds)
            if not np.all(np.isfinite(stress)):
                return cls.failure("non-finite stress", seconds)
        return cls(status=STATUS_OK, energy=energy, forces=forces, stress=stress, seconds=float(seconds))

    def apply(self, atoms: Atoms) -> Atoms:
        """A copy of ``atoms`` carrying a ``SinglePointCalculator`` with these labels."""
        from ase.calculators.singlepoint import SinglePointCalculator

        if not self.ok:
            raise InputError(f"cannot attach a failed label ({self.reason}) to a structure")
        out = to_atoms(atoms).copy()
        if self.forces is not None and len(self.forces) != len(out):
            raise InputError(f"label has forces for {len(self.forces)} atoms, structure has {len(out)}")
        props: dict[str, Any] = {"energy": self.energy, "free_energy": self.energy, "forces": self.forces}
        if self.stress is not None:
            props["stress"] = self.stress
        out.calc = SinglePointCalculator(out, **props)
        return out


# --------------------------------------------------------------------------------------------------------------------
# The labeller interface and the shared machinery
# --------------------------------------------------------------------------------------------------------------------
@runtime_checkable
class Labeller(Protocol):
    """What the driver needs from a labeller. Labellers must be picklable (they are sent to worker processes)."""

    name: str

    def check(self) -> None:
        """Raise ConfigError if the labeller cannot start (program or data missing)."""

    def label(self, atoms: Atoms) -> LabelResult:
        """Label one structure; never raises for a physics failure."""


class SCFNotConverged(RuntimeError):
    """The self-consistent field did not converge."""


def _failure_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    if isinstance(exc, SCFNotConverged) or "Convergence" in name:
        return f"SCF not converged ({name}{': ' + text if text else ''})"
    return f"{name}: {text}" if text else name


class CalculatorLabellerBase:
    """Labels a structure by attaching an ASE calculator and reading energy, forces and stress.

    Subclasses provide :meth:`calculator` (and optionally :meth:`prepare`, :meth:`after` and :meth:`check`).
    """

    name: str = "calculator"

    def check(self) -> None:  # pragma: no cover - overridden where something can be missing
        return None

    def setup(self) -> None:
        """One-off work (imports, loading a model) done before the first structure and outside its timeout."""

    def calculator(self, atoms: Atoms):
        raise NotImplementedError

    def prepare(self, atoms: Atoms) -> None:
        """Adjust the (copied) structure before the calculation, e.g. initial magnetic moments."""

    def after(self, atoms: Atoms, calc) -> None:
        """Inspect the finished calculation; raise (e.g. SCFNotConverged) to mark it failed."""

    #: True where one calculator object is reused across structures (then calls are serialised by a lock, so the
    #: labeller is safe to share between threads).
    shares_calculator: ClassVar[bool] = False

    def _call_lock(self):
        if not self.shares_calculator:
            return contextlib.nullcontext()
        lock = self.__dict__.get("_lock_obj")
        if lock is None:
            lock = self.__dict__.setdefault("_lock_obj", threading.Lock())
        return lock

    def __getstate__(self):
        """Pickle the parameters only: a loaded model or calculator and the lock stay in their process."""
        state = self.__dict__.copy()
        state.pop("_lock_obj", None)
        if "_calc" in state:
            state["_calc"] = None
        return state

    def label(self, atoms: Atoms) -> LabelResult:
        t0 = time.perf_counter()
        try:
            work = to_atoms(atoms).copy()
            work.calc = None
            self.prepare(work)
            with self._call_lock():
                calc = self.calculator(work)
                work.calc = calc
                energy = _force_consistent_energy(work)
                forces = work.get_forces()
                stress = work.get_stress(voigt=True) if np.all(work.pbc) else None
                work.calc = None
            self.after(work, calc)
        except Exception as exc:  # noqa: BLE001 - every calculator failure becomes a failed label with its reason
            log.debug("labelling failed", exc_info=True)
            return LabelResult.failure(_failure_reason(exc), time.perf_counter() - t0)
        return LabelResult.from_values(energy, forces, stress, len(work), time.perf_counter() - t0)


def _force_consistent_energy(atoms: Atoms) -> float:
    from ase.calculators.calculator import PropertyNotImplementedError

    try:
        return atoms.get_potential_energy(force_consistent=True)
    except PropertyNotImplementedError:
        return atoms.get_potential_energy()


def _import_object(spec: str):
    """Resolve ``"package.module:Name"`` (or ``"package.module.Name"``) to a calculator class or factory."""
    return import_object(spec, what=f"calculator {spec!r}")


# --------------------------------------------------------------------------------------------------------------------
# Built-in labellers
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class CalculatorLabeller(CalculatorLabellerBase):
    """Any ASE calculator by import path, e.g. ``CalculatorLabeller("ase.calculators.emt:EMT")``.

    ``kwargs`` go to the calculator's constructor. A fresh calculator is made for every structure unless
    ``reuse=True`` (for calculators that are expensive to build, e.g. ML models, and safe to reuse).
    """

    spec: str = ""
    kwargs: dict = field(default_factory=dict)
    reuse: bool = False
    _calc: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def shares_calculator(self) -> bool:  # type: ignore[override]
        return bool(self.reuse)

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.spec

    def check(self) -> None:
        _import_object(self.spec)

    def setup(self) -> None:
        _import_object(self.spec)

    def calculator(self, atoms: Atoms):
        if self.reuse and self._calc is not None:
            return self._calc
        calc = _import_object(self.spec)(**(self.kwargs or {}))
        if self.reuse:
            self._calc = calc
        return calc



@dataclass
class CHGNetLabeller(CalculatorLabellerBase):
    """CHGNet (pretrained ``model`` shipped inside the ``chgnet`` package; nothing is downloaded).

    A fast stand-in reference for plumbing and demos: for Ti-H its forces are ~5x softer than DFT.
    The loaded model is kept per process and dropped when the labeller is pickled.
    """

    model: str = "0.3.0"
    device: str = "cpu"
    name: ClassVar[str] = "chgnet"
    shares_calculator: ClassVar[bool] = True
    _calc: Any = field(default=None, init=False, repr=False, compare=False)

    def check(self) -> None:
        try:
            import chgnet  # noqa: F401
        except ImportError as exc:
            raise ConfigError(f"the CHGNet labeller needs the chgnet package: {exc}") from exc

    def setup(self) -> None:
        with self._call_lock():
            self.calculator(None)

    def calculator(self, atoms: Atoms | None):
        if self._calc is None:
            from chgnet.model import CHGNet
            from chgnet.model.dynamics import CHGNetCalculator

            try:
                model = CHGNet.load(model_name=self.model, use_device=self.device, verbose=False)
            except ValueError as exc:
                raise ConfigError(f"unknown CHGNet model {self.model!r}: {exc}") from exc
            self._calc = CHGNetCalculator(model=model, use_device=self.device)
        return self._calc



#: GPAW presets. "paper": the reference paper's settings (PBE, 500 eV plane waves, spin-polarized, k-point density
#: 3.5 per Å^-1, Methfessel-Paxton 0.1 eV as VASP's ISMEAR=1/SIGMA=0.1). "cheap": for demos (~10x faster).
GPAW_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"ecut": 500.0, "kpt_density": 3.5, "spinpol": True, "smearing": ("methfessel-paxton", 0.1)},
    "cheap": {"ecut": 350.0, "kpt_density": 2.0, "spinpol": False, "smearing": ("fermi-dirac", 0.1)},
}

_SMEARING_NAMES = {
    "fermi-dirac": "fermi-dirac",
    "fd": "fermi-dirac",
    "methfessel-paxton": "methfessel-paxton",
    "mp": "methfessel-paxton",
    "gaussian": "gaussian",
}


def _smearing(smearing) -> tuple[str, float]:
    try:
        kind, width = smearing
        kind = _SMEARING_NAMES[str(kind).lower()]
        width = float(width)
    except (TypeError, ValueError, KeyError):
        raise ConfigError(
            f"smearing must be (kind, width_eV) with kind in {sorted(set(_SMEARING_NAMES))}, got {smearing!r}"
        ) from None
    if width < 0:
        raise ConfigError(f"smearing width must be >= 0 eV, got {width}")
    return kind, width


def kpoint_mesh(atoms: Atoms, kpt_density: float) -> list[int]:
    """Gamma-centred Monkhorst-Pack mesh with ``kpt_density`` k-points per Å^-1 along each periodic reciprocal
    vector (ASE's convention: n_i = ceil(2π |b_i| density)); 1 along non-periodic directions."""
    from ase.calculators.calculator import kptdensity2monkhorstpack

    if not kpt_density or kpt_density <= 0:
        raise ConfigError(f"kpt_density must be > 0 k-points per Å^-1, got {kpt_density}")
    return [int(k) for k in kptdensity2monkhorstpack(atoms, float(kpt_density), even=False)]


def _initial_magmoms(atoms: Atoms, magmom: float) -> None:
    if not np.any(atoms.get_initial_magnetic_moments()):
        atoms.set_initial_magnetic_moments([float(magmom)] * len(atoms))


@dataclass
class GPAWLabeller(CalculatorLabellerBase):
    """PBE plane-wave DFT with GPAW.

    Settings come from ``preset`` (``"paper"``: 500 eV, 3.5 k-points per Å^-1, spin-polarized, Methfessel-Paxton
    0.1 eV; ``"cheap"``: 350 eV, 2.0 per Å^-1, spin-paired, Fermi-Dirac 0.1 eV); any argument given explicitly
    overrides the preset. Spin-polarized runs start from ``magmom`` μB per atom when the structure has no initial
    moments (as VASP's default MAGMOM). PAW setups: ``setup_path``, else ``$GPAW_SETUP_PATH``, else GPAW's own
    (the ``gpaw-data`` wheel), else Debian's ``/usr/share/gpaw-setups``. ``txt``: a directory for one GPAW log per
    structure (named by its hash), or None for silence. An unconverged SCF is a failed label.
    """

    ecut: float | None = None
    kpt_density: float | None = None
    spinpol: bool | None = None
    smearing: tuple | None = None
    preset: str = "paper"
    xc: str = "PBE"
    magmom: float = 1.0
    maxiter: int | None = None
    convergence: dict | None = None
    setup_path: str | None = None
    txt: str | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return "gpaw" if self.preset == "paper" else f"gpaw-{self.preset}"

    def settings(self) -> dict[str, Any]:
        """The effective settings: the preset overridden by explicit arguments."""
        if self.preset not in GPAW_PRESETS:
            raise ConfigError(f"unknown GPAW preset {self.preset!r}: use one of {sorted(GPAW_PRESETS)}")
        s = dict(GPAW_PRESETS[self.preset])
        for key in ("ecut", "kpt_density", "spinpol", "smearing"):
            if getattr(self, key) is not None:
                s[key] = getattr(self, key)
        s["ecut"] = float(s["ecut"])
        if s["ecut"] <= 0:
            raise ConfigError(f"ecut must be > 0 eV, got {s['ecut']}")
        s["smearing"] = _smearing(s["smearing"])
        if float(s["kpt_density"]) <= 0:
            raise ConfigError(f"kpt_density must be > 0, got {s['kpt_density']}")
        return s

    def _setup_paths(self) -> list[str]:
        """Setup directories to prepend to GPAW's search path (explicit or Debian fallback)."""
        if self.setup_path:
            return [str(self.setup_path)]
        import gpaw

        existing = [p for p in (os.environ.get("GPAW_SETUP_PATH", "").split(os.pathsep) + list(gpaw.setup_paths)) if p]
        if any(Path(p).is_dir() for p in existing):
            return []
        return [DEBIAN_GPAW_SETUPS]

    def check(self) -> None:
        self.settings()
        try:
            import gpaw
        except ImportError as exc:
            raise ConfigError(
                f"the GPAW labeller needs GPAW (pip install 'alkit[gpaw]', see scripts/install.sh): {exc}"
            ) from exc
        paths = self._setup_paths() + [str(p) for p in gpaw.setup_paths]
        if not any(Path(p).is_dir() and any(Path(p).glob(f"*.{self.xc}*")) for p in paths):
            raise ConfigError(
                f"no GPAW {self.xc} PAW setups found in {paths}: install Debian's gpaw-data or the gpaw-data wheel, "
                "or set GPAW_SETUP_PATH"
            )

    def setup(self) -> None:
        import gpaw  # noqa: F401 - imports take seconds; not part of a structure's time limit

    def calculator(self, atoms: Atoms):
        import gpaw
        from gpaw import GPAW, PW, FermiDirac, MethfesselPaxton

        for p in reversed(self._setup_paths()):
            if p not in gpaw.setup_paths:
                gpaw.setup_paths.insert(0, p)
        s = self.settings()
        kind, width = s["smearing"]
        if kind == "fermi-dirac":
            occ = FermiDirac(width)
        elif kind == "methfessel-paxton":
            occ = MethfesselPaxton(width, order=1)
        else:
            occ = MethfesselPaxton(width, order=0)  # order 0 is Gaussian smearing
        params: dict[str, Any] = dict(
            mode=PW(s["ecut"]),
            xc=self.xc,
            kpts={"size": kpoint_mesh(atoms, s["kpt_density"]), "gamma": True},
            spinpol=bool(s["spinpol"]),
            occupations=occ,
            txt=None,
        )
        if self.maxiter is not None:
            params["maxiter"] = int(self.maxiter)
        if self.convergence:
            params["convergence"] = dict(self.convergence)
        if self.txt:
            Path(self.txt).mkdir(parents=True, exist_ok=True)
            params["txt"] = str(Path(self.txt) / f"gpaw-{structure_hash(atoms)}.txt")
        return GPAW(**params)

    def prepare(self, atoms: Atoms) -> None:
        if self.settings()["spinpol"]:
            _initial_magmoms(atoms, self.magmom)
        else:
            atoms.set_initial_magnetic_moments(None)


_ISMEAR = {"fermi-dirac": -1, "gaussian": 0, "methfessel-paxton": 1}


@dataclass
class VaspLabeller(CalculatorLabellerBase):
    """VASP through ASE's ``Vasp`` calculator, with settings close to the paper's: PBE, ENCUT 500 eV, ISPIN 2
    (MAGMOM ``magmom`` per atom unless the structure has moments), a Gamma-centred k-mesh of ``kpt_density``
    k-points per Å^-1 (the same mesh the GPAW labeller uses), Methfessel-Paxton 0.1 eV, EDIFF 1e-5, PREC Accurate,
    LREAL .FALSE., one ionic step (IBRION -1, NSW 0) with the stress (ISIF 2), no WAVECAR/CHGCAR.

    It runs only where VASP is installed: ``command`` or ``$ASE_VASP_COMMAND`` / ``$VASP_COMMAND`` /
    ``$VASP_SCRIPT``, with POTCARs under ``$VASP_PP_PATH`` (ASE's layout). Each structure runs in
    ``directory/<structure hash>``. :meth:`write_inputs` writes INCAR, KPOINTS, POSCAR and POTCAR (or, where
    POTCARs are not available, ``POTCAR.spec`` naming the POTCAR of each species) without running anything.
    """

    ecut: float = 500.0
    kpt_density: float = 3.5
    spinpol: bool = True
    smearing: tuple = ("methfessel-paxton", 0.1)
    magmom: float = 1.0
    ediff: float = 1e-5
    nelm: int = 100
    prec: str = "Accurate"
    lreal: bool | str = False
    algo: str = "Normal"
    setups: str | dict = "recommended"
    command: str | None = None
    directory: str = "vasp-runs"
    name: ClassVar[str] = "vasp"

    def vasp_parameters(self, atoms: Atoms) -> dict[str, Any]:
        """Keyword arguments for ``ase.calculators.vasp.Vasp`` for this structure."""
        kind, width = _smearing(self.smearing)
        if float(self.ecut) <= 0:
            raise ConfigError(f"ecut must be > 0 eV, got {self.ecut}")
        return dict(
            xc="PBE",
            setups=self.setups,
            prec=self.prec,
            encut=float(self.ecut),
            ispin=2 if self.spinpol else 1,
            ismear=_ISMEAR[kind],
            sigma=width,
            ediff=float(self.ediff),
            nelm=int(self.nelm),
            algo=self.algo,
            lreal=self.lreal,
            ibrion=-1,
            nsw=0,
            isif=2,
            lwave=False,
            lcharg=False,
            kpts=kpoint_mesh(atoms, self.kpt_density),
            gamma=True,
        )

    def _command(self) -> str | None:
        if self.command:
            return self.command
        for var in ("ASE_VASP_COMMAND", "VASP_COMMAND"):
            if os.environ.get(var):
                return os.environ[var]
        script = os.environ.get("VASP_SCRIPT")
        return f"python {script}" if script else None

    def check(self) -> None:
        import shlex
        import shutil

        _smearing(self.smearing)
        cmd = self._command()
        if not cmd:
            raise ConfigError(
                "the VASP labeller cannot start: no VASP command (VASP is not installed here?). Set "
                "ASE_VASP_COMMAND (e.g. 'mpirun -np 4 vasp_std'), VASP_COMMAND or VASP_SCRIPT, or pass command=..."
            )
        exe = next((tok for tok in shlex.split(cmd) if tok not in ("mpirun", "mpiexec", "srun") and not tok.startswith("-")
                    and not tok.isdigit()), shlex.split(cmd)[0])
        if shutil.which(exe) is None and not Path(exe).is_file():
            raise ConfigError(f"the VASP labeller cannot start: VASP executable {exe!r} (from {cmd!r}) not found")
        pp = os.environ.get("VASP_PP_PATH")
        if not pp or not Path(pp).is_dir():
            raise ConfigError(
                "the VASP labeller cannot start: VASP_PP_PATH must name the directory holding potpaw_PBE/ "
                f"(got {pp!r})"
            )

    def potcar_symbols(self, atoms: Atoms) -> list[str]:
        """POTCAR names per species in POSCAR order, e.g. ['Ti_sv', 'H'] with the 'recommended' setups."""
        from ase.calculators.vasp.create_input import count_symbols, get_pp_setup

        setups, special = get_pp_setup(self.setups)
        symbols, _ = count_symbols(atoms, exclude=special)
        names = []
        for s in symbols:
            suffix = setups.get(s, "")
            names.append(suffix if suffix.startswith(s) else s + suffix)
        return names

    def write_inputs(self, atoms: Atoms, directory: str | os.PathLike) -> Path:
        """Write INCAR, KPOINTS, POSCAR (atoms sorted by species, as ASE runs VASP) and POTCAR, or POTCAR.spec
        where ``$VASP_PP_PATH`` has no POTCARs. Returns the directory."""
        from ase.calculators.vasp import Vasp

        atoms = to_atoms(atoms).copy()
        self.prepare(atoms)
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        have_potcars = bool(os.environ.get("VASP_PP_PATH")) and Path(os.environ["VASP_PP_PATH"]).is_dir()
        cls = Vasp if have_potcars else _vasp_spec_only_class()
        calc = cls(directory=str(out), **self.vasp_parameters(atoms))
        if not have_potcars:
            calc.potcar_spec = self.potcar_symbols(atoms)
        calc.write_input(atoms)
        return out

    def prepare(self, atoms: Atoms) -> None:
        if self.spinpol:
            _initial_magmoms(atoms, self.magmom)

    def calculator(self, atoms: Atoms):
        from ase.calculators.vasp import Vasp

        directory = Path(self.directory) / structure_hash(atoms)
        directory.mkdir(parents=True, exist_ok=True)
        return Vasp(directory=str(directory), command=self.command, **self.vasp_parameters(atoms))

    def after(self, atoms: Atoms, calc) -> None:
        if getattr(calc, "converged", None) is False:
            raise SCFNotConverged(f"electronic SCF did not reach EDIFF={self.ediff:g} within NELM={self.nelm}")


def _vasp_spec_only_class():
    from ase.calculators.vasp import Vasp

    class VaspSpecOnly(Vasp):
        """ASE's Vasp input writer where POTCARs are not available: writes POTCAR.spec instead of POTCAR."""

        potcar_spec: list[str] = []

        def _build_pp_list(self, atoms, setups=None, special_setups=()):
            return []

        def write_potcar(self, suffix="", directory="./"):
            with open(Path(directory) / "POTCAR.spec", "w") as fh:
                fh.write("\n".join(self.potcar_spec) + "\n")

    return VaspSpecOnly


# --------------------------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------------------------
def _gpaw(preset: str):
    def factory(**kwargs) -> "GPAWLabeller":
        return GPAWLabeller(**{**kwargs, "preset": preset})

    return factory


#: Labeller factories by name (ASE's ``register_calculator_class`` pattern): ``factory(**labeller_kwargs)``.
LABELLERS: dict[str, Callable[..., Labeller]] = {
    "chgnet": lambda **kw: CHGNetLabeller(**kw),
    "gpaw": lambda **kw: GPAWLabeller(**{"preset": "paper", **kw}),
    **{f"gpaw-{p}": _gpaw(p) for p in GPAW_PRESETS},
    "vasp": lambda **kw: VaspLabeller(**kw),
}


def register_labeller(name: str, factory: Callable[..., Labeller]) -> None:
    """Make ``ALConfig(labeller=name)`` and ``--labeller name`` build ``factory(**labeller_kwargs)``: a
    :class:`Labeller`. Any ASE calculator also works without registering, as ``"module:ClassName"``."""
    LABELLERS[str(name).lower()] = factory


def make_labeller(name: str, **kwargs) -> Labeller:
    """A labeller by registered name (``"chgnet"``, ``"gpaw"`` (paper preset), ``"gpaw-<preset>"``, ``"vasp"``, or
    any added with :func:`register_labeller`) or an ASE calculator by import path ``"module:Name"`` (``kwargs``
    go to its constructor)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"labeller name must be a non-empty string, got {name!r}")
    factory = LABELLERS.get(name.lower())
    if factory is not None:
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"bad option for labeller {name!r}: {exc}") from exc
    if name.lower().startswith("gpaw-"):
        raise ConfigError(f"unknown GPAW preset {name[5:]!r} in labeller {name!r}: use one of {sorted(GPAW_PRESETS)}")
    if ":" in name:
        lab = CalculatorLabeller(spec=name, kwargs=dict(kwargs))
        lab.check()
        return lab
    raise ConfigError(f"unknown labeller {name!r}: use one of {', '.join(sorted(LABELLERS))}, or module:Name")


# --------------------------------------------------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------------------------------------------------
class LabelTimeout(BaseException):
    """Raised inside a labelling call when its time is up. A BaseException so that calculators' ``except
    Exception`` clauses do not swallow it."""


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise LabelTimeout in the current thread after ``seconds``.

    In a process's main thread this uses SIGALRM; in other threads (Dask workers, thread pools) a timer injects the
    exception with ``PyThreadState_SetAsyncExc``. Both interrupt Python code between bytecodes: a calculator stuck
    inside one long C call is interrupted when it returns (GPAW's SCF loop returns to Python every iteration).
    """
    if seconds is None:
        yield
        return
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        def _alarm(signum, frame):
            raise LabelTimeout()

        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, float(seconds))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return
    tid = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def _fire():
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), ctypes.py_object(LabelTimeout))

    timer = threading.Timer(float(seconds), _fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
            if state["fired"]:  # clear an exception that was injected but not yet delivered
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)


def _label_guarded(labeller: Labeller, atoms: Atoms, timeout: float | None) -> LabelResult:
    """``labeller.label`` under a deadline; anything unexpected becomes a failed result."""
    t0 = time.perf_counter()
    try:
        setup = getattr(labeller, "setup", None)
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        with _deadline(timeout):
            result = labeller.label(atoms)
    except LabelTimeout:
        return LabelResult.failure(f"timeout after {timeout:g} s", time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - a labeller broke its "never raises" contract; still not fatal
        return LabelResult.failure(_failure_reason(exc), time.perf_counter() - t0)
    if not isinstance(result, LabelResult):
        return LabelResult.failure(f"labeller returned {type(result).__name__}, not a LabelResult",
                                   time.perf_counter() - t0)
    return result


# Per-process memo of labellers in worker processes, so that a worker loads a model (CHGNet) once rather than once
# per structure: each task receives a freshly unpickled labeller. Keyed by the labeller's class and parameters.
_WORKER_LABELLERS: dict[tuple[str, str], Labeller] = {}
_WORKER_LOCK = threading.Lock()


def _worker_labeller(labeller: Labeller) -> Labeller:
    key = (f"{type(labeller).__module__}.{type(labeller).__qualname__}", repr(labeller))
    with _WORKER_LOCK:
        cached = _WORKER_LABELLERS.get(key)
        if cached is None:
            if len(_WORKER_LABELLERS) >= 4:
                _WORKER_LABELLERS.pop(next(iter(_WORKER_LABELLERS)))
            _WORKER_LABELLERS[key] = cached = labeller
    return cached


def _label_task(labeller: Labeller, atoms: Atoms, timeout: float | None, parent_pid: int) -> LabelResult:
    """The unit of work sent to an executor."""
    if os.getpid() != parent_pid:
        if "torch" in sys.modules:  # a worker that joined without alkit's initialiser; torch reads OMP_NUM_THREADS
            from alkit._compat import set_torch_threads

            set_torch_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
        labeller = _worker_labeller(labeller)
    return _label_guarded(labeller, atoms, timeout)


# --------------------------------------------------------------------------------------------------------------------
# Labelling many structures
# --------------------------------------------------------------------------------------------------------------------
def label_many(
    labeller: Labeller,
    structures: Sequence[Atoms],
    executor: Executor | None = None,
    timeout: float | None = None,
    on_result: Callable[[int, LabelResult], None] | None = None,
    progress: bool = True,
) -> list[LabelResult]:
    """Label ``structures`` (in input order) with ``labeller``.

    With ``executor=None`` they are labelled one by one in this process; otherwise each structure is a task on the
    executor (process pool, Dask, ...). ``on_result(i, result)`` is called in this thread as each one finishes,
    so the caller can store it at once. ``timeout`` (seconds per structure) marks a structure failed when its time is
    up (one-off set-up such as loading a model is not counted). A failed calculation, a timeout or a dead worker marks only that structure failed: if a
    ``ProcessPoolExecutor`` breaks (a worker killed by a segfault or the OOM killer), the structures that were in
    flight are retried one at a time on a replacement pool, so that only the one that kills its worker is failed.
    """
    if timeout is not None and not (float(timeout) > 0):
        raise ConfigError(f"timeout must be > 0 seconds or None, got {timeout}")
    atoms_list = [to_atoms(s) for s in structures]
    results: list[LabelResult | None] = [None] * len(atoms_list)
    if not atoms_list:
        return []
    from tqdm.auto import tqdm

    bar = tqdm(total=len(atoms_list), desc=f"label ({labeller.name})", unit="structure", disable=not progress)
    n_failed = 0

    def deliver(i: int, result: LabelResult) -> None:
        nonlocal n_failed
        if results[i] is not None:  # a late answer from a task already marked failed
            return
        results[i] = result
        if not result.ok:
            n_failed += 1
            log.warning("structure %d (%s) failed: %s", i, atoms_list[i].get_chemical_formula(), result.reason)
        bar.update(1)
        bar.set_postfix(failed=n_failed)
        if on_result is not None:
            on_result(i, result)

    try:
        if executor is None:
            for i, atoms in enumerate(atoms_list):
                deliver(i, _label_guarded(labeller, atoms, timeout))
        else:
            _label_on_executor(labeller, atoms_list, executor, timeout, deliver, results)
    finally:
        bar.close()
    return [r if r is not None else LabelResult.failure("not labelled") for r in results]


def _replacement_pool(executor: ProcessPoolExecutor, max_workers: int | None = None) -> ProcessPoolExecutor:
    """A new process pool configured like ``executor`` (which is broken)."""
    return ProcessPoolExecutor(
        max_workers=max_workers or getattr(executor, "_max_workers", None) or 1,
        mp_context=getattr(executor, "_mp_context", None),
        initializer=getattr(executor, "_initializer", None),
        initargs=getattr(executor, "_initargs", ()),
    )


def _label_on_executor(labeller, atoms_list, executor, timeout, deliver, results) -> None:
    """Submit, collect, and survive timeouts and broken process pools (see :func:`label_many`)."""
    pid = os.getpid()
    is_pool = isinstance(executor, ProcessPoolExecutor)
    # A process pool gets at most as many tasks in flight as it has workers: when it breaks, the in-flight ones are
    # the only suspects. Other executors (Dask) get everything at once and handle their own workers.
    # The serial executor runs a task when it is submitted: one at a time, so each label is delivered (and
    # committed by the caller) before the next one starts.
    from alkit.executors import SerialExecutor

    if isinstance(executor, SerialExecutor):
        window = 1
    else:
        window = (getattr(executor, "_max_workers", None) or 1) if is_pool else len(atoms_list)
    queue = list(range(len(atoms_list)))
    suspects: list[int] = []  # in flight when a pool broke: retried one at a time
    isolating: int | None = None  # the suspect currently running alone
    grace = None if timeout is None else float(timeout) * 1.25 + 30.0  # driver-side backstop
    owned: list[ProcessPoolExecutor] = []
    current = executor
    pending: dict[Future, int] = {}
    started: dict[Future, float] = {}

    def submit(i: int) -> None:
        pending[current.submit(_label_task, labeller, atoms_list[i], timeout, pid)] = i

    try:
        while queue or suspects or pending:
            if suspects:
                if not pending:
                    isolating = suspects.pop(0)
                    submit(isolating)
            else:
                while queue and len(pending) < window:
                    submit(queue.pop(0))
            done, _ = wait(list(pending), timeout=0.5 if grace is not None else None, return_when=FIRST_COMPLETED)
            broken: list[int] = []
            for fut in done:
                i = pending.pop(fut)
                started.pop(fut, None)
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
                    continue
                except CancelledError:
                    result = LabelResult.failure("cancelled")
                except Exception as exc:  # noqa: BLE001 - e.g. Dask's KilledWorker: that structure fails
                    result = LabelResult.failure(f"worker error: {_failure_reason(exc)}")
                if i == isolating:
                    isolating = None
                deliver(i, result)
            if grace is not None:
                now = time.monotonic()
                for fut, i in list(pending.items()):
                    if fut.running():
                        if now - started.setdefault(fut, now) > grace:
                            pending.pop(fut)
                            started.pop(fut, None)
                            if i == isolating:
                                isolating = None
                            deliver(i, LabelResult.failure(
                                f"timeout after {timeout:g} s (no answer from the worker after {grace:.0f} s)"))
            if broken:
                # Everything else in flight on the broken pool fails too: collect it, then replace the pool.
                for fut, i in list(pending.items()):
                    try:
                        deliver(i, fut.result())
                    except Exception:  # noqa: BLE001
                        broken.append(i)
                pending.clear()
                started.clear()
                if isolating is not None and broken == [isolating]:
                    deliver(isolating, LabelResult.failure(
                        "worker process died while labelling (crash, segfault or out of memory)"))
                else:
                    log.warning("process pool broke with %d structure(s) in flight; retrying them one at a time",
                                len(broken))
                    suspects = sorted(set(suspects) | set(broken))
                isolating = None
                current = _replacement_pool(current)
                owned.append(current)
    finally:
        for pool in owned:
            pool.shutdown(wait=False, cancel_futures=True)
