"""End-to-end active-learning campaigns on the tiny Ti-H preset: real M3GNet pool, real DIRECT, real CHGNet labels,
real motep fits and MTP MD with gamma monitoring."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alkit.driver import ActiveLearningDriver, format_status, run_status
from alkit.errors import ConfigError, InputError
from alkit.events import read_events
from alkit.pool import load_pool, pool_digest
from alkit.recipe import build_config
from alkit.report import summarize_run

REPO = Path(__file__).resolve().parents[1]


def tiny(mode: str, **overrides):
    cfg = build_config("ti_h", "tiny", mode)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def _label_rows(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(run_dir / "store.sqlite")
    try:
        return con.execute("SELECT id, status FROM structures WHERE status IN ('labelled', 'failed')").fetchall()
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------------------------
# bad input: clear errors before the campaign starts


def test_unknown_element_is_rejected(tmp_path):
    cfg = tiny("direct", species=["Ti", "Hx"])
    with pytest.raises(ConfigError, match="unknown element"):
        ActiveLearningDriver(cfg, tmp_path / "run").run()
    assert not (tmp_path / "run" / "store.sqlite").exists()


def test_element_missing_from_species_is_rejected(tmp_path):
    cfg = tiny("direct", species=["Ti"])
    with pytest.raises(ConfigError, match=r"not in species"):
        ActiveLearningDriver(cfg, tmp_path / "run").run()


def test_empty_scenario_list_is_rejected(tmp_path):
    cfg = tiny("scratch", scenarios=[])
    with pytest.raises(ConfigError, match="scenario list is empty"):
        ActiveLearningDriver(cfg, tmp_path / "run").run()


def test_labeller_that_cannot_start_is_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv("ASE_VASP_COMMAND", raising=False)
    monkeypatch.delenv("VASP_COMMAND", raising=False)
    cfg = tiny("scratch", labeller="vasp")
    with pytest.raises(ConfigError, match="(?i)vasp"):
        ActiveLearningDriver(cfg, tmp_path / "run").run()
    assert not (tmp_path / "run" / "store.sqlite").exists()


def test_unwritable_run_dir_is_rejected(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="not writable"):
        ActiveLearningDriver(tiny("scratch"), blocker / "run").run()


def test_resuming_with_another_mode_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"mode": "direct", "species": ["Ti", "H"]}')
    with pytest.raises(ConfigError, match="refusing to resume"):
        ActiveLearningDriver(tiny("scratch"), run).run()


def test_resume_keeps_the_stored_scenarios_when_a_rebuild_differs_only_by_roundoff(tmp_path):
    """The recipe rebuilt on another CPU (or numpy) can differ in the last bits, which changes the exact digest (the
    digests of two machines differed; the cells hold coordinates of 1e-17 Å that should be 0). The run resumes on
    the structures it stored; a real change of a structure is still refused."""
    import json

    from alkit.campaign import scenarios_digest
    from alkit.scenarios import load_scenarios

    run = tmp_path / "run"
    ActiveLearningDriver(tiny("scratch"), run)._prepare()
    stored = load_scenarios(run / "scenarios.json")
    digest = json.loads((run / "config.json").read_text())["scenarios_sha256"]

    rebuilt = tiny("scratch")
    for s in rebuilt.scenarios:
        s.atoms.positions += 1e-12
    assert scenarios_digest(rebuilt.scenarios) != digest
    driver = ActiveLearningDriver(rebuilt, run)
    driver._prepare()
    assert scenarios_digest(driver.config.scenarios) == digest
    for got, want in zip(driver.config.scenarios, stored):
        assert np.array_equal(got.atoms.positions, want.atoms.positions)

    moved = tiny("scratch")
    moved.scenarios[0].atoms.positions[0] += 1e-3
    with pytest.raises(ConfigError, match="refusing to resume it with changed scenarios_sha256"):
        ActiveLearningDriver(moved, run)._prepare()


def test_pool_from_without_a_pool_is_refused_before_any_work(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="--pool-from .*no finished pool scenarios"):
        ActiveLearningDriver(tiny("direct"), tmp_path / "run", pool_from=tmp_path / "empty").run()
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_second_driver_on_the_same_run_is_refused(tmp_path):
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    with open(run / "lock", "a+") as held:  # what a running campaign holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another alkit process"):
            ActiveLearningDriver(tiny("scratch"), run).run()
    assert not (run / "store.sqlite").exists()


def test_status_of_a_non_run_dir(tmp_path):
    with pytest.raises(InputError, match="not an alkit run directory"):
        run_status(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# complete campaigns


def _check_campaign(run: Path, summary: dict, mode: str) -> None:
    assert summary["finished"] and summary["converged"], format_status(summary)
    assert summary["mode"] == mode
    iters = read_events(run, "iteration_done")
    assert len(iters) == summary["iterations_done"] >= 1
    last = iters[-1]
    assert last["n_stable"] == last["n_scenarios"] == 4
    assert all(v == 1.0 for v in last["stable_by_temperature"].values())
    # cumulative labels never decrease and equal the store's count at the end
    cum = [e["labels_cumulative"] for e in iters]
    assert cum == sorted(cum) and cum[-1] == summary["labelled"]
    # every structure labelled at most once, and each iteration has a potential and an active set
    rows = _label_rows(run)
    assert len(rows) == len({r[0] for r in rows})
    for e in iters:
        d = run / "iterations" / f"iter_{e['iteration']:03d}"
        assert (d / "pot.mtp").is_file() and (d / "state.als").is_file()
    fits = read_events(run, "fit")
    assert all(np.isfinite(f["train"]["energy_rmse"]) for f in fits)
    explore = read_events(run, "explore")[-1]
    assert all(s["stable"] and s["steps_done"] == s["steps_total"] for s in explore["scenarios"])
    assert all(s["max_gamma"] <= 3.0 for s in explore["scenarios"])


@pytest.mark.slow
def test_direct_seeded_campaign_reaches_all_stable(tmp_path, model_dir):
    run = tmp_path / "direct"
    summary = ActiveLearningDriver(tiny("direct", model_dir=str(model_dir)), run).run()
    _check_campaign(run, summary, "direct")
    assert summary["pool"] > 0
    direct = read_events(run, "direct_fitted")[0]
    assert direct["n_pcs"] >= 1 and direct["n_selected"] == 4
    assert (run / "direct" / "pcs.npz").is_file()
    seeds = read_events(run, "labels")[0]
    assert seeds["added"] + seeds["failed"] == 4
    # the seed alone is not enough here: at least one AL iteration re-selected through the fitted DIRECT sampler
    assert summary["iterations_done"] >= 2
    assert any(e["stage"] == "select" for e in read_events(run, "stage"))
    # re-running a finished campaign does no new work and changes nothing
    n_events = len(read_events(run))
    again = ActiveLearningDriver(tiny("direct", model_dir=str(model_dir)), run).run()
    assert again["labelled"] == summary["labelled"]
    assert len(read_events(run)) == n_events
    assert "converged" in format_status(again)
    # another seed on the same pool (alkit run --pool-from): no pool MD, no re-encoding, the same pool structures
    other = tmp_path / "direct-seed1"
    s1 = ActiveLearningDriver(tiny("direct", model_dir=str(model_dir), seed=1, max_iterations=1), other,
                              pool_from=run).run()
    adopted = read_events(other, "pool_adopted")[0]
    pool_files = sorted(p.name for p in (run / "pool").glob("*.extxyz"))
    assert len(adopted["scenarios"]) == 4 and adopted["cached_vectors"] >= summary["pool"]
    assert sorted(p.name for p in (other / "pool").glob("*.extxyz")) == pool_files
    assert all((other / "pool" / f).read_bytes() == (run / "pool" / f).read_bytes() for f in pool_files)
    assert s1["pool"] == summary["pool"] and s1["labelled"] >= 1
    # and the logs show it: both runs' pool digests are that of the pool's content
    digests = [read_events(r, "pool_built")[0]["digest"] for r in (run, other)]
    assert digests[0] == digests[1] == pool_digest(load_pool(run / "pool"))
    assert pool_digest(load_pool(run / "pool")[1:]) != digests[0]


@pytest.mark.slow
def test_scratch_campaign_reaches_all_stable(tmp_path):
    run = tmp_path / "scratch"
    summary = ActiveLearningDriver(tiny("scratch"), run).run()
    _check_campaign(run, summary, "scratch")
    assert summary["pool"] == 0  # from scratch needs no pool
    assert summarize_run(run)["pool_used"] is False  # so alkit compare says "no pool", not "unknown pool"
    seeds = read_events(run, "labels")[0]
    assert seeds["added"] + seeds["failed"] == 4  # the four starting structures


# ---------------------------------------------------------------------------------------------------------------
# failures and kills


@pytest.mark.slow
def test_labeller_failures_are_survived(tmp_path):
    # CHGNet labels, except that structures with exactly 8 atoms fail (an injected, deterministic DFT failure)
    cfg = tiny("scratch", labeller="flaky_calc:FlakyCHGNet", labeller_kwargs={"fail_natoms": 8},
               max_iterations=2)
    summary = ActiveLearningDriver(cfg, tmp_path / "run").run()
    assert summary["failed"] >= 2  # the two 8-atom Ti starting cells
    assert summary["labelled"] >= 2  # the two Ti8H2 cells, then whatever AL added
    assert read_events(tmp_path / "run", "fit")  # the campaign went on to fit a potential without the failures
    labels = read_events(tmp_path / "run", "labels")
    assert labels[0]["failed"] >= 2
    assert summary["iterations_done"] >= 1


@pytest.mark.slow
def test_kill_and_resume_keeps_every_label_exactly_once(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "alkit.cli", "run", "ti_h", "--preset", "tiny", "--mode", "scratch",
           "--run-dir", str(run)]
    rng = np.random.default_rng(7)
    events = run / "events.jsonl"

    def n_events() -> int:
        return sum(1 for _ in open(events)) if events.exists() else 0

    # Kill at random points of the campaign's own progress (not wall time, which depends on the machine's load):
    # after a random number of new event-log records, plus a random fraction of a second into the next stage. The
    # tiny campaign writes ~25 records in a few seconds, so three kills must fit into them.
    kills = 0
    for _ in range(3):
        target = n_events() + int(rng.integers(1, 5))
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        while proc.poll() is None and n_events() < target:
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0.0, 0.3)))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert kills == 3
    rows = _label_rows(run)
    assert len(rows) == len({r[0] for r in rows}) > 0
    s = run_status(run)
    assert s["converged"] and s["queued"] == 0
    # the event log has one iteration_done per iteration, in order
    its = [e["iteration"] for e in read_events(run, "iteration_done")]
    assert its == sorted(set(its))
