"""The run store: one SQLite file in the run directory holding every structure of a campaign with its origin,
features, labels, status and grades, plus the driver's resume bookkeeping.

Why ``sqlite3`` directly rather than ``ase.db``: the store's guarantees are transactional *conditional* updates
("set this label only if the structure is not labelled yet", "insert unless this hash exists") on indexed status /
source / iteration columns, plus a key-value state table, all in one transaction each. ``ase.db`` is a fine
structure archive but commits row by row, keeps per-row key-value pairs without constraints, and offers no
check-and-set; building those on top of it would be more code than the schema below. Structures go in and come out
as ASE ``Atoms`` (labelled ones carry a ``SinglePointCalculator``), so nothing downstream sees SQL.

Durability: WAL journal with ``synchronous=FULL`` and every write in one ``BEGIN IMMEDIATE`` transaction, so a
process killed at any moment (``kill -9``) leaves the database at its last commit; a label that was committed is
there exactly once, and :meth:`RunStore.set_label` refuses to label a structure twice.

Status of a structure: ``new`` (stored, e.g. a pool structure) -> ``selected`` (queued for labelling) ->
``labelled`` | ``failed`` (final).
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from ase import Atoms

from alkit._util import json_default
from alkit.errors import ConfigError, InputError
from alkit.io import structure_hash, to_atoms

DB_NAME = "store.sqlite"  # the driver's RUN_DIR/store.sqlite
SCHEMA_VERSION = 1
SOURCES = ("pool", "seed", "al", "scratch")
STATUSES = ("new", "selected", "labelled", "failed")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS structures (
    id INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    formula TEXT NOT NULL,
    natoms INTEGER NOT NULL,
    numbers BLOB NOT NULL,          -- int32 (natoms,)
    positions BLOB NOT NULL,        -- float64 (natoms, 3), Å
    cell BLOB NOT NULL,             -- float64 (3, 3), Å
    pbc INTEGER NOT NULL,           -- bit i set = periodic along axis i
    source TEXT NOT NULL CHECK (source IN {SOURCES!r}),
    iteration INTEGER NOT NULL,
    scenario_id TEXT,
    extra TEXT,                     -- JSON object
    features BLOB,                  -- float32 (n_features,)
    n_features INTEGER,
    status TEXT NOT NULL DEFAULT 'new' CHECK (status IN {STATUSES!r}),
    selected_iteration INTEGER,
    selected_reason TEXT,
    energy REAL,                    -- eV
    forces BLOB,                    -- float64 (natoms, 3), eV/Å
    stress BLOB,                    -- float64 (6,) Voigt, eV/Å^3
    label_reason TEXT,
    label_seconds REAL,
    labelled_at REAL,
    gamma REAL,                     -- latest extrapolation grade
    gamma_iteration INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS structures_status ON structures (status);
CREATE INDEX IF NOT EXISTS structures_source ON structures (source, iteration);
CREATE TABLE IF NOT EXISTS grades (
    structure_id INTEGER NOT NULL REFERENCES structures (id),
    iteration INTEGER NOT NULL,
    gamma REAL NOT NULL,
    PRIMARY KEY (structure_id, iteration)
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL);
"""

_ROW_COLUMNS = (
    "id, numbers, positions, cell, pbc, source, iteration, scenario_id, extra, status, energy, forces, stress, "
    "label_reason, gamma, selected_iteration, selected_reason"
)


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=json_default)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be JSON-serialisable: {exc}") from exc


