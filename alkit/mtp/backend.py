"""The MTP as a potential backend of the active-learning loop (:mod:`alkit.backend`).

Behind it: the compiled engine (:mod:`alkit.mtp.train` through :func:`alkit.mtp.fit.train_mtp`), the MaxVol
active set (:mod:`alkit.mtp.grade`) as the uncertainty measure, and MD with on-the-fly grading in ASE or LAMMPS
(:func:`alkit.mtp.md.run_mtp_md`). An iteration's model directory holds ``pot.mtp`` (MLIP-2 format) and
``state.als`` (the active set, MLIP-2's name for it).

Its settings are the MTP fields of :class:`alkit.campaign.ALConfig` (``mtp_level``, ``cutoff``, ``loss_weights``,
``bfgs_maxiter``, ``fit_tol``, ``fit_engine``, ``fit_threads``, ``grade_mode``, ``grade_parameters``,
``explore_engine``); :meth:`MTPBackend.from_config` checks them, naming the field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ase import Atoms

from alkit.backend import ExploreOutcome, ExploreSettings, FitOutcome, SelectionContext
from alkit.errors import ConfigError

POTENTIAL_FILE = "pot.mtp"
ACTIVE_SET_FILE = "state.als"


@dataclass
class MTPBackend:
    """A moment tensor potential with the MaxVol grade (see the module docstring)."""

    # no defaults here: ALConfig's are the ones (build with from_config)
    species: tuple[str, ...]
    level: int
    cutoff: float
    loss_weights: tuple[float, float, float]
    bfgs_maxiter: int
    fit_tol: float
    fit_engine: str
    fit_threads: int
    grade_mode: str
    grade_parameters: str
    md_engine: str
    name: str = "mtp"

    @classmethod
    def from_config(cls, config) -> "MTPBackend":
        """Check the configuration's MTP fields (``ConfigError`` naming the field) and build the backend."""
        from alkit.campaign import _int, _is_real, _number, _one_of
        from alkit.mtp.fit import ENGINES as FIT_ENGINES
        from alkit.mtp.grade import _MODE_ALIASES, PARAMETER_SETS
        from alkit.mtp.levels import MAX_LEVEL, MIN_LEVEL
        from alkit.mtp.md import ENGINES as MD_ENGINES

        cfg = config
        _int(cfg, "mtp_level", MIN_LEVEL, MAX_LEVEL)
        if cfg.mtp_level % 2:
            raise ConfigError(f"ALConfig.mtp_level = {cfg.mtp_level}: MTP levels are even ({MIN_LEVEL}..{MAX_LEVEL})")
        _number(cfg, "cutoff", 0.0, 20.0, strict=True)
        w = cfg.loss_weights
        if (not isinstance(w, (tuple, list)) or len(w) != 3 or not all(_is_real(x) and x >= 0 for x in w)
                or sum(w) == 0):
            raise ConfigError(f"ALConfig.loss_weights = {w!r}: must be three non-negative numbers (energy, forces, "
                              "stress), not all 0")
        _int(cfg, "bfgs_maxiter", 0)
        _number(cfg, "fit_tol", 0.0)
        _one_of(cfg, "fit_engine", FIT_ENGINES)
        _int(cfg, "fit_threads", 1)
        _one_of(cfg, "grade_mode", tuple(_MODE_ALIASES))
        _one_of(cfg, "grade_parameters", PARAMETER_SETS)
        _one_of(cfg, "explore_engine", MD_ENGINES)
        if cfg.explore_engine == "lammps":
            from alkit.scenarios import non_periodic

            flat = non_periodic(cfg.scenarios)
            if flat:
                raise ConfigError(f"ALConfig.explore_engine = 'lammps' needs fully periodic scenarios; not: {flat[:5]}")
        return cls(species=tuple(cfg.species), level=int(cfg.mtp_level), cutoff=float(cfg.cutoff),
                   loss_weights=tuple(float(x) for x in w), bfgs_maxiter=int(cfg.bfgs_maxiter),
                   fit_tol=float(cfg.fit_tol), fit_engine=cfg.fit_engine, fit_threads=int(cfg.fit_threads),
                   grade_mode=cfg.grade_mode, grade_parameters=cfg.grade_parameters, md_engine=cfg.explore_engine)

    def check(self) -> None:
        """The level exists for these species and the MD engine can be used (no fit, no MD)."""
        from alkit.mtp.potential import MTPPotential

        try:
            MTPPotential.untrained(self.level, list(self.species), cutoff=self.cutoff, min_dist=0.0)
        except ConfigError as exc:
            raise ConfigError(f"ALConfig.mtp_level = {self.level}, cutoff = {self.cutoff}: {exc}") from None
        if self.md_engine == "lammps":
            from alkit.mtp.lammps_engine import import_lammps

            try:
                import_lammps()
            except Exception as exc:  # noqa: BLE001 - any import failure means the engine is unusable
                raise ConfigError(f"ALConfig.explore_engine = 'lammps', but LAMMPS cannot be used: {exc}") from None

    # ---- files ------------------------------------------------------------------------------------------------
    def is_fitted(self, model_dir: Path) -> bool:
        return (Path(model_dir) / POTENTIAL_FILE).exists() and (Path(model_dir) / ACTIVE_SET_FILE).exists()

    def active_set(self, model_dir: Path):
        from alkit.mtp.grade import ActiveSet

        d = Path(model_dir)
        return ActiveSet.load(d / ACTIVE_SET_FILE, mtp_path=d / POTENTIAL_FILE)

    # ---- the protocol -----------------------------------------------------------------------------------------
    def fit(self, train: Sequence[Atoms], valid: Sequence[Atoms], model_dir: Path, previous: Path | None,
            seed: int) -> FitOutcome:
        """Fit the MTP (warm start from ``previous``'s potential) and its active set on the training set."""
        from alkit.mtp.fit import train_mtp
        from alkit.mtp.grade import ActiveSet

        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        prev = Path(previous) / POTENTIAL_FILE if previous is not None else None
        res = train_mtp(
            list(train), d / POTENTIAL_FILE, species=list(self.species), level=self.level, cutoff=self.cutoff,
            initial=prev if prev is not None and prev.exists() else None, weights=self.loss_weights,
            bfgs_maxiter=self.bfgs_maxiter, valid=list(valid) or None, seed=seed, workdir=d / "scratch",
            engine=self.fit_engine, tol=self.fit_tol, threads=self.fit_threads,
        )
        ActiveSet.fit(res.mtp_path, list(train), list(self.species), mode=self.grade_mode,
                      parameters=self.grade_parameters).save(d / ACTIVE_SET_FILE)
        rep = res.report
        return FitOutcome(train=res.train_metrics, valid=res.valid_metrics, seconds=res.seconds,
                          iterations=None if rep is None else rep.iterations,
                          stopped=None if rep is None else rep.reason)

    def calculator(self, model_dir: Path):
        from alkit.mtp.engine import MTPCalculator

        return MTPCalculator(Path(model_dir) / POTENTIAL_FILE)

    def explore(self, model_dir: Path, scenario, settings: ExploreSettings) -> ExploreOutcome:
        """MTP MD of the scenario with the MaxVol grade every step (ASE or LAMMPS, as configured)."""
        from alkit.mtp.md import run_mtp_md

        d = Path(model_dir)
        res = run_mtp_md(
            scenario.atoms.copy(), d / POTENTIAL_FILE, self.active_set(d), list(self.species),
            temperature=scenario.temperature, steps=settings.steps, ensemble=scenario.ensemble,
            timestep_fs=scenario.timestep_fs, gamma_select=settings.gamma_select, gamma_break=settings.gamma_break,
            engine=self.md_engine, seed=settings.seed, max_collect=settings.max_collect, scenario_id=scenario.id,
            pressure_gpa=scenario.pressure_gpa, max_temperature_factor=settings.max_temperature_factor,
        )
        return ExploreOutcome(id=scenario.id, temperature=float(scenario.temperature), stable=bool(res.stable),
                              steps_done=int(res.steps_done), steps_total=int(res.steps_total),
                              max_gamma=float(res.max_gamma), stop_reason=res.stop_reason, seconds=float(res.seconds),
                              collected=res.collected)


class MaxVolSelector:
    """MLIP-2's selection: the candidates that enlarge the MaxVol active set most, up to the budget; frames from
    just before a physical blow-up are added within the budget (MaxVol alone would never pick them: they may grade
    <= 1, an interpolation error, and the campaign would stall)."""

    name = "maxvol"

    def check(self, backend, has_sampler: bool) -> None:
        if not isinstance(backend, MTPBackend):
            raise ConfigError(f"ALConfig.reselect = 'maxvol' needs the MTP backend (its active set), not "
                              f"{getattr(backend, 'name', type(backend).__name__)!r}")

    def select(self, candidates: Sequence[Atoms], budget: int, context: SelectionContext) -> list[int]:
        from alkit.mtp.grade import select_add

        active = context.backend.active_set(context.model_dir)
        idx = [int(i) for i in select_add(active, list(candidates), max_add=budget)]
        extra = [i for i, a in enumerate(candidates) if a.info.get("before_blowup") and i not in idx]
        return idx + extra[: max(0, budget - len(idx))]
