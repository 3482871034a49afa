"""Post-AL validation of a campaign: ``alkit validate RUN_DIR`` and :func:`validate_run`.

"Stable in every scenario" says nothing about accuracy or physics. This module measures three things, as the
reference paper does after its active learning:

(a) **Errors on an independent test set.** Reference MD with the campaign's own labeller (the one named in
    ``config.json``) on cells the recipe names (:class:`ValidationSpec`); none of these structures is ever used for
    training. Each trajectory is cached in ``RUN_DIR/validation/test_set/`` as soon as it is done (a rerun or a
    resumed run redoes nothing), and the whole set in ``RUN_DIR/validation/test_set.extxyz``. Every iteration's
    potential (``iterations/iter_NNN/pot.mtp``) is evaluated with :func:`alkit.mtp.fit.evaluate`: energy per atom
    and force RMSE/MAE, plus parity plots of the seed and the final potential.
(b) **Hydrogen diffusion with the final MTP.** NVT MD (LAMMPS ``pair_style mtp`` when alkit's plugin is built, ASE
    otherwise) of the recipe's cells at several temperatures; the mean squared displacement of H from unwrapped
    positions (:func:`mean_squared_displacement`), D = slope / 6 of a linear fit over the later lags
    (:func:`diffusion_coefficient`) and an Arrhenius fit ln D = ln D0 - Ea / kT with the standard error of Ea
    from the fit covariance (:func:`arrhenius_fit`). MD with the labeller itself is run where the recipe says it
    is affordable (``MDSystem.labeller_temperatures``), and the output says where it is not.
(c) **Iteration 0's stability per temperature** (the paper's "MTP-DIRECT without AL"), read from the event log
    (or the store when the log lacks it).

Outputs in ``RUN_DIR/validation/`` (or ``out_dir``): ``validation.json``, ``validation.md``, one PNG per figure
and ``validation.html`` (drawn with :mod:`alkit.report`'s chart machinery). Recipes provide the spec through an
optional ``validation(preset) -> ValidationSpec | None`` function.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import html
import json
import logging
import math
import os
import re
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from alkit._util import atomic_copy, atomic_write, json_default
from alkit.errors import ConfigError, InputError

log = logging.getLogger(__name__)

VALIDATION_DIR = "validation"
TEST_SET_FILE = "test_set.extxyz"
#: Boltzmann constant in eV/K.
KB_EV = 8.617333262e-5
#: 1 Å^2/ps in cm^2/s.
A2_PS_TO_CM2_S = 1e-4
#: Points of one parity series drawn in the interactive page (the PNG draws them all).
MAX_HTML_PARITY_POINTS = 4000
#: Points of one MSD curve drawn (both renderings).
MAX_MSD_POINTS = 120
ENGINES = ("auto", "lammps", "ase")


# --------------------------------------------------------------------------------------------------------------
# What to validate
# --------------------------------------------------------------------------------------------------------------
@dataclass
class MDSystem:
    """One cell for validation MD: a ``name`` (used in file names and tables), the structure and its
    temperatures. ``labeller_temperatures`` (diffusion only, a subset of ``temperatures``): where MD with the
    labeller itself is affordable, to compare the MTP's diffusivity with the reference's. ``diffusion_steps``
    (diffusion only): this system's MTP run length instead of the spec's, because a dilute cell (two H in hcp
    Ti36H2) needs a much longer run than a concentrated one for the same MSD statistics, and MTP MD is cheap."""

    name: str
    atoms: Atoms
    temperatures: tuple[float, ...]
    labeller_temperatures: tuple[float, ...] = ()
    tags: dict[str, Any] = field(default_factory=dict)
    diffusion_steps: int | None = None

    def describe(self) -> dict:
        return {"name": self.name, "formula": self.atoms.get_chemical_formula(), "n_atoms": len(self.atoms),
                "temperatures": [float(t) for t in self.temperatures],
                "labeller_temperatures": [float(t) for t in self.labeller_temperatures], "tags": dict(self.tags),
                "diffusion_steps": self.diffusion_steps}


def _is_count(v: Any) -> bool:
    """An integer >= 1 (numpy integers too, bools not): a number of steps, snapshots or frames."""
    return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v >= 1


@dataclass
class ValidationSpec:
    """How to validate a campaign (a recipe's ``validation(preset)`` returns one).

    Test set: ``test_steps`` of labeller MD (NVT) per system and temperature, a snapshot every
    ``test_snapshot_interval`` steps, the last ``test_snapshots`` of them kept (the earlier steps equilibrate).
    Diffusion: ``diffusion_steps`` of MTP MD (or the system's own ``MDSystem.diffusion_steps``;
    ``labeller_diffusion_steps`` for the labeller's, default ``diffusion_steps``),
    positions sampled every ``diffusion_sample_interval`` steps; the MSD is averaged over time origins up to a lag
    of ``diffusion_max_lag`` x the trajectory and fitted from ``diffusion_fit_start`` x that lag on (the ballistic
    start left out). ``references``: published activation energies per diffusion system, {name: {source: Ea eV}},
    shown next to the measured ones.
    """

    test_systems: list[MDSystem] = field(default_factory=list)
    test_steps: int = 2000
    test_snapshot_interval: int = 20
    test_snapshots: int = 50
    diffusion_systems: list[MDSystem] = field(default_factory=list)
    diffusion_steps: int = 20000
    diffusion_sample_interval: int = 20
    labeller_diffusion_steps: int | None = None
    diffusion_max_lag: float = 0.5
    diffusion_fit_start: float = 0.3
    diffusing_species: str = "H"
    timestep_fs: float = 0.5
    seed: int = 0
    references: dict[str, dict[str, float]] = field(default_factory=dict)

    def validate(self) -> None:
        """ConfigError naming the field and the value when the spec cannot work (checked before any MD)."""
        from ase.data import atomic_numbers

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"ValidationSpec.{name} = {getattr(self, name)!r}: {why}")

        for name in ("test_steps", "test_snapshot_interval", "test_snapshots", "diffusion_steps",
                     "diffusion_sample_interval"):
            if not _is_count(getattr(self, name)):
                raise bad(name, "must be an integer >= 1")
        if self.labeller_diffusion_steps is not None and (not isinstance(self.labeller_diffusion_steps, int)
                                                          or self.labeller_diffusion_steps < 1):
            raise bad("labeller_diffusion_steps", "must be None or an integer >= 1")
        if self.test_snapshots * self.test_snapshot_interval > self.test_steps:
            raise bad("test_snapshots", f"{self.test_snapshots} snapshots every {self.test_snapshot_interval} steps "
                                        f"need more than test_steps = {self.test_steps}")
        for name in ("diffusion_max_lag", "diffusion_fit_start"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise bad(name, "must be a fraction in (0, 1)")
        if not self.timestep_fs > 0:
            raise bad("timestep_fs", "must be > 0")
        if self.diffusing_species not in atomic_numbers:
            raise bad("diffusing_species", "must be an element symbol")
        for group in ("test_systems", "diffusion_systems"):
            systems = getattr(self, group)
            names = [s.name for s in systems]
            if len(set(names)) != len(names):
                raise bad(group, f"names repeated: {names}")
            for s in systems:
                where = f"ValidationSpec.{group}[{s.name!r}]"
                if not s.name or not re.fullmatch(r"[A-Za-z0-9_.+-]+", s.name):
                    raise ConfigError(f"{where}: the name must be non-empty letters, digits, _ . + - (file names)")
                if not isinstance(s.atoms, Atoms) or len(s.atoms) == 0:
                    raise ConfigError(f"{where}: needs a non-empty ase.Atoms")
                temps = tuple(s.temperatures)
                if not temps or any(not (np.isfinite(t) and t > 0) for t in temps):
                    raise ConfigError(f"{where}: temperatures {list(temps)} must be a non-empty list of values > 0 K")
                extra = set(s.labeller_temperatures) - set(temps)
                if extra:
                    raise ConfigError(f"{where}: labeller_temperatures {sorted(extra)} are not among its "
                                      f"temperatures {list(temps)}")
                if s.diffusion_steps is not None and not _is_count(s.diffusion_steps):
                    raise ConfigError(f"{where}: diffusion_steps = {s.diffusion_steps!r} must be None or an "
                                      f"integer >= 1")
                if group == "diffusion_systems":
                    if not np.any(s.atoms.numbers == atomic_numbers[self.diffusing_species]):
                        raise ConfigError(f"{where}: {s.atoms.get_chemical_formula()} has no "
                                          f"{self.diffusing_species} to diffuse")
                    if not all(s.atoms.pbc):
                        raise ConfigError(f"{where}: diffusion needs a fully periodic cell")

    def with_temperatures(self, temperatures: Sequence[float]) -> "ValidationSpec":
        """The same spec with every diffusion system at ``temperatures`` (labeller MD kept where the old and new
        temperatures agree)."""
        temps = tuple(float(t) for t in temperatures)
        systems = [replace(s, temperatures=temps,
                           labeller_temperatures=tuple(t for t in s.labeller_temperatures if t in temps))
                   for s in self.diffusion_systems]
        return replace(self, diffusion_systems=systems)

    def describe(self) -> dict:
        d = asdict(replace(self, test_systems=[], diffusion_systems=[]))
        d["test_systems"] = [s.describe() for s in self.test_systems]
        d["diffusion_systems"] = [s.describe() for s in self.diffusion_systems]
        return d


# --------------------------------------------------------------------------------------------------------------
# Pure analysis: MSD, diffusivity, Arrhenius
# --------------------------------------------------------------------------------------------------------------
def unwrap_positions(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Continuous trajectories from positions wrapped into a fixed periodic ``cell``: every frame-to-frame
    displacement is taken as its minimum image. Valid while no atom moves half a cell between two frames."""
    x = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise InputError(f"positions must have shape (frames, atoms, 3), got {x.shape}")
    if len(x) < 2:
        return x.copy()
    inv = np.linalg.inv(cell)
    d = np.diff(x, axis=0) @ inv  # fractional displacements
    d -= np.round(d)
    return np.concatenate([x[:1], x[:1] + np.cumsum(d @ cell, axis=0)])


def mean_squared_displacement(positions: np.ndarray, cell: np.ndarray | None = None,
                              select: np.ndarray | Sequence[int] | None = None,
                              masses: np.ndarray | None = None, max_lag: int | None = None) -> np.ndarray:
    """MSD(lag) in Å^2 for lag = 0 .. ``max_lag`` frames (default: half the trajectory), averaged over every time
    origin and over the ``select``-ed atoms (indices or a boolean mask; default all).

    ``positions`` (frames, atoms, 3) are unwrapped positions; with ``cell`` they may be wrapped into that (fixed)
    cell and are unwrapped first (:func:`unwrap_positions`). With ``masses`` (one per atom) the centre-of-mass
    motion of the whole system (thermostat drift) is removed first, so only motion relative to the lattice counts.
    """
    x = np.asarray(positions, dtype=float)
    if x.ndim != 3 or x.shape[-1] != 3 or len(x) < 1:
        raise InputError(f"positions must have shape (frames >= 1, atoms, 3), got {x.shape}")
    if cell is not None:
        x = unwrap_positions(x, cell)
    if masses is not None:
        m = np.asarray(masses, dtype=float)
        if m.shape != (x.shape[1],):
            raise InputError(f"masses must have one value per atom ({x.shape[1]}), got shape {m.shape}")
        com = (x * m[None, :, None]).sum(axis=1) / m.sum()
        x = x - (com - com[0])[:, None, :]
    if select is not None:
        x = x[:, np.asarray(select)]
    if x.shape[1] == 0:
        raise InputError("no atoms selected for the MSD")
    n = len(x)
    max_lag = (n - 1) // 2 if max_lag is None else int(max_lag)
    if not 0 <= max_lag < n:
        raise InputError(f"max_lag must be in [0, {n - 1}] for {n} frames, got {max_lag}")
    out = np.zeros(max_lag + 1)
    for lag in range(1, max_lag + 1):
        d = x[lag:] - x[:-lag]
        out[lag] = float(np.mean(np.sum(d * d, axis=-1)))
    return out


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray | None]:
    """Least squares y = a + b x: (a, b, covariance of (a, b) from the residuals, None with fewer than 3 points)."""
    X = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    cov = None
    if len(x) > 2:
        resid = y - X @ coef
        s2 = float(resid @ resid) / (len(x) - 2)
        cov = s2 * np.linalg.inv(X.T @ X)
    return float(coef[0]), float(coef[1]), cov


def diffusion_coefficient(lag_times_ps: np.ndarray, msd: np.ndarray,
                          fit_start: float = 0.3) -> tuple[float | None, float | None]:
    """D in cm^2/s (and its standard error, or None) from the slope of a linear fit of MSD (Å^2) against lag time
    (ps) over lags from ``fit_start`` x the largest one on: D = slope / 6. (None, None) with fewer than two lags
    in that window. The error treats the MSD points as independent, which they are not (overlapping time
    origins): read it as a lower bound."""
    t, m = np.asarray(lag_times_ps, dtype=float), np.asarray(msd, dtype=float)
    if t.shape != m.shape or t.ndim != 1:
        raise InputError(f"lag times {t.shape} and MSD {m.shape} must be 1-D arrays of the same length")
    if len(t) == 0:
        return None, None
    keep = (t >= fit_start * t.max()) & (t > 0)
    if keep.sum() < 2:
        return None, None
    _, slope, cov = _line_fit(t[keep], m[keep])
    err = None if cov is None else math.sqrt(max(cov[1, 1], 0.0)) / 6.0 * A2_PS_TO_CM2_S
    return slope / 6.0 * A2_PS_TO_CM2_S, err


def arrhenius_fit(temperatures: Sequence[float], diffusivities: Sequence[float]) -> dict:
    """Fit ln D = ln D0 - Ea / (k_B T): ``{"Ea": eV, "Ea_err": eV or None, "D0": cm^2/s, "ln_D0_err", "n", "used",
    "excluded"}``; errors are standard errors from the fit covariance (need >= 3 temperatures). Values of D that
    are None or <= 0 cannot be on a log scale: they are listed in ``excluded``. ``Ea`` is None with fewer than two
    usable temperatures."""
    used, excluded = [], []
    for t, d in zip(temperatures, diffusivities):
        ok = d is not None and np.isfinite(d) and d > 0 and t > 0
        (used if ok else excluded).append((float(t), None if d is None else float(d)))
    excluded = [t for t, _ in excluded]
    out: dict[str, Any] = {"Ea": None, "Ea_err": None, "D0": None, "ln_D0_err": None, "n": len(used),
                           "used": [t for t, _ in used], "excluded": excluded}
    if len({t for t, _ in used}) < 2:
        return out
    x = np.array([1.0 / (KB_EV * t) for t, _ in used])
    y = np.log([d for _, d in used])
    a, b, cov = _line_fit(x, y)
    out.update(Ea=-b, D0=math.exp(a))
    if cov is not None:
        out.update(Ea_err=math.sqrt(max(cov[1, 1], 0.0)), ln_D0_err=math.sqrt(max(cov[0, 0], 0.0)))
    return out


# --------------------------------------------------------------------------------------------------------------
# MD with the labeller and with the MTP
# --------------------------------------------------------------------------------------------------------------
class LabellerCalculator(Calculator):
    """Any alkit labeller (:class:`alkit.label.Labeller`) as an ASE calculator, so MD runs on the campaign's
    reference itself. A failed label raises (an MD step that fails ends the run as a blow-up)."""

    implemented_properties = ("energy", "free_energy", "forces", "stress")

    def __init__(self, labeller, **kwargs) -> None:
        super().__init__(**kwargs)
        self.labeller = labeller
        if hasattr(labeller, "setup"):
            labeller.setup()

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        res = self.labeller.label(self.atoms)
        if not res.ok:
            raise RuntimeError(f"the labeller failed: {res.reason}")
        out = {"energy": res.energy, "free_energy": res.energy, "forces": res.forces}
        if res.stress is not None:
            out["stress"] = res.stress
        self.results = out


def _derived_seed(seed: int, *parts: Any) -> int:
    """A seed that depends on (seed, parts) only: a trajectory does not change when others are added."""
    h = hashlib.sha256(":".join(str(p) for p in (seed, *parts)).encode()).hexdigest()
    return int(h[:8], 16)


def _test_trajectory(labeller, atoms: Atoms, temperature: float, steps: int, interval: int, keep: int,
                     timestep_fs: float, seed: int, name: str) -> dict:
    """Labeller MD (NVT) of one test-set system at one temperature: its last ``keep`` snapshots, labelled by the
    MD itself (module level: executors pickle it)."""
    from alkit._compat import set_torch_threads
    from alkit.md import run_md

    set_torch_threads(1)
    t0 = time.perf_counter()
    frames: list[Atoms] = []

    def on_snapshot(step: int, frame: Atoms) -> None:
        frame.info.update(validation_system=name, temperature=float(temperature), step=int(step))
        frames.append(frame)

    md = run_md(atoms, LabellerCalculator(labeller), temperature=temperature, ensemble="nvt", steps=steps,
                timestep_fs=timestep_fs, snapshot_interval=interval, seed=seed, on_snapshot=on_snapshot)
    for f in frames:
        f.arrays.pop("momenta", None)  # not labels; keeps the files small
    return {"frames": frames[-keep:], "status": md.status, "reason": md.reason, "steps_done": int(md.steps_done),
            "seconds": time.perf_counter() - t0}


def _ase_positions(atoms: Atoms, calc, temperature: float, steps: int, every: int, timestep_fs: float, seed: int,
                   min_distance: float) -> tuple[np.ndarray, str]:
    """NVT MD through :func:`alkit.md.run_md`, positions (ASE does not wrap them) every ``every`` steps from step 0."""
    from alkit.md import run_md

    frames = [np.array(atoms.positions, copy=True)]

    def on_step(step: int, live: Atoms) -> None:
        if step % every == 0:
            frames.append(np.array(live.positions, copy=True))

    md = run_md(atoms, calc, temperature=temperature, ensemble="nvt", steps=steps, timestep_fs=timestep_fs,
                snapshot_interval=max(1, steps), seed=seed, on_step=on_step, min_distance=min_distance)
    status = "completed" if md.status == "completed" else f"{md.status}: {md.reason}"
    return np.array(frames), status


def _diffusion_trajectory(source: str, model, atoms: Atoms, temperature: float, steps: int, every: int,
                          timestep_fs: float, seed: int, engine: str) -> dict:
    """Positions of one diffusion run: ``source`` "mtp" (``model`` = the .mtp path, LAMMPS or ASE) or "labeller"
    (``model`` = the labeller, ASE). Module level: executors pickle it."""
    from alkit._compat import set_torch_threads

    set_torch_threads(1)
    t0 = time.perf_counter()
    if source == "mtp" and engine == "lammps":
        from alkit.mtp.lammps_engine import sample_unwrapped_positions

        pos, status = sample_unwrapped_positions(atoms, model, temperature, steps, every, timestep_fs, seed)
    elif source == "mtp":
        from alkit.mtp.engine import MTPCalculator

        calc = MTPCalculator(model, on_close_atoms="ignore")
        pos, status = _ase_positions(atoms, calc, temperature, steps, every, timestep_fs, seed, calc.collapse_distance)
    else:
        pos, status = _ase_positions(atoms, LabellerCalculator(model), temperature, steps, every, timestep_fs, seed,
                                     0.5)
    return {"positions": pos, "status": status, "seconds": time.perf_counter() - t0}


def resolve_engine(engine: str) -> str:
    """"lammps" when alkit's LAMMPS plugin and LAMMPS load here (``"auto"``), else "ase"; ConfigError when
    "lammps" is asked for and cannot run."""
    if engine not in ENGINES:
        raise ConfigError(f"MD engine {engine!r} is not one of {ENGINES}")
    if engine == "ase":
        return "ase"
    try:
        from alkit.mtp.lammps_engine import import_lammps, plugin_available

        if not plugin_available():
            raise ConfigError("alkit's LAMMPS plugin (pair_style mtp) is not built")
        import_lammps()
    except ConfigError as exc:
        if engine == "lammps":
            raise ConfigError(f"engine 'lammps' cannot run: {exc}") from None
        log.info("LAMMPS plugin unavailable (%s): diffusion MD runs in ASE", exc)
        return "ase"
    return "lammps"


# --------------------------------------------------------------------------------------------------------------
# Reading the run
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    path: Path
    config: dict
    potentials: dict[int, Path]


def _read_run(run_dir: str | os.PathLike) -> _Run:
    """The run's configuration and every iteration's potential, checked (cheap): InputError when it is not a run
    directory, has no potential yet, or a potential is unreadable."""
    from alkit.mtp.potential import read_potential

    path = Path(run_dir)
    if not path.is_dir():
        raise InputError(f"{str(path)!r} is not a run directory (it does not exist or is a file)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise InputError(f"{str(path)!r} is not an alkit run directory: it has no config.json (start a run with "
                         "`alkit run`)")
    try:
        config = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{cfg_file} is unreadable: {exc}") from None
    pots: dict[int, Path] = {}
    for d in sorted((path / "iterations").glob("iter_*")):
        m = re.fullmatch(r"iter_(\d+)", d.name)
        if m and (d / "pot.mtp").is_file():
            pots[int(m.group(1))] = d / "pot.mtp"
    if not pots:
        raise InputError(f"{path} has no fitted potential yet (no iterations/iter_NNN/pot.mtp): nothing to validate")
    for it, p in pots.items():
        try:
            read_potential(p, config.get("species"))
        except (ConfigError, InputError) as exc:
            raise InputError(f"the potential of iteration {it} is unusable: {exc}") from None
    return _Run(path, config, dict(sorted(pots.items())))


def spec_from_recipe(config: dict, preset: str | None = None) -> ValidationSpec:
    """The recipe's ``validation(preset)`` for a run's configuration (its ``recipe`` and ``preset``, or ``preset``
    given); InputError when the recipe defines none."""
    from alkit.recipe import load_recipe

    recipe = config.get("recipe")
    preset = preset or config.get("preset")
    if not recipe:
        raise InputError("the run's config.json names no recipe: pass a ValidationSpec (validate_run(spec=...))")
    mod = load_recipe(recipe)
    fn = getattr(mod, "validation", None)
    if not callable(fn):
        raise InputError(f"recipe {recipe!r} defines no validation(preset): add one, or pass a ValidationSpec")
    spec = fn(preset)
    if spec is None:
        raise InputError(f"recipe {recipe!r} has no validation for preset {preset!r}")
    if not isinstance(spec, ValidationSpec):
        raise ConfigError(f"recipe {recipe!r}: validation({preset!r}) returned a {type(spec).__name__}, "
                          "not a ValidationSpec")
    return spec


def iteration0_stability(run_dir: str | os.PathLike, run=None, config: dict | None = None) -> dict | None:
    """Stability of iteration 0's potential per temperature: ``{"by_temperature": {T: {"stable", "total",
    "fraction"}}, "unstable": [...], "source"}`` from the event log's ``explore`` record, else from
    ``iteration_done``, else from the store's per-scenario records; None when iteration 0 was never explored."""
    from alkit.report import load_run

    run = run or load_run(run_dir)
    rec = run.explores.get(0)
    scenarios = (rec or {}).get("scenarios") or []
    source = "events.jsonl (explore)"
    if not scenarios and 0 not in run.done and config:
        from alkit.store import DB_NAME, RunStore

        if (Path(run_dir) / DB_NAME).is_file():
            try:
                with RunStore(Path(run_dir) / DB_NAME, readonly=True) as st:
                    scenarios = [r for r in (st.get_state(f"explore:0:{sid}") for sid in config.get("scenarios", []))
                                 if r is not None]
                source = "store.sqlite (explore:0)"
            except ConfigError as exc:
                log.debug("store unreadable for iteration 0: %s", exc)
    by_t: dict[float, dict] = {}
    unstable = []
    for sc in scenarios:
        try:
            t = float(sc.get("temperature"))
        except (TypeError, ValueError):
            continue
        c = by_t.setdefault(t, {"stable": 0, "total": 0})
        c["total"] += 1
        c["stable"] += bool(sc.get("stable"))
        if not sc.get("stable"):
            unstable.append({k: sc.get(k) for k in ("id", "temperature", "steps_done", "steps_total", "stop_reason")})
    if not by_t and 0 in run.done:  # only the fractions survive
        source = "events.jsonl (iteration_done)"
        for k, v in (run.done[0].get("stable_by_temperature") or {}).items():
            by_t[float(k)] = {"stable": None, "total": None, "fraction": float(v)}
    if not by_t:
        return None
    for c in by_t.values():
        c.setdefault("fraction", c["stable"] / c["total"] if c.get("total") else None)
    return {"iteration": 0, "by_temperature": {f"{t:g}": by_t[t] for t in sorted(by_t)}, "unstable": unstable,
            "source": source}


# --------------------------------------------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------------------------------------------
def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=json_default).encode()).hexdigest()[:12]


