"""A campaign's configuration (:class:`ALConfig`) and its contract: every field is checked before any work, the
saved ``config.json`` is the campaign's identity, and a resume with a different configuration is refused.

Why a contract. A run directory holds labels, potentials and exploration results that were produced under one
configuration; mixing in work done under another (a different MTP level, cutoff, labeller, threshold) gives a
campaign that "converges" on data nobody asked for. So :func:`resume_changes` compares the stored configuration
with the new one field by field; only :data:`SAFE_TO_CHANGE` fields (how the work is executed, and how long the
campaign may run) may differ.
"""
from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Sequence

from alkit.errors import ConfigError
from alkit._util import species_symbols
from alkit.scenarios import Scenario, check_scenario_set

MODES = ("direct", "scratch")
#: Fields that may differ between the stored configuration and a resume: they change how (or how long) the work is
#: done, never what it produces.
SAFE_TO_CHANGE = frozenset({"max_iterations", "n_workers", "executor", "dask_address", "label_timeout", "model_dir",
                            "fit_threads", "post_validation"})


@dataclass
class ALConfig:
    """Everything a campaign needs. Recipes build one; it is saved as ``RUN_DIR/config.json``."""

    species: Sequence[str]
    scenarios: list[Scenario]
    mode: str = "direct"
    name: str = "campaign"
    recipe: str | None = None  # set by alkit.recipe.build_config (reports show it)
    preset: str | None = None
    # pool (direct mode, or whenever the DIRECT sampler is needed)
    pool_scenarios: list[Scenario] | None = None  # default: the exploration scenarios
    pool_potential: str = "m3gnet"
    pool_per_trajectory: int | None = None  # DIRECT down-sampling of each trajectory (paper: 1000 of 20001)
    # encoding and DIRECT
    encoder: str = "m3gnet"
    n_clusters: int = 100
    k: int = 1
    clustering: str = "birch"
    # labelling
    labeller: str = "chgnet"
    labeller_kwargs: dict[str, Any] = field(default_factory=dict)
    label_timeout: float | None = None
    # the potential: a registered backend (alkit.backend); "mtp" reads the MTP fields below, another backend its
    # potential_kwargs
    potential: str = "mtp"
    potential_kwargs: dict[str, Any] = field(default_factory=dict)
    # MTP
    mtp_level: int = 8
    cutoff: float = 5.0
    loss_weights: tuple[float, float, float] = (1.0, 0.01, 0.0)
    # Fits run to MLIP-2's convergence rule (relative loss decrease below fit_tol over 50 iterations), capped at
    # bfgs_maxiter iterations (0: least squares on the linear coefficients only).
    bfgs_maxiter: int = 1000
    fit_tol: float = 1e-3
    fit_engine: str = "alkit"
    fit_threads: int = 2
    valid_fraction: float = 0.1
    grade_mode: str = "neighborhood"
    # Linearise the MTP in its linear (moment and species) coefficients for MaxVol, as linear-MTP active learning
    # does (Podryabinkin & Shapeev 2017). With all coefficients (radial ones included) and the regularised start,
    # a 0.01 Å displacement of one H in an 8-Ti cell took gamma from 0.8 to 5.6 after 58 training structures
    # (tiny Ti-H preset): the grade then flags noise, not extrapolation, and AL never converges.
    grade_parameters: str = "linear"
    # exploration
    gamma_select: float = 3.0
    gamma_break: float = 3.0
    explore_engine: str = "ase"
    explore_steps: int | None = None  # default: each scenario's own length
    max_collect_per_scenario: int = 20
    max_temperature_factor: float = 10.0  # an MTP MD run hotter than this x its target counts as blown up
    al_budget: int = 20  # new labels per AL iteration
    # Candidates with atoms closer than this (Å) are not labelled: no physical configuration of these scenarios has
    # them, DFT would fail or waste hours on them, and one such label would drag the MTP's min_dist down.
    min_candidate_distance: float = 0.5
    reselect: str | None = None  # a registered selector ("direct" | "maxvol" built in); default: direct in direct mode, maxvol from scratch
    max_iterations: int = 10
    # after the loop: alkit.validate.validate_run with the recipe's validation(preset) spec
    post_validation: bool = False
    # execution
    executor: str = "process"
    n_workers: int = 2
    dask_address: str | None = None
    model_dir: str | None = None
    seed: int = 0

    @property
    def reselection(self) -> str:
        return self.reselect or ("direct" if self.mode == "direct" else "maxvol")

    @property
    def needs_sampler(self) -> bool:
        return self.mode == "direct" or self.reselection == "direct"

    @property
    def needs_encoder(self) -> bool:
        return self.needs_sampler or bool(self.pool_per_trajectory)

    # ---- validation ---------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field (cheap, no model loaded): ``ConfigError`` naming the field, the value and what is
        allowed."""
        from alkit.backend import backend_names, make_backend, make_selector, selector_names
        from alkit.encode import ENCODERS
        from alkit.executors import EXECUTORS

        _one_of(self, "mode", MODES)
        if self.reselect is not None:
            _one_of(self, "reselect", tuple(selector_names()))
        if isinstance(self.species, str) or not self.species:
            _bad(self, "species", "must be a non-empty list of element symbols")
        species_symbols(self.species, ConfigError, "ALConfig.species")
        check_scenario_set(self.scenarios, self.species, "ALConfig.scenarios")
        check_scenario_set(self.pool_scenarios or [], self.species, "ALConfig.pool_scenarios", allow_empty=True)
        _string(self, "name")
        _string(self, "pool_potential")
        _int(self, "pool_per_trajectory", 1, optional=True)
        _one_of(self, "encoder", tuple(ENCODERS))
        _int(self, "n_clusters", 1)
        _int(self, "k", 1)
        _one_of(self, "clustering", ("birch", "minibatch_kmeans"))
        _string(self, "labeller")
        if not isinstance(self.labeller_kwargs, dict):
            raise ConfigError(f"ALConfig.labeller_kwargs = {self.labeller_kwargs!r}: must be a dict")
        _number(self, "label_timeout", 0.0, strict=True, optional=True)
        _one_of(self, "potential", tuple(backend_names()))
        if not isinstance(self.potential_kwargs, dict):
            raise ConfigError(f"ALConfig.potential_kwargs = {self.potential_kwargs!r}: must be a dict")
        backend = make_backend(self)  # the backend checks its own settings, naming the fields
        _number(self, "valid_fraction", 0.0, 0.5, upper_open=True)
        _number(self, "gamma_select", 1.0)
        _number(self, "gamma_break", 1.0)
        if self.gamma_select > self.gamma_break:
            raise ConfigError(f"ALConfig.gamma_select = {self.gamma_select} must not exceed gamma_break = "
                              f"{self.gamma_break}")
        _int(self, "explore_steps", 1, optional=True)
        _int(self, "max_collect_per_scenario", 1)
        _number(self, "max_temperature_factor", 1.0, strict=True)
        _int(self, "al_budget", 1)
        _number(self, "min_candidate_distance", 0.0)
        make_selector(self.reselection).check(backend, self.needs_sampler)
        _int(self, "max_iterations", 1)
        if not isinstance(self.post_validation, bool):
            _bad(self, "post_validation", "must be True or False")
        _one_of(self, "executor", EXECUTORS)
        _int(self, "n_workers", 1)
        if self.dask_address is not None:
            _string(self, "dask_address")
        if self.model_dir is not None:
            _string(self, "model_dir")
        _int(self, "seed", 0)

    # ---- identity ------------------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        """A JSON-able dict: scenarios as ids plus the SHA-256 of their full definitions (the ``scenarios.json``
        files hold them), so any change of a scenario shows as a changed configuration."""
        d = asdict(self)
        d["scenarios"] = [s.id for s in self.scenarios]
        d["pool_scenarios"] = None if self.pool_scenarios is None else [s.id for s in self.pool_scenarios]
        d["scenarios_sha256"] = scenarios_digest(self.scenarios)
        d["pool_scenarios_sha256"] = None if self.pool_scenarios is None else scenarios_digest(self.pool_scenarios)
        d["species"] = list(self.species)
        d["loss_weights"] = [float(x) for x in self.loss_weights]
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def from_json(cls, d: dict, scenarios: list[Scenario], pool_scenarios: list[Scenario] | None = None) -> "ALConfig":
        """Rebuild the configuration saved by :meth:`to_json` (scenario definitions given separately)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        by_id = {s.id: s for s in scenarios}
        missing = [i for i in d.get("scenarios", []) if i not in by_id]
        if missing:
            raise ConfigError(f"config.json names scenarios that are not defined: {missing[:5]}")
        kw["scenarios"] = [by_id[i] for i in d.get("scenarios", [])]
        if d.get("pool_scenarios") is not None:
            pool = {s.id: s for s in (pool_scenarios or [])}
            missing = [i for i in d["pool_scenarios"] if i not in pool]
            if missing:
                raise ConfigError(f"config.json names pool scenarios that are not defined: {missing[:5]}")
            kw["pool_scenarios"] = [pool[i] for i in d["pool_scenarios"]]
        kw["loss_weights"] = tuple(kw.get("loss_weights", (1.0, 0.01, 0.0)))
        return cls(**kw)


