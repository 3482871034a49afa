"""RunStore on a real SQLite file: dedup, status transitions, labels, grades, features, state, bad input, and
kill -9 safety (a child process labelling into the store is SIGKILLed at random points several times)."""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from ase.build import bulk

from alkit.errors import ConfigError, InputError
from alkit.label import LabelResult
from alkit.store import DB_NAME, RunStore


def _cells(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    base = bulk("Ti", "hcp", a=2.95, c=4.69).repeat((2, 2, 1))
    out = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(0, 0.05, a.positions.shape)
        out.append(a)
    return out


def _ok(atoms, energy=-1.5):
    n = len(atoms)
    return LabelResult("ok", energy, np.arange(3 * n, dtype=float).reshape(n, 3) * 0.01, np.arange(6) * 1e-3,
                       seconds=0.1)


def test_add_dedup_origin_features_extra(tmp_path):
    cells = _cells(3)
    feats = np.random.default_rng(1).normal(size=(3, 5))
    with RunStore(tmp_path / "run") as store:
        assert store.path == tmp_path / "run" / DB_NAME
        ids = store.add_structures(cells, "pool", 0, scenario_ids=["a", "b", "c"], features=feats,
                                   extra=[{"temperature": 300}, {"temperature": 600}, {}])
        assert len(set(ids)) == 3
        # the same structures again (and a duplicate inside one batch) never get a second row
        again = store.add_structures([cells[1], cells[0], cells[1]], "al", 2, scenario_ids=["x", "y", "z"])
        assert again == [ids[1], ids[0], ids[1]]
        assert store.count() == 3
        atoms = store.atoms(ids)
        assert [a.info["id"] for a in atoms] == ids
        assert atoms[1].info["source"] == "pool" and atoms[1].info["iteration"] == 0  # first origin kept
        assert atoms[1].info["scenario_id"] == "b" and atoms[1].info["temperature"] == 600
        assert atoms[0].info["status"] == "new" and atoms[0].info["gamma"] is None
        np.testing.assert_array_equal(atoms[2].numbers, cells[2].numbers)
        np.testing.assert_allclose(atoms[2].positions, cells[2].positions, rtol=0, atol=0)
        np.testing.assert_allclose(atoms[2].cell.array, cells[2].cell.array, rtol=0, atol=0)
        assert atoms[2].pbc.all() and atoms[2].calc is None
        got = store.features([ids[2], ids[0]])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, feats[[2, 0]].astype(np.float32))
        # a structure without features gets them when it is added again with features
        new_id = store.add_structures(_cells(1, seed=9), "scratch", 0)[0]
        with pytest.raises(InputError, match="no stored features"):
            store.features([new_id])
        store.add_structures(_cells(1, seed=9), "scratch", 0, features=np.ones((1, 5)))
        np.testing.assert_array_equal(store.features([new_id]), np.ones((1, 5), np.float32))
        assert store.count(source="pool") == 3 and store.count(source="scratch") == 1
        assert store.count(source=["pool", "scratch"], iteration=0) == 4


def test_status_transitions_and_labels(tmp_path):
    cells = _cells(4)
    store = RunStore(tmp_path)
    ids = store.add_structures(cells, "seed", 0)
    assert store.to_label() == []
    store.mark_selected(ids[:3], iteration=0, reason="direct seed")
    store.mark_selected(ids[:1], iteration=0, reason="again")  # idempotent for a selected one
    assert store.to_label() == ids[:3]
    assert store.count(status="selected") == 3 and store.count(status="new") == 1

    store.set_label(ids[0], _ok(cells[0], -7.25))
    store.set_label(ids[1], LabelResult.failure("SCF not converged (KohnShamConvergenceError)", seconds=3.0))
    assert store.to_label() == [ids[2]]  # resume picks up only the selected, unlabelled one
    with pytest.raises(InputError, match="never labelled twice"):
        store.set_label(ids[0], _ok(cells[0], -1.0))
    with pytest.raises(InputError, match="never labelled twice"):
        store.set_label(ids[1], _ok(cells[1]))
    with pytest.raises(InputError, match="already labelled or failed"):
        store.mark_selected([ids[0]], iteration=1, reason="x")
    with pytest.raises(InputError, match="no structure with id"):
        store.set_label(999, _ok(cells[0]))
    with pytest.raises(InputError, match="shape"):
        store.set_label(ids[2], LabelResult("ok", -1.0, np.zeros((2, 3)), None))
    assert store.to_label() == [ids[2]]  # the rejected label left no trace

    labelled = store.atoms(status="labelled")
    assert [a.info["id"] for a in labelled] == [ids[0]]
    a = labelled[0]
    assert a.get_potential_energy() == -7.25
    np.testing.assert_array_equal(a.get_forces(), _ok(cells[0]).forces)
    np.testing.assert_array_equal(a.get_stress(), _ok(cells[0]).stress)
    assert a.info["selected_reason"] == "direct seed"
    failed = store.atoms(status="failed")[0]
    assert failed.calc is None and "KohnSham" in failed.info["label_reason"]
    assert store.count(status="labelled") == 1 and store.count(status="failed") == 1

    store.set_grade(ids[0], 2.5, iteration=1)
    store.set_grade(ids[0], 7.0, iteration=2)
    store.set_grade(ids[0], 1.0, iteration=1)  # an older iteration does not replace the latest grade
    assert store.atoms([ids[0]])[0].info["gamma"] == 7.0
    assert store.grades(ids[0]) == {1: 1.0, 2: 7.0}

    store.set_state("stage", {"iteration": 2, "done": ["pool", "direct"]})
    store.set_state("stage", {"iteration": 3, "done": ["pool", "direct", "label"]})
    assert store.get_state("missing", default=42) == 42
    store.close()

    reopened = RunStore(tmp_path)  # everything is on disk
    assert reopened.get_state("stage") == {"iteration": 3, "done": ["pool", "direct", "label"]}
    assert reopened.count(status="labelled") == 1 and reopened.to_label() == [ids[2]]
    reopened.close()


