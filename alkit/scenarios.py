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
        if self.ensemble not in ENSEMBLES:
            raise ConfigError(f"{where}: ensemble {self.ensemble!r} is not one of {ENSEMBLES}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(f"{where}: temperature must be > 0 K, got {self.temperature}")
        if int(self.steps) < 1:
            raise ConfigError(f"{where}: steps must be >= 1, got {self.steps}")
        if not (self.timestep_fs > 0):
            raise ConfigError(f"{where}: timestep_fs must be > 0, got {self.timestep_fs}")
        if int(self.snapshot_interval) < 1:
            raise ConfigError(f"{where}: snapshot_interval must be >= 1, got {self.snapshot_interval}")
        if self.ensemble == "npt" and not all(self.atoms.pbc):
            raise ConfigError(f"{where}: NpT needs a fully periodic cell")

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


def check_unique_ids(scenarios: Sequence[Scenario]) -> None:
    seen: set[str] = set()
    for s in scenarios:
        if s.id in seen:
            raise ConfigError(f"duplicate scenario id {s.id!r}")
        seen.add(s.id)


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