def scenarios_digest(scenarios: Sequence[Scenario]) -> str:
    h = hashlib.sha256()
    for s in scenarios:
        h.update(json.dumps(s.to_dict(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def resume_changes(stored: dict, new: dict) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
    """(unsafe changes, safe changes) between two :meth:`ALConfig.to_json` dicts, as (field, stored, new)."""
    unsafe, safe = [], []
    # a field added to ALConfig after the run was stored reads as its default (the run was made with it)
    defaults = {f.name: (f.default if f.default_factory is MISSING else f.default_factory())  # type: ignore[misc]
                for f in fields(ALConfig) if f.default is not MISSING or f.default_factory is not MISSING}
    defaults = json.loads(json.dumps(defaults, default=str))
    for key in sorted(set(stored) | set(new)):
        a, b = stored.get(key, defaults.get(key)), new.get(key, defaults.get(key))
        if _canonical(a) == _canonical(b):
            continue
        (safe if key in SAFE_TO_CHANGE else unsafe).append((key, a, b))
    return unsafe, safe


def format_changes(changes: list[tuple[str, Any, Any]]) -> str:
    def short(v):
        s = json.dumps(v, default=str)
        return s if len(s) <= 60 else s[:57] + "..."

    return "; ".join(f"{k}: {short(a)} -> {short(b)}" for k, a, b in changes)


# ---- field checks ------------------------------------------------------------------------------------------------
def _canonical(v):
    return json.dumps(v, sort_keys=True, default=str)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _bad(obj, name: str, allowed: str):
    raise ConfigError(f"ALConfig.{name} = {getattr(obj, name)!r}: {allowed}")


def _one_of(obj, name: str, allowed: Sequence[str]) -> None:
    if getattr(obj, name) not in allowed:
        _bad(obj, name, "must be one of " + ", ".join(repr(a) for a in allowed))


def _string(obj, name: str) -> None:
    v = getattr(obj, name)
    if not isinstance(v, str) or not v:
        _bad(obj, name, "must be a non-empty string")


def _int(obj, name: str, lo: int, hi: int | None = None, optional: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and optional:
        return
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= lo and (hi is None or v <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        _bad(obj, name, f"must be an integer {rng}" + (" or None" if optional else ""))


def _number(obj, name: str, lo: float, hi: float | None = None, strict: bool = False, optional: bool = False,
            upper_open: bool = False) -> None:
    v = getattr(obj, name)
    if v is None and optional:
        return
    ok = _is_real(v) and (v > lo if strict else v >= lo) and (hi is None or (v < hi if upper_open else v <= hi))
    if not ok:
        rng = f"{'>' if strict else '>='} {lo}" + ("" if hi is None else f" and {'<' if upper_open else '<='} {hi}")
        _bad(obj, name, f"must be a finite number {rng}" + (" or None" if optional else ""))