def _labeller_id(config: dict) -> dict:
    return {"name": config.get("labeller"), "kwargs": config.get("labeller_kwargs") or {}}


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(_finite(data), indent=1, default=json_default, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (strict JSON has no NaN/Infinity)."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _run_tasks(executor, fn, tasks: list[tuple], desc: str, unit: str, on_result) -> list[tuple[int, str]]:
    """Run ``fn(*task)`` for every task with a progress bar; ``on_result(index, result)`` as each one finishes.

    A task that crashes (not a physical blow-up, which the MD reports itself) is logged and returned as
    (index, reason), and nothing is cached for it, so a rerun tries again; bad input (an alkit error) stops."""
    from tqdm.auto import tqdm

    from alkit.errors import AlkitError
    from alkit.executors import run_each

    failed: list[tuple[int, str]] = []
    if not tasks:
        return failed
    with tqdm(total=len(tasks), desc=desc, unit=unit) as bar:
        for i, fut in run_each(executor, fn, tasks):
            try:
                res = fut.result()
            except AlkitError:
                raise
            except Exception as exc:  # noqa: BLE001 - one crashed MD must not lose the others
                log.error("%s: task %d crashed: %s: %s", desc, i, type(exc).__name__, exc)
                failed.append((i, f"crashed: {type(exc).__name__}: {exc}"))
            else:
                on_result(i, res)
            bar.update(1)
    return failed


def build_test_set(run: _Run, spec: ValidationSpec, labeller, cache: Path, executor) -> tuple[list[Atoms], list[dict]]:
    """Every test-set trajectory of ``spec`` (cached per trajectory in ``cache/test_set/``; only missing ones are
    run), and ``cache/test_set.extxyz`` with them all. Returns (structures, one record per trajectory)."""
    from ase.io import read, write

    from alkit.io import structure_hash

    folder = cache / "test_set"
    jobs = []
    for s in spec.test_systems:
        for t in s.temperatures:
            payload = {"atoms": structure_hash(s.atoms), "T": float(t), "steps": spec.test_steps,
                       "interval": spec.test_snapshot_interval, "keep": spec.test_snapshots,
                       "dt": spec.timestep_fs, "seed": spec.seed, "labeller": _labeller_id(run.config)}
            stem = f"{s.name}-{t:g}K-{_key(payload)}"
            jobs.append((s, float(t), folder / f"{stem}.extxyz", folder / f"{stem}.json"))
    records: dict[int, dict] = {}
    frames: dict[int, list[Atoms]] = {}
    todo = []
    for j, (s, t, xyz, meta) in enumerate(jobs):
        if meta.is_file():
            try:
                rec = json.loads(meta.read_text())
                frames[j] = read(str(xyz), index=":") if rec.get("n_structures") else []
                records[j] = rec | {"cached": True}
                continue
            except Exception as exc:  # noqa: BLE001 - a damaged cache entry is redone, not fatal
                log.warning("test-set cache %s unreadable (%s): redoing it", xyz.name, exc)
        todo.append(j)
    if todo:
        log.info("test set: %d of %d labeller MD trajectories to run (%s)", len(todo), len(jobs),
                 run.config.get("labeller"))

    def done(i: int, res: dict) -> None:
        j = todo[i]
        s, t, xyz, meta = jobs[j]
        if res["frames"]:
            atomic_write(xyz, lambda tmp: write(tmp, res["frames"], format="extxyz"))
            res["frames"] = read(str(xyz), index=":")  # what a rerun reads: the same numbers either way
        rec = {"system": s.name, "formula": s.atoms.get_chemical_formula(), "temperature": t,
               "n_structures": len(res["frames"]), "status": res["status"], "reason": res["reason"],
               "steps_done": res["steps_done"], "steps": spec.test_steps, "seconds": round(res["seconds"], 1),
               "file": str(xyz.relative_to(cache.parent)) if res["frames"] else None}
        _write_json(meta, rec)  # last: its presence means "this trajectory is done"
        frames[j], records[j] = res["frames"], rec | {"cached": False}
        log.info("test set: %s at %g K: %d snapshots (%s after %d steps, %.1f s)", s.name, t, len(res["frames"]),
                 res["status"], res["steps_done"], res["seconds"])

    tasks = [(labeller, jobs[j][0].atoms, jobs[j][1], spec.test_steps, spec.test_snapshot_interval,
              spec.test_snapshots, spec.timestep_fs, _derived_seed(spec.seed, "test", jobs[j][0].name, jobs[j][1]),
              jobs[j][0].name) for j in todo]
    for i, why in _run_tasks(executor, _test_trajectory, tasks, "test set (labeller MD)", "trajectory", done):
        s, t = jobs[todo[i]][:2]
        records[todo[i]] = {"system": s.name, "formula": s.atoms.get_chemical_formula(), "temperature": t,
                            "n_structures": 0, "status": "crashed", "reason": why, "steps_done": 0,
                            "steps": spec.test_steps, "seconds": 0.0, "file": None, "cached": False}
    structures = [a for j in range(len(jobs)) for a in frames.get(j, [])]
    if structures:
        atomic_write(cache / TEST_SET_FILE, lambda tmp: write(tmp, structures, format="extxyz"))
    return structures, [records[j] for j in range(len(jobs))]


def adopt_labeller_cache(source_run: str | os.PathLike, cache: Path) -> int:
    """Copy the labeller MD that ``source_run`` already ran (test-set trajectories, labeller diffusion runs) into
    ``cache``; return how many entries. Why: the runs of a comparison share one labeller and one validation spec,
    so they should be measured on the same test set, and the labeller MD (tens of minutes per trajectory) is paid
    once. Safe because every entry's file name carries the key of everything it depends on (structure, temperature,
    steps, seed, labeller); an entry of another spec or labeller is simply never looked up. The done-marker (the
    JSON) is copied last."""
    src = Path(source_run) / VALIDATION_DIR
    if not src.is_dir():
        raise InputError(f"--cache-from {source_run}: it has no {VALIDATION_DIR}/ folder (validate that run first)")
    n = 0
    for sub, pattern in (("test_set", "*"), ("diffusion", "labeller-*")):
        files = sorted((src / sub).glob(pattern), key=lambda p: p.suffix == ".json")  # data first, markers last
        for f in files:
            dst = cache / sub / f.name
            if f.is_file() and not dst.exists():
                atomic_copy(f, dst)
                n += f.suffix == ".json"
    return n


def _per_atom_energies(structures: list[Atoms]) -> np.ndarray:
    return np.array([a.get_potential_energy() / len(a) for a in structures])


def test_set_errors(run: _Run, structures: list[Atoms]) -> tuple[list[dict], dict]:
    """Errors of every iteration's potential on ``structures`` (:func:`alkit.mtp.fit.evaluate`), and the parity
    data (reference vs predicted energy per atom and force components) of the first and the last potential."""
    from tqdm.auto import tqdm

    from alkit.mtp.fit import calc_efs, evaluate
    from alkit.mtp.potential import read_potential

    species = run.config.get("species")
    rows = []
    for it, pot in tqdm(run.potentials.items(), desc="test-set errors", unit="potential"):
        m = evaluate(pot, structures, species, on_close_atoms="ignore")
        rows.append({"iteration": it, "potential": str(pot.relative_to(run.path)),
                     "min_dist": float(read_potential(pot, species)[0].min_dist), **m})
    ref_e = _per_atom_energies(structures)
    ref_f = np.concatenate([a.get_forces().ravel() for a in structures])
    parity = {"reference": {"energy_per_atom": ref_e, "forces": ref_f}, "predicted": {}}
    for it in sorted({min(run.potentials), max(run.potentials)}):
        pred = calc_efs(run.potentials[it], structures, species, on_close_atoms="ignore")
        parity["predicted"][it] = {"energy_per_atom": _per_atom_energies(pred),
                                   "forces": np.concatenate([a.get_forces().ravel() for a in pred])}
    return rows, parity


MSD_POINTS = 1000


def _thin_curve(rec: dict, points: int = MSD_POINTS) -> dict:
    """The record with its MSD curve cut to at most ``points`` evenly spaced lags (first and last kept) for the
    report and validation.json: D is fitted on every lag before this, and a 100-ps run's 5,000 lags would make
    each validation.json megabytes. The per-run cache keeps the full curve."""
    lags, msd = rec.get("lag_ps") or [], rec.get("msd_A2") or []
    if len(lags) <= points:
        return rec
    keep = np.unique(np.linspace(0, len(lags) - 1, points).round().astype(int))
    return rec | {"lag_ps": [lags[i] for i in keep], "msd_A2": [msd[i] for i in keep]}


def run_diffusion(run: _Run, spec: ValidationSpec, labeller, cache: Path, executor, engine: str,
                  labeller_md: bool) -> dict:
    """MSD, D and the Arrhenius fit of every diffusion system with the final MTP, and with the labeller where the
    spec says it is affordable (and ``labeller_md``); each run is cached in ``cache/diffusion/``."""
    from ase.data import atomic_numbers

    from alkit.io import structure_hash
    from alkit.mtp.grade import file_sha256
    from alkit.mtp.lammps_engine import nvt_protocol

    final_it = max(run.potentials)
    pot = run.potentials[final_it]
    pot_sha = file_sha256(pot)
    folder = cache / "diffusion"
    z = atomic_numbers[spec.diffusing_species]
    jobs, not_run = [], []
    for s in spec.diffusion_systems:
        for t in s.temperatures:
            for source in ("mtp", "labeller"):
                if source == "labeller":
                    if not labeller_md:
                        not_run.append({"system": s.name, "temperature": float(t),
                                        "reason": "labeller MD switched off (--no-labeller-md)"})
                        continue
                    if t not in s.labeller_temperatures:
                        not_run.append({"system": s.name, "temperature": float(t),
                                        "reason": "not affordable here (not among the recipe's labeller "
                                                  "temperatures for this system)"})
                        continue
                steps = (s.diffusion_steps or spec.diffusion_steps) if source == "mtp" else (
                    spec.labeller_diffusion_steps or spec.diffusion_steps)
                eng = engine if source == "mtp" else "ase"
                payload = {"source": source, "model": pot_sha if source == "mtp" else _labeller_id(run.config),
                           "atoms": structure_hash(s.atoms), "T": float(t), "steps": steps,
                           "every": spec.diffusion_sample_interval, "dt": spec.timestep_fs, "seed": spec.seed,
                           "engine": eng, "max_lag": spec.diffusion_max_lag, "fit_start": spec.diffusion_fit_start}
                if eng == "lammps":
                    payload["nvt"] = nvt_protocol()  # a changed thermostat must not reuse old runs
                out = folder / f"{source}-{s.name}-{t:g}K-{_key(payload)}.json"
                jobs.append((s, float(t), source, steps, eng, out))
    results: dict[int, dict] = {}
    todo = []
    for j, job in enumerate(jobs):
        if job[5].is_file():
            try:
                results[j] = json.loads(job[5].read_text()) | {"cached": True}
                continue
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("diffusion cache %s unreadable (%s): redoing it", job[5].name, exc)
        todo.append(j)

    def done(i: int, res: dict) -> None:
        j = todo[i]
        s, t, source, steps, eng, out = jobs[j]
        pos = res["positions"]
        dt_ps = spec.diffusion_sample_interval * spec.timestep_fs / 1000.0
        rec: dict[str, Any] = {"system": s.name, "formula": s.atoms.get_chemical_formula(), "temperature": t,
                               "source": source, "engine": eng, "steps": steps, "status": res["status"],
                               "frames": int(len(pos)), "seconds": round(res["seconds"], 1),
                               "n_diffusing": int(np.sum(s.atoms.numbers == z)), "D_cm2_s": None, "D_err": None,
                               "lag_ps": [], "msd_A2": []}
        if res["status"] == "completed" and len(pos) >= 3:
            max_lag = max(1, int(spec.diffusion_max_lag * (len(pos) - 1)))
            msd = mean_squared_displacement(pos, select=s.atoms.numbers == z, masses=s.atoms.get_masses(),
                                            max_lag=max_lag)
            lags = np.arange(len(msd)) * dt_ps
            d, err = diffusion_coefficient(lags, msd, spec.diffusion_fit_start)
            rec.update(D_cm2_s=d, D_err=err, lag_ps=lags.tolist(), msd_A2=msd.tolist())
            if d is None:
                rec["status"] = "completed (too short for a fit)"
        if source == "mtp":
            rec["potential"] = str(pot.relative_to(run.path))
        _write_json(out, rec)
        results[j] = rec | {"cached": False}
        log.info("diffusion (%s, %s): %s at %g K: D = %s cm²/s (%s, %.1f s)", source, eng, s.name, t,
                 "-" if rec["D_cm2_s"] is None else f"{rec['D_cm2_s']:.3g}", rec["status"], res["seconds"])

    tasks = []
    for j in todo:
        s, t, source, steps, eng, _ = jobs[j]
        model = str(pot) if source == "mtp" else labeller
        tasks.append((source, model, s.atoms, t, steps, spec.diffusion_sample_interval, spec.timestep_fs,
                      _derived_seed(spec.seed, "diffusion", s.name, t), eng))
    for i, why in _run_tasks(executor, _diffusion_trajectory, tasks, "diffusion MD", "run", done):
        s, t, source, steps, eng, _ = jobs[todo[i]]
        results[todo[i]] = {"system": s.name, "formula": s.atoms.get_chemical_formula(), "temperature": t,
                            "source": source, "engine": eng, "steps": steps, "status": why, "frames": 0,
                            "seconds": 0.0, "D_cm2_s": None, "D_err": None, "lag_ps": [], "msd_A2": [],
                            "cached": False}
    runs = [_thin_curve(results[j]) for j in range(len(jobs))]
    arrhenius = {}
    for s in spec.diffusion_systems:
        entry: dict[str, Any] = {"formula": s.atoms.get_chemical_formula(),
                                 "references": spec.references.get(s.name, {})}
        for source in ("mtp", "labeller"):
            mine = [r for r in runs if r["system"] == s.name and r["source"] == source]
            entry[source] = arrhenius_fit([r["temperature"] for r in mine], [r["D_cm2_s"] for r in mine]) \
                if mine else None
        arrhenius[s.name] = entry
    return {"engine": engine, "potential": str(pot.relative_to(run.path)), "iteration": final_it,
            "diffusing_species": spec.diffusing_species, "runs": runs, "arrhenius": arrhenius, "not_run": not_run}


# --------------------------------------------------------------------------------------------------------------
# Figures and pages
# --------------------------------------------------------------------------------------------------------------
def _charts(result: dict, parity: dict | None, fits: dict[int, dict], html_points: int | None = None) -> list:
    from alkit.report import Chart, Panel, Series, _subsample, palette, temperature_colors, temperature_label

    charts = []
    errors = result.get("test_set", {}).get("errors") or []
    if errors:
        its = [r["iteration"] for r in errors]
        panels = []
        for key, title, unit in (("energy", "Energy", "meV/atom"), ("force", "Forces", "eV/Å")):
            series = [Series("test RMSE", "line", its, [r[f"{key}_rmse"] for r in errors], color="#4c72b0",
                             legendgroup="rmse", showlegend=not panels),
                      Series("test MAE", "line", its, [r[f"{key}_mae"] for r in errors], color="#4c72b0", dash=True,
                             legendgroup="mae", showlegend=not panels)]
            tr = [(it, (fits.get(it, {}).get("train") or {}).get(f"{key}_rmse")) for it in its]
            tr = [(i, v) for i, v in tr if isinstance(v, (int, float)) and math.isfinite(v)]
            if tr:
                series.append(Series("training RMSE (fit)", "line", [i for i, _ in tr], [v for _, v in tr],
                                     color="#999999", dash=True, legendgroup="train", showlegend=not panels))
            panels.append(Panel(f"{title} error on the test set", "AL iteration", f"error ({unit})", series,
                                integer_x=True))
        charts.append(Chart("test_errors", "Errors on the independent test set per iteration", panels,
                            "Each iteration's potential on the labeller-MD test set (never trained on); grey: the "
                            "fit's own training RMSE."))
    if parity and parity.get("predicted"):
        ref = parity["reference"]
        its = sorted(parity["predicted"])
        colors = dict(zip(its, ["#dd8452", "#4c72b0"] if len(its) > 1 else ["#4c72b0"]))
        panels = []
        for key, title, unit, scale in (("energy_per_atom", "Energy per atom", "eV/atom", 1.0),
                                        ("forces", "Force components", "eV/Å", 1.0)):
            series = []
            lo = hi = None
            for it in its:
                pts = np.column_stack([np.asarray(ref[key]) * scale, np.asarray(parity["predicted"][it][key]) * scale])
                lo = float(pts.min()) if lo is None else min(lo, float(pts.min()))
                hi = float(pts.max()) if hi is None else max(hi, float(pts.max()))
                if html_points:
                    pts = _subsample(pts, html_points)
                label = f"iteration {it}" + (" (final)" if it == its[-1] and len(its) > 1 else "")
                series.append(Series(label, "points", pts[:, 0].tolist(), pts[:, 1].tolist(), color=colors[it],
                                     size=5.0, opacity=0.6, legendgroup=label, showlegend=not panels))
            series.append(Series("y = x", "line", [lo, hi], [lo, hi], color="#444444", dash=True, size=1.0,
                                 legendgroup="diag", showlegend=not panels))
            panels.append(Panel(title, f"labeller ({unit})", f"MTP ({unit})", series, equal_aspect=True))
        charts.append(Chart("parity", "Parity on the test set: seed vs final potential", panels,
                            "Reference (the campaign's labeller) against the MTP of the first and the last iteration.",
                            height=480))
    diff = result.get("diffusion") or {}
    runs = [r for r in diff.get("runs") or [] if r.get("msd_A2")]
    if runs:
        systems = list(dict.fromkeys(r["system"] for r in runs))
        tcol = temperature_colors({r["temperature"] for r in runs})
        panels = []
        shown: set = set()
        for name in systems:
            series = []
            for r in [r for r in runs if r["system"] == name]:
                lag, msd = np.asarray(r["lag_ps"]), np.asarray(r["msd_A2"])
                step = max(1, len(lag) // MAX_MSD_POINTS)
                label = f"{temperature_label(r['temperature'])} {'MTP' if r['source'] == 'mtp' else 'labeller'}"
                series.append(Series(label, "line", lag[::step].tolist(), msd[::step].tolist(),
                                     color=tcol[r["temperature"]], dash=r["source"] != "mtp", size=2.0,
                                     legendgroup=label, showlegend=label not in shown))
                shown.add(label)
            panels.append(Panel(name, "lag time (ps)", f"MSD of {diff.get('diffusing_species', 'H')} (Å²)", series))
        charts.append(Chart("msd", "Mean squared displacement", panels,
                            "Averaged over time origins and atoms, centre-of-mass drift removed. Solid: final MTP; "
                            "dashed: MD with the labeller.", height=440))
        colors = dict(zip(systems, palette(len(systems))))
        series = []
        for name in systems:
            for source in ("mtp", "labeller"):
                pts = sorted((r["temperature"], r["D_cm2_s"]) for r in runs if r["system"] == name
                             and r["source"] == source and r.get("D_cm2_s") is not None and r["D_cm2_s"] > 0)
                if pts:
                    series.append(Series(f"{name} {'MTP' if source == 'mtp' else 'labeller'}", "line",
                                         [1000.0 / t for t, _ in pts], [d for _, d in pts], color=colors[name],
                                         dash=source != "mtp"))
        if series:
            charts.append(Chart("arrhenius", "Hydrogen diffusivity (Arrhenius plot)",
                                [Panel("", "1000 / T (1/K)", "D (cm²/s)", series, ylog=True)],
                                "Solid: final MTP; dashed: MD with the labeller. The slope gives Ea (table)."))
    st = result.get("iteration0_stability")
    if st:
        temps = list(st["by_temperature"])
        series = [Series("iteration 0", "bar", [f"{t} K" for t in temps],
                         [st["by_temperature"][t]["fraction"] for t in temps], color="#dd8452")]
        final = st.get("final")
        if final:
            series.append(Series(f"iteration {final['iteration']} (final)", "bar", [f"{t} K" for t in temps],
                                 [final["by_temperature"].get(t) for t in temps], color="#4c72b0"))
        charts.append(Chart("stability0", "Stable MD scenarios with the seed potential (iteration 0)",
                            [Panel("", "temperature", "fraction of scenarios stable", series, categorical_x=True,
                                   yrange=(0, 1.05))],
                            "Iteration 0 is the potential fitted to the seed set alone, before any active learning."))
    return charts


def _fmt(v: Any, p: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{p}g}" if isinstance(v, float) else str(v)


def _ea(fit: dict | None) -> str:
    if not fit:
        return "not run"
    if fit.get("Ea") is None:
        return f"- ({fit['n']} usable T)"
    err = f" ± {fit['Ea_err']:.2f}" if fit.get("Ea_err") is not None else " (2 T: no error)"
    return f"{fit['Ea']:.2f}{err}"


def _tables(result: dict) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(title, header, rows, note) of every table of the page and the markdown."""
    out = []
    ts = result.get("test_set") or {}
    if ts.get("errors"):
        rows = [[str(r["iteration"]), _fmt(r.get("n_train")), f"{r['energy_rmse']:.2f}", f"{r['energy_mae']:.2f}",
                 _fmt(r.get("force_rmse"), 3), _fmt(r.get("force_mae"), 3)] for r in ts["errors"]]
        out.append(("Errors on the test set",
                    ["iteration", "training structures", "E RMSE (meV/atom)", "E MAE (meV/atom)", "F RMSE (eV/Å)",
                     "F MAE (eV/Å)"], rows,
                    f"{ts.get('n_structures', 0)} structures ({ts.get('n_atoms', 0)} atoms) from labeller MD "
                    f"({ts.get('labeller')}); never used for training."))
    if ts.get("trajectories"):
        rows = [[t["system"], t["formula"], f"{t['temperature']:g}", str(t["n_structures"]),
                 f"{t['status']}{': ' + t['reason'] if t.get('reason') else ''}", f"{t['steps_done']}/{t['steps']}",
                 "cached" if t.get("cached") else f"{t['seconds']} s"] for t in ts["trajectories"]]
        out.append(("Test-set trajectories", ["system", "formula", "T (K)", "snapshots", "MD", "steps", "time"],
                    rows, ""))
    diff = result.get("diffusion") or {}
    if diff.get("runs"):
        rows = [[r["system"], f"{r['temperature']:g}", "MTP" if r["source"] == "mtp" else "labeller", r["engine"],
                 _fmt(r.get("D_cm2_s")), _fmt(r.get("D_err"), 2), r["status"], "cached" if r.get("cached")
                 else f"{r['seconds']} s"] for r in diff["runs"]]
        out.append(("Diffusivity", ["system", "T (K)", "MD with", "engine", "D (cm²/s)", "± (fit)", "MD", "time"],
                    rows, f"Final potential: {diff.get('potential')}."))
        rows = []
        for name, a in diff["arrhenius"].items():
            refs = ", ".join(f"{k} {v:g}" for k, v in (a.get("references") or {}).items()) or "-"
            d0 = (a.get("mtp") or {}).get("D0")
            rows.append([name, a["formula"], _ea(a.get("mtp")), _fmt(d0), _ea(a.get("labeller")), refs])
        out.append(("Activation energy of diffusion (eV)",
                    ["system", "formula", "Ea MTP", "D0 MTP (cm²/s)", "Ea labeller", "published"], rows,
                    "Arrhenius fit ln D = ln D0 − Ea/kT; ± is the standard error from the fit covariance."))
    if diff.get("not_run"):
        rows = [[n["system"], f"{n['temperature']:g}", n["reason"]] for n in diff["not_run"]]
        out.append(("Labeller MD not run", ["system", "T (K)", "why"], rows, ""))
    st = result.get("iteration0_stability")
    if st:
        rows = [[t, "-" if c.get("stable") is None else f"{c['stable']}/{c['total']}", _fmt(c.get("fraction"), 3)]
                for t, c in st["by_temperature"].items()]
        out.append(("Iteration 0 (no active learning): stable scenarios", ["T (K)", "stable", "fraction"], rows,
                    f"Read from {st['source']}."))
    return out


def _markdown(result: dict, tables, charts) -> str:
    def esc(v: str) -> str:
        return str(v).replace("|", "\\|")

    lines = [f"# Validation of {result['run']}", ""]
    for note in result.get("notes") or []:
        lines.append(f"- {note}")
    if result.get("notes"):
        lines.append("")
    for title, header, rows, note in tables:
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
        if note:
            lines += ["", note]
        lines.append("")
    lines += [f"![{c.title}]({c.key}.png)" for c in charts]
    return "\n".join(lines) + "\n"


def _page(result: dict, tables, charts) -> str:
    from alkit.report import html_table, render_page

    body = []
    if result.get("notes"):
        body.append('<div class="missing"><ul>' + "".join(f"<li>{html.escape(n)}</li>" for n in result["notes"])
                    + "</ul></div>")
    for title, header, rows, note in tables:
        body += [f"<h2>{html.escape(title)}</h2>", html_table(header, rows)]
        if note:
            body.append(f'<div class="caption">{html.escape(note)}</div>')
    meta = f"run directory {result['run_dir']} · built {result['built']}"
    return render_page(f"alkit validation of {result['run']}", meta, body, [(c, f"{c.key}.png") for c in charts])


# --------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------
def validate_run(run_dir: str | os.PathLike, spec: ValidationSpec | None = None,
                 out_dir: str | os.PathLike | None = None, *, temperatures: Sequence[float] | None = None,
                 preset: str | None = None, test_set: bool = True, diffusion: bool = True,
                 labeller_md: bool = True, engine: str = "auto", executor: "str | Executor" = "serial",
                 workers: int = 1, cache_from: str | os.PathLike | None = None) -> dict:
    """Validate the campaign in ``run_dir`` (see the module docstring) and return what ``validation.json`` holds.

    ``spec``: default the recipe's ``validation(preset)`` (the run's recipe and preset, or ``preset``).
    ``temperatures`` replaces the diffusion temperatures. ``test_set`` / ``diffusion`` switch parts (a) / (b) off;
    ``labeller_md`` switches off the labeller MD of (b) (the test set always needs the labeller). ``engine``:
    "auto" (LAMMPS ``pair_style mtp`` when available), "lammps" or "ase". ``executor`` ("serial", "process",
    "dask") with ``workers`` runs the MD trajectories in parallel; an open ``concurrent.futures.Executor`` (the
    driver's) is used as it is. ``cache_from``: another run directory whose labeller MD (test set, labeller
    diffusion) is re-used where its keys match (:func:`adopt_labeller_cache`). Everything that can be checked is checked
    before any MD (InputError / ConfigError with one line). Outputs go to ``out_dir`` (default
    ``RUN_DIR/validation``); the MD caches always live in ``RUN_DIR/validation``.
    """
    from alkit._util import check_writable
    from alkit.executors import make_executor
    from alkit.label import make_labeller
    from alkit.report import chart_to_png, load_run, stable_fractions

    t0 = time.perf_counter()
    run = _read_run(run_dir)
    if spec is None:
        spec = spec_from_recipe(run.config, preset)
    if temperatures:
        spec = spec.with_temperatures(temperatures)
    spec.validate()
    if test_set and not spec.test_systems:
        raise InputError("the validation spec has no test-set systems (use test_set=False / --no-test-set)")
    if diffusion and not spec.diffusion_systems:
        raise InputError("the validation spec has no diffusion systems (use diffusion=False / --no-diffusion)")
    species = set(run.config.get("species") or [])
    for s in spec.test_systems + spec.diffusion_systems:
        extra = set(s.atoms.get_chemical_symbols()) - species
        if species and extra:
            raise InputError(f"validation system {s.name!r} contains {sorted(extra)}, which the run's potentials "
                             f"(species {sorted(species)}) do not know")
    labeller = None
    if test_set or (diffusion and labeller_md):
        labeller = make_labeller(run.config.get("labeller") or "chgnet", **(run.config.get("labeller_kwargs") or {}))
        labeller.check()
    md_engine = resolve_engine(engine) if diffusion else None
    cache = run.path / VALIDATION_DIR
    out = Path(out_dir) if out_dir is not None else cache
    check_writable(cache / TEST_SET_FILE, "validation cache")
    check_writable(out / "validation.json", "validation output")
    if cache_from is not None:
        n = adopt_labeller_cache(cache_from, cache)
        log.info("validation: %d cached labeller MD entries adopted from %s", n, cache_from)

    events = load_run(run.path)
    notes = []
    if events.finished is None:
        notes.append(f"the campaign has not finished: the final potential is that of iteration {max(run.potentials)}")
    result: dict[str, Any] = {
        "run": run.path.resolve().name, "run_dir": str(run.path.resolve()),
        "built": _dt.datetime.now().isoformat(timespec="seconds"), "mode": run.config.get("mode"),
        "recipe": run.config.get("recipe"), "preset": preset or run.config.get("preset"),
        "labeller": _labeller_id(run.config), "iterations": list(run.potentials), "spec": spec.describe(),
    }
    st = iteration0_stability(run.path, events, run.config)
    if st:
        fr = stable_fractions(events)
        last = max((it for pts in fr.values() for it, _ in pts), default=None)
        if last is not None and last != 0:
            st["final"] = {"iteration": last, "by_temperature": {f"{t:g}": dict(pts).get(last)
                                                                 for t, pts in fr.items()}}
    else:
        notes.append("iteration 0 was never explored: no stability to report")
    result["iteration0_stability"] = st
    parity = None
    pool = (contextlib.nullcontext(executor) if isinstance(executor, Executor)
            else make_executor(executor, n_workers=workers))
    with pool as ex:
        if test_set:
            structures, trajectories = build_test_set(run, spec, labeller, cache, ex)
            result["test_set"] = {"file": str((cache / TEST_SET_FILE).relative_to(run.path)) if structures else None,
                                  "n_structures": len(structures), "n_atoms": int(sum(len(a) for a in structures)),
                                  "labeller": run.config.get("labeller"), "trajectories": trajectories}
            if structures:
                errors, parity = test_set_errors(run, structures)
                for row in errors:
                    fit = events.fits.get(row["iteration"]) or {}
                    row["n_train"] = fit.get("n_train")
                    row["fit_train"] = fit.get("train")
                result["test_set"]["errors"] = errors
                result["test_set"]["parity"] = {"iterations": sorted(parity["predicted"])}
            else:
                notes.append("the labeller MD gave no test structure (every trajectory failed): no errors")
        else:
            notes.append("test set switched off")
        if diffusion:
            result["diffusion"] = run_diffusion(run, spec, labeller, cache, ex, md_engine, labeller_md)
            if result["diffusion"]["not_run"]:
                notes.append(f"labeller MD not run for {len(result['diffusion']['not_run'])} system/temperature "
                             "pair(s): see the table 'Labeller MD not run'")
        else:
            notes.append("diffusion switched off")
    result["notes"] = notes
    result["seconds"] = round(time.perf_counter() - t0, 1)

    out.mkdir(parents=True, exist_ok=True)
    charts = _charts(result, parity, events.fits)
    for c in charts:
        chart_to_png(c, out / f"{c.key}.png")
    html_charts = _charts(result, parity, events.fits, html_points=MAX_HTML_PARITY_POINTS)
    result["figures"] = [f"{c.key}.png" for c in charts]
    tables = _tables(result)
    _write_json(out / "validation.json", result)
    atomic_write(out / "validation.md", _markdown(result, tables, charts))
    atomic_write(out / "validation.html", _page(result, tables, html_charts))
    log.info("validation of %s written to %s (%.1f s)", run.path, out / "validation.html", result["seconds"])
    return _finite(result)
