"""The seams of the active-learning loop: what the driver needs from a potential, an explorer and a selector.

The driver (:mod:`alkit.driver`) talks only to these protocols, the run store and the event log, in the spirit of
psiflow's loop (a model interface and a reference) and ASE's calculator protocol. The MTP is one backend
(:class:`alkit.mtp.backend.MTPBackend`: the compiled engine, the MaxVol active set, ASE or LAMMPS MD); another
potential type is one module that implements :class:`PotentialBackend` and calls :func:`register_backend`.

- :class:`PotentialBackend`: fit from labelled structures (warm start from the previous iteration's files), an ASE
  calculator, exploration (MD of one scenario under an uncertainty monitor, returning the outcome and the
  extrapolative candidates), save/load through a model directory per iteration.
- :class:`Selector`: choose the next labels among the candidates under a budget (DIRECT re-selection, MaxVol, ...).

Built-in names are registered as ``"module:attribute"`` strings, so listing or validating a name imports nothing.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

from alkit.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ase import Atoms
    from ase.calculators.calculator import Calculator

    from alkit.campaign import ALConfig
    from alkit.scenarios import Scenario


@dataclass
class FitOutcome:
    """What a backend's fit reports (written to the event log as the ``fit`` record)."""

    train: dict[str, float]
    valid: dict[str, float] | None = None
    seconds: float = 0.0
    iterations: int | None = None
    stopped: str | None = None


@dataclass
class ExploreSettings:
    """The loop's settings for one exploration run (the backend brings its own, such as its MD engine)."""

    steps: int
    gamma_select: float
    gamma_break: float
    seed: int
    max_collect: int
    max_temperature_factor: float


@dataclass
class ExploreOutcome:
    """One scenario's exploration. ``max_gamma`` is None when no grade exists (a crash); ``crashed`` marks a run
    that raised instead of finishing or stopping (its ``stop_reason`` says why): an explicit record, not a magic
    grade. ``collected``: candidate structures with ``info['gamma']`` and ``info['step']``."""

    id: str
    temperature: float
    stable: bool
    steps_done: int
    steps_total: int
    max_gamma: float | None
    stop_reason: str
    seconds: float = 0.0
    crashed: bool = False
    collected: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_gamma is not None and not math.isfinite(float(self.max_gamma)):
            self.max_gamma = None  # JSON has no inf; "no finite grade" and a crash both read as None

    def to_record(self) -> dict[str, Any]:
        """The stored/logged record (without the candidate structures)."""
        rec = asdict(self)
        rec.pop("collected")
        return rec


@runtime_checkable
class PotentialBackend(Protocol):
    """A trainable potential with an uncertainty measure. Instances carry their own settings (validated by
    :meth:`check`, which must be cheap: no model is loaded and no MD is run) and must be picklable (they are
    sent to exploration workers). Files live in one directory per iteration (``model_dir``)."""

    name: str

    @classmethod
    def from_config(cls, config: "ALConfig") -> "PotentialBackend": ...

    def check(self) -> None: ...

    def is_fitted(self, model_dir: Path) -> bool: ...

    def fit(self, train: Sequence["Atoms"], valid: Sequence["Atoms"], model_dir: Path, previous: Path | None,
            seed: int) -> FitOutcome: ...

    def calculator(self, model_dir: Path) -> "Calculator": ...

    def explore(self, model_dir: Path, scenario: "Scenario", settings: ExploreSettings) -> ExploreOutcome: ...


@dataclass
class SelectionContext:
    """What a selector may use. ``features`` encodes structures with the campaign's encoder (and stores the
    features); ``sampler`` is the fitted DIRECT sampler (None in scratch mode without one)."""

    iteration: int
    model_dir: Path
    backend: PotentialBackend
    features: Callable[[Sequence["Atoms"]], Any]
    sampler: Callable[[], Any]


@runtime_checkable
class Selector(Protocol):
    """Chooses the next labels: indices into ``candidates`` (at most ``budget``)."""

    name: str

    def check(self, backend: PotentialBackend, has_sampler: bool) -> None: ...

    def select(self, candidates: Sequence["Atoms"], budget: int, context: SelectionContext) -> list[int]: ...


# --------------------------------------------------------------------------------------------------------------
# registries (ASE's register_calculator_class pattern)
# --------------------------------------------------------------------------------------------------------------
_BACKENDS: dict[str, Any] = {"mtp": "alkit.mtp.backend:MTPBackend"}
_SELECTORS: dict[str, Any] = {"direct": "alkit.direct:DirectReselector", "maxvol": "alkit.mtp.backend:MaxVolSelector"}


def _resolve(table: dict[str, Any], name: str, what: str) -> Any:
    try:
        obj = table[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown {what} {name!r}; registered: {', '.join(sorted(table))}") from None
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        obj = table[name] = getattr(importlib.import_module(module), attr)
    return obj


def register_backend(name: str, cls: type) -> None:
    """Make ``ALConfig(potential=name)`` use ``cls`` (built with ``cls.from_config(config)``)."""
    _BACKENDS[str(name)] = cls


def register_selector(name: str, cls: type) -> None:
    """Make ``ALConfig(reselection=name)`` use ``cls()``."""
    _SELECTORS[str(name)] = cls


def backend_names() -> list[str]:
    return sorted(_BACKENDS)


def selector_names() -> list[str]:
    return sorted(_SELECTORS)


def make_backend(config: "ALConfig") -> PotentialBackend:
    """The configured potential backend (its settings checked by the caller through :meth:`check`)."""
    return _resolve(_BACKENDS, config.potential, "potential backend").from_config(config)


def make_selector(name: str) -> Selector:
    return _resolve(_SELECTORS, name, "selector")()