def test_bad_input(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=str(blocker)):
        RunStore(blocker / "run")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConfigError, match="not writable"):
            RunStore(ro)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError, match="not an alkit run database"):
        RunStore(junk)
    store = RunStore(tmp_path / "ok")
    with pytest.raises(InputError, match="source must be one of"):
        store.add_structures(_cells(1), "dft", 0)
    with pytest.raises(InputError, match="features must have shape"):
        store.add_structures(_cells(2), "pool", 0, features=np.ones((3, 4)))
    with pytest.raises(InputError, match="status must be one of"):
        store.count(status="done")
    with pytest.raises(InputError, match="JSON"):
        store.set_state("x", object())
    store.close()
    with pytest.raises(InputError, match="closed"):
        store.count()


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from ase.build import bulk
    from alkit.label import CalculatorLabeller, label_many
    from alkit.store import RunStore

    run_dir, n = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(0)
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    cells = []
    for k in range(n):
        a = base.copy()
        a.positions += rng.normal(0, 0.04, a.positions.shape)
        cells.append(a)
    store = RunStore(run_dir)
    ids = store.add_structures(cells, "pool", 0)          # idempotent on a rerun (dedup by hash)
    new = set(store.ids(status="new"))
    store.mark_selected([i for i in ids if i in new], 0, "all")
    todo = store.to_label()
    print("ready", len(todo), flush=True)

    def on_result(i, result):
        store.set_label(todo[i], result)
        print("committed", todo[i], flush=True)

    label_many(CalculatorLabeller("ase.calculators.emt:EMT"), store.atoms(todo), on_result=on_result,
               progress=False)
    store.set_state("finished", True)
    print("done", flush=True)
    """
)


def _run_child(script, run_dir, n, kill_after, wait_ready=True):
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(n)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready = threading.Event()

    def reader():
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("ready"):
                ready.set()
        ready.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    if wait_ready:
        assert ready.wait(120), "child did not start"
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait(120)
    t.join(10)
    if kill_after is None:
        assert rc == 0, proc.stderr.read()
    return rc, lines


def test_kill9_resume_never_loses_or_duplicates_labels(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run_dir = tmp_path / "run"
    n = 200
    rng = random.Random(1234)
    committed: list[int] = []
    kills = 0
    for attempt in range(6):
        if attempt % 3 == 1:  # killed at any point from start-up (possibly inside the first transactions)
            rc, lines = _run_child(script, run_dir, n, kill_after=rng.uniform(0.2, 2.0), wait_ready=False)
        else:  # killed while labelling
            rc, lines = _run_child(script, run_dir, n, kill_after=rng.uniform(0.0, 0.25))
        committed += [int(x.split()[1]) for x in lines if x.startswith("committed")]
        if rc == -signal.SIGKILL:
            kills += 1
        # after every kill the database is consistent and holds every label the child reported as committed
        with sqlite3.connect(run_dir / DB_NAME) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            labelled = {r[0] for r in db.execute("SELECT id FROM structures WHERE status='labelled'")}
        assert set(committed) <= labelled
    assert kills >= 3
    rc, lines = _run_child(script, run_dir, n, kill_after=None)  # the last rerun finishes the campaign
    committed += [int(x.split()[1]) for x in lines if x.startswith("committed")]
    assert "done" in lines
    assert len(committed) == len(set(committed))  # no structure was labelled twice across all runs

    store = RunStore(run_dir)
    assert store.count() == n  # reruns added nothing twice
    assert store.count(status="labelled") == n and store.to_label() == []
    assert store.get_state("finished") is True
    with sqlite3.connect(run_dir / DB_NAME) as db:
        assert db.execute("SELECT COUNT(DISTINCT hash) FROM structures").fetchone()[0] == n
    from ase.calculators.emt import EMT

    for a in store.atoms(store.ids()[::37]):  # stored labels are the real EMT values of those structures
        ref = a.copy()
        ref.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), ref.get_forces(), atol=1e-9)
    store.close()