class RunStore:
    """The campaign database. ``path`` is the run directory (the file ``store.sqlite`` inside it is used; the
    directory is created) or a database file path ending in ``.sqlite``/``.sqlite3``/``.db``.

    ``readonly=True`` (reports, dashboards): nothing is created or written, not even SQLite's ``-wal``/``-shm``
    files when no writer has the store open; ``ConfigError`` when the file is missing or not an alkit store.

    One connection per process; use it from one thread. :meth:`close` (or ``with RunStore(...)``) when done.
    """

    def __init__(self, path: str | os.PathLike, readonly: bool = False):
        path = Path(path)
        self.path = path if path.suffix in (".sqlite", ".sqlite3", ".db") else path / DB_NAME
        self.readonly = bool(readonly)
        if self.readonly:
            self._open_readonly()
            return
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the run directory {directory}: {exc.strerror or exc}") from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"the run directory {directory} is not writable")
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the run database in {directory}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            with self._transaction() as cur:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                row = cur.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    cur.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                elif int(row[0]) != SCHEMA_VERSION:
                    raise ConfigError(
                        f"run database {self.path} has schema version {row[0]}, this alkit reads {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if "readonly" in str(exc) or "read-only" in str(exc) or "unable to open" in str(exc):
                raise ConfigError(f"the run directory {directory} is not writable: {exc}") from exc
            raise ConfigError(f"{self.path} is not an alkit run database: {exc}") from exc

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"no run database at {self.path}")
        # A store no writer has open has no -wal file: read it as immutable so that not even SQLite's -shm/-wal
        # files appear in the run directory. With a writer active, a read-only connection shares its WAL.
        live = Path(f"{self.path}-wal").exists()
        uri = f"{self.path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}"
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=2.0, isolation_level=None)
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.Error as exc:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            raise ConfigError(f"{self.path} is not a readable alkit run database: {exc}") from exc
        if row is None or int(row[0]) != SCHEMA_VERSION:
            self._conn.close()
            raise ConfigError(f"run database {self.path} has schema version {row and row[0]}, this alkit reads "
                              f"{SCHEMA_VERSION}")

    def counts_by_status(self) -> dict[str, int]:
        """Structures per status (``new``, ``selected``, ``labelled``, ``failed``)."""
        return {str(k): int(v) for k, v in self._query("SELECT status, COUNT(*) FROM structures GROUP BY status")}

    # -- plumbing -------------------------------------------------------------------------------------------------
    class _Tx:
        def __init__(self, conn: sqlite3.Connection):
            self.conn = conn

        def __enter__(self) -> sqlite3.Cursor:
            self.cur = self.conn.cursor()
            self.cur.execute("BEGIN IMMEDIATE")
            return self.cur

        def __exit__(self, exc_type, exc, tb) -> None:
            if exc_type is None:
                self.conn.execute("COMMIT")
            else:
                self.conn.execute("ROLLBACK")

    def _transaction(self) -> "RunStore._Tx":
        if self._conn is None:
            raise InputError(f"run store {self.path} is closed")
        return RunStore._Tx(self._conn)

    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        if self._conn is None:
            raise InputError(f"run store {self.path} is closed")
        return self._conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        """Close the connection (checkpointing the WAL)."""
        if getattr(self, "_conn", None) is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- structures -------------------------------------------------------------------------------------------------
    def add_structures(
        self,
        structures: Sequence[Atoms],
        source: str,
        iteration: int,
        scenario_ids: Sequence[str | None] | None = None,
        features: np.ndarray | None = None,
        extra: Sequence[dict] | dict | None = None,
    ) -> list[int]:
        """Store structures (status ``new``) and return their ids, in order.

        A structure already in the store (same :func:`alkit.io.structure_hash`) is not stored again: its existing
        id is returned and its origin kept (its features are filled in if it had none). ``features`` is
        (n, n_features), stored as float32; ``extra`` is one JSON-able dict per structure (or one for all).
        """
        if source not in SOURCES:
            raise InputError(f"source must be one of {SOURCES}, got {source!r}")
        structures = [to_atoms(s) for s in structures]
        n = len(structures)
        if scenario_ids is not None and len(scenario_ids) != n:
            raise InputError(f"{len(scenario_ids)} scenario ids for {n} structures")
        feats = None
        if features is not None:
            feats = np.asarray(features, dtype=np.float32)
            if feats.ndim != 2 or feats.shape[0] != n:
                raise InputError(f"features must have shape ({n}, n_features), got {feats.shape}")
            if not np.all(np.isfinite(feats)):
                raise InputError("features contain non-finite values")
        if extra is None or isinstance(extra, dict):
            extras = [extra] * n
        else:
            extras = list(extra)
            if len(extras) != n:
                raise InputError(f"{len(extras)} extra dicts for {n} structures")
        rows = []
        for k, atoms in enumerate(structures):
            if len(atoms) == 0:
                raise InputError(f"structure {k} has no atoms")
            if not np.all(np.isfinite(atoms.positions)) or not np.all(np.isfinite(atoms.cell.array)):
                raise InputError(f"structure {k} has non-finite positions or cell")
            rows.append((
                structure_hash(atoms),
                atoms.get_chemical_formula(),
                len(atoms),
                np.asarray(atoms.numbers, dtype="<i4").tobytes(),
                np.asarray(atoms.positions, dtype="<f8").tobytes(),
                np.asarray(atoms.cell.array, dtype="<f8").tobytes(),
                int(sum(1 << i for i, p in enumerate(atoms.pbc) if p)),
                None if scenario_ids is None or scenario_ids[k] is None else str(scenario_ids[k]),
                None if extras[k] is None else _dumps(extras[k], f"extra of structure {k}"),
                None if feats is None else feats[k].astype("<f4").tobytes(),
                None if feats is None else int(feats.shape[1]),
            ))
        ids: list[int] = []
        now = time.time()
        with self._transaction() as cur:
            for row in rows:
                h = row[0]
                found = cur.execute("SELECT id, features FROM structures WHERE hash=?", (h,)).fetchone()
                if found is not None:
                    if found[1] is None and row[9] is not None:
                        cur.execute("UPDATE structures SET features=?, n_features=? WHERE id=?", (row[9], row[10], found[0]))
                    ids.append(int(found[0]))
                    continue
                cur.execute(
                    "INSERT INTO structures (hash, formula, natoms, numbers, positions, cell, pbc, scenario_id, extra,"
                    " features, n_features, source, iteration, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    row + (source, int(iteration), now),
                )
                ids.append(int(cur.lastrowid))
        return ids

    def _check_ids(self, cur: sqlite3.Cursor, ids: Sequence[int]) -> dict[int, str]:
        """Status of each id; raise InputError naming unknown ids."""
        status: dict[int, str] = {}
        for chunk in _chunks(ids):
            q = f"SELECT id, status FROM structures WHERE id IN ({','.join('?' * len(chunk))})"
            status.update({int(i): s for i, s in cur.execute(q, chunk).fetchall()})
        missing = [i for i in ids if i not in status]
        if missing:
            raise InputError(f"no structure with id(s) {missing[:10]} in {self.path}")
        return status

    def mark_selected(self, ids: Iterable[int], iteration: int, reason: str) -> None:
        """Queue structures for labelling (status ``selected``). Already-selected ones are left as they are;
        a labelled or failed structure cannot be selected again (it would be labelled twice)."""
        ids = [int(i) for i in ids]
        with self._transaction() as cur:
            status = self._check_ids(cur, ids)
            done = [i for i in ids if status[i] in ("labelled", "failed")]
            if done:
                raise InputError(f"structure(s) {done[:10]} are already labelled or failed; cannot select them again")
            for i in ids:
                cur.execute(
                    "UPDATE structures SET status='selected', selected_iteration=?, selected_reason=? "
                    "WHERE id=? AND status='new'",
                    (int(iteration), str(reason), i),
                )

    def to_label(self) -> list[int]:
        """Ids of selected structures without a label yet (what a resumed run must still label), in id order."""
        return [int(r[0]) for r in self._query("SELECT id FROM structures WHERE status='selected' ORDER BY id")]

    def set_label(self, id: int, result) -> None:
        """Store a :class:`alkit.label.LabelResult`: status ``labelled`` (energy, forces, stress) or ``failed``
        (reason). Atomic. Raises InputError if the structure already has a label (never labelled twice)."""
        id = int(id)
        status = getattr(result, "status", None)
        if status not in ("ok", "failed"):
            raise InputError(f"label result status must be 'ok' or 'failed', got {status!r}")
        with self._transaction() as cur:
            row = cur.execute("SELECT status, natoms FROM structures WHERE id=?", (id,)).fetchone()
            if row is None:
                raise InputError(f"no structure with id {id} in {self.path}")
            if row[0] in ("labelled", "failed"):
                raise InputError(f"structure {id} is already {row[0]}: a structure is never labelled twice")
            natoms = int(row[1])
            if status == "ok":
                forces = np.asarray(result.forces, dtype="<f8")
                if forces.shape != (natoms, 3) or not np.all(np.isfinite(forces)) or result.energy is None \
                        or not np.isfinite(result.energy):
                    raise InputError(f"label for structure {id} has a non-finite energy or forces of shape "
                                     f"{forces.shape} (expected ({natoms}, 3))")
                stress = None
                if result.stress is not None:
                    s = np.asarray(result.stress, dtype="<f8").reshape(-1)
                    if s.shape != (6,):
                        raise InputError(f"label for structure {id} has stress of shape {s.shape}, expected (6,)")
                    stress = s.tobytes()
                cur.execute(
                    "UPDATE structures SET status='labelled', energy=?, forces=?, stress=?, label_reason=NULL, "
                    "label_seconds=?, labelled_at=? WHERE id=? AND status IN ('new', 'selected')",
                    (float(result.energy), forces.tobytes(), stress, float(result.seconds), time.time(), id),
                )
            else:
                cur.execute(
                    "UPDATE structures SET status='failed', label_reason=?, label_seconds=?, labelled_at=? "
                    "WHERE id=? AND status IN ('new', 'selected')",
                    (str(result.reason or "unknown failure"), float(result.seconds), time.time(), id),
                )
            if cur.rowcount != 1:  # pragma: no cover - guarded by the check above inside the same transaction
                raise InputError(f"structure {id} could not be labelled (concurrent change)")

    def set_grade(self, id: int, gamma: float, iteration: int) -> None:
        """Record the extrapolation grade of a structure at an iteration (the latest is kept on the structure)."""
        gamma = float(gamma)
        if np.isnan(gamma):
            raise InputError(f"grade of structure {id} is NaN")
        with self._transaction() as cur:
            self._check_ids(cur, [int(id)])
            cur.execute(
                "INSERT INTO grades (structure_id, iteration, gamma) VALUES (?,?,?) "
                "ON CONFLICT (structure_id, iteration) DO UPDATE SET gamma=excluded.gamma",
                (int(id), int(iteration), gamma),
            )
            cur.execute(
                "UPDATE structures SET gamma=?, gamma_iteration=? WHERE id=? "
                "AND (gamma_iteration IS NULL OR gamma_iteration <= ?)",
                (gamma, int(iteration), int(id), int(iteration)),
            )

    def grades(self, id: int) -> dict[int, float]:
        """All recorded grades of a structure, {iteration: gamma}."""
        rows = self._query("SELECT iteration, gamma FROM grades WHERE structure_id=? ORDER BY iteration", (int(id),))
        return {int(it): float(g) for it, g in rows}

    # -- queries --------------------------------------------------------------------------------------------------
    @staticmethod
    def _where(status=None, source=None, iteration=None) -> tuple[str, list]:
        clauses, params = [], []
        for column, value, allowed in (("status", status, STATUSES), ("source", source, SOURCES)):
            if value is None:
                continue
            values = [value] if isinstance(value, str) else list(value)
            bad = [v for v in values if v not in allowed]
            if bad:
                raise InputError(f"{column} must be one of {allowed}, got {bad}")
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params += values
        if iteration is not None:
            clauses.append("iteration=?")
            params.append(int(iteration))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def ids(self, status=None, source=None, iteration=None) -> list[int]:
        """Ids (in id order) filtered by status, source (each a name or a list of names) and origin iteration."""
        where, params = self._where(status, source, iteration)
        return [int(r[0]) for r in self._query(f"SELECT id FROM structures{where} ORDER BY id", params)]

    def count(self, status=None, source=None, iteration=None) -> int:
        """Number of structures matching the filters (see :meth:`ids`)."""
        where, params = self._where(status, source, iteration)
        return int(self._query(f"SELECT COUNT(*) FROM structures{where}", params)[0][0])

    def atoms(self, ids: Sequence[int] | None = None, status=None, source=None) -> list[Atoms]:
        """Structures as ``Atoms`` (in the order of ``ids``, else id order). Labelled ones carry a
        ``SinglePointCalculator`` (energy, forces, stress). ``info`` holds id, source, iteration, scenario_id,
        status, gamma (and label_reason for failed ones, plus the stored ``extra`` keys)."""
        where, params = self._where(status, source)
        if ids is None:
            rows = self._query(f"SELECT {_ROW_COLUMNS} FROM structures{where} ORDER BY id", params)
        else:
            ids = [int(i) for i in ids]
            by_id: dict[int, tuple] = {}
            for chunk in _chunks(ids):
                cond = f"id IN ({','.join('?' * len(chunk))})"
                sql = f"SELECT {_ROW_COLUMNS} FROM structures" + (f"{where} AND {cond}" if where else f" WHERE {cond}")
                by_id.update({int(r[0]): r for r in self._query(sql, params + list(chunk))})
            if status is None and source is None:
                missing = [i for i in ids if i not in by_id]
                if missing:
                    raise InputError(f"no structure with id(s) {missing[:10]} in {self.path}")
            rows = [by_id[i] for i in ids if i in by_id]
        return [_row_to_atoms(r) for r in rows]

    def features(self, ids: Sequence[int]) -> np.ndarray:
        """Features of ``ids`` as a float32 array (len(ids), n_features)."""
        ids = [int(i) for i in ids]
        by_id: dict[int, tuple] = {}
        for chunk in _chunks(ids):
            q = f"SELECT id, features, n_features FROM structures WHERE id IN ({','.join('?' * len(chunk))})"
            by_id.update({int(r[0]): r for r in self._query(q, chunk)})
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise InputError(f"no structure with id(s) {missing[:10]} in {self.path}")
        without = [i for i in ids if by_id[i][1] is None]
        if without:
            raise InputError(f"structure(s) {without[:10]} have no stored features")
        widths = {by_id[i][2] for i in ids}
        if len(widths) > 1:
            raise InputError(f"structures have features of different lengths {sorted(widths)}")
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(by_id[i][1], dtype="<f4") for i in ids]).astype(np.float32)

    # -- resume bookkeeping -----------------------------------------------------------------------------------------
    def set_state(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key`` (replacing any previous one)."""
        text = _dumps(value, f"state {key!r}")
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO state (key, value, updated_at) VALUES (?,?,?) "
                "ON CONFLICT (key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
                (str(key), text, time.time()),
            )

    def get_state(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM state WHERE key=?", (str(key),))
        return json.loads(rows[0][0]) if rows else default


def _chunks(ids: Sequence[int], size: int = 500) -> Iterable[list[int]]:
    ids = list(ids)
    for k in range(0, len(ids), size):
        yield ids[k:k + size]


def _row_to_atoms(row: tuple) -> Atoms:
    (id_, numbers, positions, cell, pbc, source, iteration, scenario_id, extra, status, energy, forces, stress,
     label_reason, gamma, selected_iteration, selected_reason) = row
    atoms = Atoms(
        numbers=np.frombuffer(numbers, dtype="<i4").astype(int),
        positions=np.frombuffer(positions, dtype="<f8").reshape(-1, 3).copy(),
        cell=np.frombuffer(cell, dtype="<f8").reshape(3, 3).copy(),
        pbc=[bool(pbc & (1 << i)) for i in range(3)],
    )
    if extra:
        atoms.info.update(json.loads(extra))
    atoms.info.update(
        id=int(id_), source=source, iteration=int(iteration), scenario_id=scenario_id, status=status,
        gamma=None if gamma is None else float(gamma),
    )
    if selected_iteration is not None:
        atoms.info["selected_iteration"] = int(selected_iteration)
        atoms.info["selected_reason"] = selected_reason
    if status == "failed":
        atoms.info["label_reason"] = label_reason
    if status == "labelled":
        from ase.calculators.singlepoint import SinglePointCalculator

        props: dict[str, Any] = {
            "energy": float(energy),
            "free_energy": float(energy),
            "forces": np.frombuffer(forces, dtype="<f8").reshape(-1, 3).copy(),
        }
        if stress is not None:
            props["stress"] = np.frombuffer(stress, dtype="<f8").copy()
        atoms.calc = SinglePointCalculator(atoms, **props)
    return atoms
