"""The run's JSON-lines event log: one JSON object per line, appended and fsynced, read by dashboards.

Every record has ``time`` (Unix seconds), ``event`` (a name below) and event-specific fields. Event names and
their fields, as written by the driver:

- ``run_started``: mode ("direct" | "scratch"), recipe, preset, config (dict)
- ``pool_built``: n_structures, n_scenarios, seconds
- ``direct_fitted``: n_pcs, explained_variance (list), coverage (list, per PC), n_clusters, k
- ``stage``: iteration, stage ("pool" | "encode" | "direct" | "label" | "fit" | "explore" | "select"), seconds
- ``labels``: iteration, added, cumulative, failed, failed_cumulative
- ``fit``: iteration, n_train, n_valid, train {energy_rmse, energy_mae (meV/atom), force_rmse, force_mae (eV/Å),
  stress_rmse, stress_mae (GPa)}, valid {same keys}
- ``explore``: iteration, scenarios: list of {id, temperature, stable, steps_done, steps_total, max_gamma},
  n_collected
- ``iteration_done``: iteration, n_stable, n_scenarios, stable_by_temperature {T: fraction},
  labels_cumulative, failed_cumulative, wall {stage: seconds}
- ``run_finished``: converged (bool), iterations, reason, labels_cumulative
- ``run_reopened``: previous (the earlier finished record), max_iterations: a finished run extended by a larger
  ``max_iterations``; its earlier ``run_finished`` no longer holds
- ``config_changed``: changes (list of [field, stored, new]) of the fields that may change on a resume

Readers take the last complete record of each kind (a resumed run may write a record again).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from alkit._util import json_default
from typing import Any, Iterator

EVENTS_FILE = "events.jsonl"


class EventLog:
    """Append-only JSON-lines log in ``run_dir/events.jsonl``."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / EVENTS_FILE

    def emit(self, event: str, **fields: Any) -> dict:
        record = {"time": time.time(), "event": event, **fields}
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
