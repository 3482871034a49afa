"""The run's JSON-lines event log: one JSON object per line, appended and fsynced, read by dashboards.

Every record has ``time`` (Unix seconds), ``event`` (a name of :data:`SCHEMA`) and that event's fields. The
schema below is the one definition of the records: :meth:`EventLog.emit` refuses an unknown event, a missing field
or an unexpected one (a programming error, raised before anything is written), and readers (status, report,
compare) parse records with :func:`parse`, which fills fields an older log lacks with their defaults.

Readers take the last complete record of each kind (a resumed run may write a record again).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterator

from alkit._util import json_default

EVENTS_FILE = "events.jsonl"


@dataclass
class RunStarted:
    """The campaign (re)starts: its mode, recipe/preset and the whole configuration."""

    mode: str
    name: str | None = None
    recipe: str | None = None
    preset: str | None = None
    config: dict = field(default_factory=dict)


@dataclass
class ConfigChanged:
    """A resume changed fields that may change (:data:`alkit.campaign.SAFE_TO_CHANGE`): [field, stored, new]."""

    changes: list


@dataclass
class RunReopened:
    """A finished run extended by a larger ``max_iterations``: its earlier ``run_finished`` no longer holds."""

    previous: dict | None
    max_iterations: int


@dataclass
class PoolBuilt:
    """The configuration pool in the store; ``digest`` (:func:`alkit.pool.pool_digest`) names its content, so runs
    of one comparison can be shown to have chosen from the same configurations (None in older logs)."""

    n_structures: int
    n_scenarios: int
    seconds: float
    digest: str | None = None


@dataclass
class PoolAdopted:
    """Pool scenarios copied from another run (``alkit run --pool-from``): the runs of a comparison share one pool."""

    source: str
    scenarios: list
    cached_vectors: int = 0


@dataclass
class DirectFitted:
    """The DIRECT sampler: retained PCs, their explained variance, the seed set's coverage per PC."""

    n_pcs: int
    explained_variance: list
    coverage: list
    n_clusters: int
    k: int
    n_selected: int | None = None


@dataclass
class Stage:
    """One stage's wall time: pool, encode, direct, label, fit, explore, select."""

    iteration: int
    stage: str
    seconds: float


@dataclass
class Labels:
    iteration: int
    added: int
    cumulative: int
    failed: int
    failed_cumulative: int


@dataclass
class Fit:
    """A fitted potential: metrics on training and validation sets (energies meV/atom, forces eV/Å, stress GPa)
    and the optimiser's iterations and stop reason."""

    iteration: int
    n_train: int
    n_valid: int
    train: dict
    valid: dict | None = None
    seconds: float = 0.0
    fit_iterations: int | None = None
    fit_stopped: str | None = None


@dataclass
class Explore:
    """Every scenario's outcome (``alkit.backend.ExploreOutcome.to_record`` without the structures; ``crashed``
    marks a run that raised, with ``max_gamma`` None) and the grades of the collected candidates."""

    iteration: int
    scenarios: list
    gammas: list = field(default_factory=list)
    n_collected: int = 0


@dataclass
class IterationDone:
    iteration: int
    n_stable: int
    n_scenarios: int
    stable_by_temperature: dict
    labels_cumulative: int
    failed_cumulative: int = 0
    wall: dict = field(default_factory=dict)
    max_gamma: float | None = None


@dataclass
class RunFinished:
    converged: bool
    iterations: int
    reason: str
    labels_cumulative: int | None = None


@dataclass
class Validated:
    """Post-AL validation written to ``path`` (``validation.json``, ``validation.md``, figures)."""

    path: str
    seconds: float


#: Event name -> record type: the one schema of the log.
SCHEMA: dict[str, type] = {
    "run_started": RunStarted, "config_changed": ConfigChanged, "run_reopened": RunReopened,
    "pool_built": PoolBuilt, "pool_adopted": PoolAdopted, "direct_fitted": DirectFitted, "stage": Stage, "labels": Labels, "fit": Fit,
    "explore": Explore, "iteration_done": IterationDone, "run_finished": RunFinished, "validated": Validated,
}


def check_record(event: str, record: dict) -> None:
    """Raise ``ValueError`` when ``record`` (without time/event) does not match the schema of ``event``."""
    cls = SCHEMA.get(event)
    if cls is None:
        raise ValueError(f"unknown event {event!r}; the schema has {sorted(SCHEMA)}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing, extra = required - set(record), set(record) - names
    if missing or extra:
        raise ValueError(f"event {event!r}: missing fields {sorted(missing)}, unexpected fields {sorted(extra)}")


def parse(record: dict) -> Any:
    """The typed record (a dataclass of :data:`SCHEMA`) of a log line; None for an unknown event. Fields an
    older log lacks take their defaults; fields a newer one adds are ignored."""
    cls = SCHEMA.get(record.get("event"))
    if cls is None:
        return None
    kw = {f.name: record[f.name] for f in fields(cls) if f.name in record}
    try:
        return cls(**kw)
    except TypeError:  # a required field is missing: not a record this alkit can read
        return None


class EventLog:
    """Append-only JSON-lines log in ``run_dir/events.jsonl``."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / EVENTS_FILE

    def emit(self, event: str, **values: Any) -> dict:
        check_record(event, values)
        record = {"time": time.time(), "event": event, **values}
        line = json.dumps(record, default=json_default)
        with open(self.path, "a+b") as fh:
            # A kill during a write leaves a torn last line; end it first, or this record would be glued to the
            # fragment and lost with it (readers skip lines that are not JSON).
            fh.seek(0, os.SEEK_END)
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write((line + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        return record


def read_events(run_dir: str | os.PathLike, event: str | None = None) -> list[dict]:
    """All records of ``run_dir``'s event log (optionally only one event name). A torn last line is skipped."""
    return list(iter_events(run_dir, event))


def iter_events(run_dir: str | os.PathLike, event: str | None = None) -> Iterator[dict]:
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a write cut by a kill: the rest of the log is still good
                continue
            if event is None or rec.get("event") == event:
                yield rec
