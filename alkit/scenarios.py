"""Scenarios: the MD settings a potential must survive (a starting structure, temperature, ensemble, length).

A scenario is plain data with a stable id. Scenario sets serialise to and from a JSON file with the structures
embedded, so a campaign's scenarios can be inspected, edited and re-used.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from ase import Atoms

from alkit.errors import ConfigError

ENSEMBLES = ("nvt", "npt")


def atoms_to_dict(atoms: Atoms) -> dict:
    return {
        "numbers": atoms.numbers.tolist(),
        "positions": np.asarray(atoms.positions).tolist(),
        "cell": np.asarray(atoms.cell.array).tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
    }


def atoms_from_dict(d: dict) -> Atoms:
    try:
        return Atoms(numbers=d["numbers"], positions=d["positions"], cell=d["cell"], pbc=d["pbc"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed structure in scenario file: {exc}") from exc


@dataclass
class Scenario:
    """One MD scenario. ``id`` must be unique in a set and stable across runs (it keys resumption)."""

    id: str
    atoms: Atoms
    temperature: float
    ensemble: str = "npt"
    steps: int = 1000
    timestep_fs: float = 0.5
    snapshot_interval: int = 10
    pressure_gpa: float = 0.0
    tags: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        where = f"scenario {self.id!r}"
        if not self.id or not isinstance(self.id, str):
            raise ConfigError("a scenario needs a non-empty string id")
        if not isinstance(self.atoms, Atoms) or len(self.atoms) == 0:
            raise ConfigError(f"{where}: needs a non-empty ase.Atoms structure")
        check_md_settings(self.temperature, self.ensemble, self.steps, self.timestep_fs, self.snapshot_interval,
                          min_steps=1, where=where)
        if self.ensemble == "npt":
            require_periodic(self.atoms, f"{where}: NpT")

    @property
    def n_snapshots(self) -> int:
        return int(self.steps) // int(self.snapshot_interval)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["atoms"] = atoms_to_dict(self.atoms)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Scenario":
        if not isinstance(d, dict) or "id" not in d or "atoms" not in d:
            raise ConfigError(f"malformed scenario record (needs 'id' and 'atoms'): {str(d)[:120]}")
        d = dict(d)
        d["atoms"] = atoms_from_dict(d["atoms"])
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"scenario {d['id']!r}: unknown fields {sorted(unknown)}")
        return cls(**d)


# --------------------------------------------------------------------------------------------------------------
# the scenario checks of every MD entry point (scenario files, alkit.md.run_md, MTP MD, the LAMMPS engine, the
# campaign): one place, so each rule is checked once and worded alike
# --------------------------------------------------------------------------------------------------------------
def check_md_settings(temperature: float, ensemble: str, steps: int, timestep_fs: float | None = None,
                      snapshot_interval: int | None = None, *, min_steps: int = 0, where: str | None = None) -> None:
    """ConfigError unless the MD settings can run: temperature > 0 K, a known ensemble, ``steps >= min_steps``,
    ``timestep_fs > 0`` and ``snapshot_interval >= 1`` (each skipped when None). ``where`` prefixes the message
    (e.g. ``"scenario 'x'"``)."""
    pre = f"{where}: " if where else ""
    if ensemble not in ENSEMBLES:
        raise ConfigError(f"{pre}ensemble {ensemble!r} is not one of {ENSEMBLES}")
    if not (np.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"{pre}temperature must be > 0 K, got {temperature}")
    if int(steps) < min_steps:
        raise ConfigError(f"{pre}steps must be >= {min_steps}, got {steps}")
    if timestep_fs is not None and not (timestep_fs > 0):
        raise ConfigError(f"{pre}timestep_fs must be > 0, got {timestep_fs}")
    if snapshot_interval is not None and int(snapshot_interval) < 1:
        raise ConfigError(f"{pre}snapshot_interval must be >= 1, got {snapshot_interval}")


def require_periodic(atoms: Atoms, what: str, error: type[Exception] = ConfigError, hint: str = "") -> None:
    """``error`` ("{what} needs a fully periodic cell[; hint]") unless ``atoms`` is periodic in all three
    directions (NpT, the LAMMPS engine)."""
    if not all(atoms.pbc):
        raise error(f"{what} needs a fully periodic cell" + (f"; {hint}" if hint else ""))


def non_periodic(scenarios: Iterable[Scenario]) -> list[str]:
    """Ids of the scenarios whose cell is not fully periodic (for settings that need periodic ones)."""
    return [s.id for s in scenarios if not all(s.atoms.pbc)]


def check_scenario_set(scenarios: Sequence[Scenario], species: Sequence[str] | None = None,
                       what: str = "scenarios", allow_empty: bool = False) -> None:
    """ConfigError unless ``scenarios`` is a set a campaign can run: non-empty (unless ``allow_empty``), Scenario
    objects, unique ids and, given ``species``, no element outside them."""
    if not scenarios and not allow_empty:
        raise ConfigError(f"{what}: the scenario list is empty: nothing to explore")
    for scn in scenarios:
        if not isinstance(scn, Scenario):
            raise ConfigError(f"{what} holds a {type(scn).__name__}, not a Scenario")
    check_unique_ids(scenarios)
    if species is not None:
        for scn in scenarios:
            extra = sorted(set(scn.atoms.get_chemical_symbols()) - set(species))
            if extra:
                raise ConfigError(f"scenario {scn.id!r} contains element(s) {extra} not in species {list(species)}")


def check_unique_ids(scenarios: Sequence[Scenario]) -> None:
    seen: set[str] = set()
    for s in scenarios:
        if s.id in seen:
            raise ConfigError(f"duplicate scenario id {s.id!r}")
        seen.add(s.id)


# A recipe rebuilt on another CPU, or with another numpy/BLAS, gives the same structures up to round-off (its cells
# hold coordinates of 1e-17 Å that should be 0; the exact digests of two machines differed). That is the same set.
ROUNDOFF_ATOL = 1e-6  # Å (and K, fs, GPa): the precision structure_hash rounds to


def roundoff_difference(a: Sequence[Scenario], b: Sequence[Scenario],
                        atol: float = ROUNDOFF_ATOL) -> tuple[float, str | None]:
    """(largest absolute difference of any number, first real difference or None) between two scenario sets.

    Two sets agree when they hold the same ids in the same order, the same strings, integers and booleans, and
    numbers within ``atol``. Used on resume: a recipe rebuilt here is checked against the run's stored definitions.
    """
    if [s.id for s in a] != [s.id for s in b]:
        return float("inf"), "the scenario ids differ"
    worst = 0.0

    def walk(x: Any, y: Any, where: str) -> str | None:
        nonlocal worst
        if isinstance(x, dict) and isinstance(y, dict):
            if set(x) != set(y):
                return f"{where}: fields {sorted(set(x) ^ set(y))} differ"
            return next((d for k in sorted(x) if (d := walk(x[k], y[k], f"{where}.{k}"))), None)
        if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
            if len(x) != len(y):
                return f"{where}: lengths {len(x)} and {len(y)}"
            return next((d for i, (u, v) in enumerate(zip(x, y)) if (d := walk(u, v, f"{where}[{i}]"))), None)
        if isinstance(x, float) or isinstance(y, float):
            if isinstance(x, bool) or isinstance(y, bool) or not isinstance(x, (int, float)) \
                    or not isinstance(y, (int, float)):
                return f"{where}: {x!r} and {y!r}"
            worst = max(worst, abs(float(x) - float(y)))
            return None if abs(float(x) - float(y)) <= atol else f"{where}: {x!r} and {y!r}"
        return None if x == y else f"{where}: {x!r} and {y!r}"

    for s, t in zip(a, b):
        diff = walk(s.to_dict(), t.to_dict(), s.id)
        if diff:
            return worst, diff
    return worst, None


def save_scenarios(path: str | os.PathLike, scenarios: Iterable[Scenario]) -> None:
    scenarios = list(scenarios)
    check_unique_ids(scenarios)
    Path(path).write_text(json.dumps({"scenarios": [s.to_dict() for s in scenarios]}, indent=1))


def load_scenarios(path: str | os.PathLike) -> list[Scenario]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"scenario file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"scenario file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), list):
        raise ConfigError(f"scenario file {path} must hold {{'scenarios': [...]}}")
    scenarios = [Scenario.from_dict(d) for d in data["scenarios"]]
    check_unique_ids(scenarios)
    return scenarios
