"""Run integrity on the real tiny Ti-H campaign: every configuration value is checked before any work, the stored
configuration is a contract on resume, errors in workers, commits under the serial executor, extending a finished
run, a torn event log, corrupt potentials in every command, reproducibility across executors, and the CLI's
small manners (Ctrl-C, --version, --help, unwritable outputs)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alkit.cli import main
from alkit.driver import ActiveLearningDriver, format_status, run_status
from alkit.errors import ConfigError, InputError
from alkit.events import EventLog, read_events
from alkit.recipe import build_config

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def tiny(mode: str = "scratch", **overrides):
    cfg = build_config("ti_h", "tiny", mode)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{TESTS}")


def _labels(run_dir: Path) -> list[tuple]:
    con = sqlite3.connect(run_dir / "store.sqlite")
    try:
        return con.execute("SELECT id, status FROM structures WHERE status IN ('labelled', 'failed')").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def one_iteration(tmp_path_factory) -> Path:
    """A tiny from-scratch campaign stopped by its iteration cap after iteration 0 (not converged)."""
    run = tmp_path_factory.mktemp("one") / "run"
    summary = ActiveLearningDriver(tiny(max_iterations=1), run).run()
    assert summary["finished"] and not summary["converged"] and summary["reason"] == "max_iterations reached"
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    (dst / "lock").unlink(missing_ok=True)
    return dst


# ---------------------------------------------------------------------------------------------------------------
# 1. a changed configuration on resume is refused (the CLI's --labeller override included)


def test_changed_configuration_on_resume_is_refused(one_iteration, tmp_path):
    run = _copy(one_iteration, tmp_path)
    before = (run / "config.json").read_text()
    n_labels = len(_labels(run))
    cfg = tiny(max_iterations=1, mtp_level=10, n_clusters=2, cutoff=4.0, labeller="flaky_calc:FlakyCHGNet")
    with pytest.raises(ConfigError) as err:
        ActiveLearningDriver(cfg, run).run()
    msg = str(err.value)
    for field, old, new in (("mtp_level", "6", "10"), ("cutoff", "5.0", "4.0"), ("n_clusters", "4", "2"),
                            ("labeller", '"chgnet"', '"flaky_calc:FlakyCHGNet"')):
        assert f"{field}: {old} -> {new}" in msg
    assert "\n" not in msg
    assert (run / "config.json").read_text() == before
    assert len(_labels(run)) == n_labels  # nothing labelled with the other labeller
    # the CLI's overrides go through the same contract
    rc = main(["run", "ti_h", "--preset", "tiny", "--mode", "scratch", "--run-dir", str(run), "--max-iterations", "1",
               "--labeller", "gpaw-cheap"])
    assert rc == 2
    assert (run / "config.json").read_text() == before


def test_safe_fields_may_change_and_are_recorded(one_iteration, tmp_path):
    run = _copy(one_iteration, tmp_path)
    cfg = tiny(max_iterations=1, label_timeout=600.0, fit_threads=1)
    ActiveLearningDriver(cfg, run).run()
    stored = json.loads((run / "config.json").read_text())
    assert stored["label_timeout"] == 600.0 and stored["fit_threads"] == 1
    changes = read_events(run, "config_changed")[-1]["changes"]
    assert ["label_timeout", None, 600.0] in changes and ["fit_threads", 2, 1] in changes


def test_config_round_trips_through_json(one_iteration):
    from alkit.campaign import ALConfig
    from alkit.scenarios import load_scenarios

    stored = json.loads((one_iteration / "config.json").read_text())
    back = ALConfig.from_json(stored, load_scenarios(one_iteration / "scenarios.json"),
                              load_scenarios(one_iteration / "pool_scenarios.json"))
    assert back.to_json() == stored
    assert back.to_json() == tiny(max_iterations=1).to_json()


# ---------------------------------------------------------------------------------------------------------------
# 2./3. every bad value is found before any work, in seconds, with one line naming the field

BAD_VALUES = [
    ("explore_engine", "lamps", "explore_engine = 'lamps'"),
    ("gamma_select", 0.5, "gamma_select = 0.5"),
    ("mtp_level", 7, "mtp_level = 7"),
    ("mtp_level", 99, "mtp_level = 99"),
    ("cutoff", -1.0, "cutoff = -1.0"),
    ("grade_mode", "atoms", "grade_mode = 'atoms'"),
    ("grade_parameters", "radial", "grade_parameters = 'radial'"),
    ("loss_weights", (1.0, -0.01, 0.0), "loss_weights"),
    ("bfgs_maxiter", -1, "bfgs_maxiter = -1"),
    ("encoder", "soap", "encoder = 'soap'"),
    ("clustering", "dbscan", "clustering = 'dbscan'"),
    ("label_timeout", -5.0, "label_timeout = -5.0"),
    ("max_collect_per_scenario", 0, "max_collect_per_scenario = 0"),
    ("executor", "slurm", "executor = 'slurm'"),
    ("n_workers", 0, "n_workers = 0"),
    ("fit_engine", "mlip3", "fit_engine = 'mlip3'"),
    ("fit_tol", -1e-3, "fit_tol = -0.001"),
    ("explore_steps", 0, "explore_steps = 0"),
    ("al_budget", 0, "al_budget = 0"),
    ("max_temperature_factor", 0.5, "max_temperature_factor = 0.5"),
    ("labeller", "castep", "castep"),
    ("pool_potential", "mace", "mace"),
]


@pytest.mark.parametrize("field,value,expect", BAD_VALUES, ids=[f"{f}={v}" for f, v, _ in BAD_VALUES])
def test_bad_values_stop_the_run_before_any_work(field, value, expect, tmp_path):
    cfg = tiny("direct", **{field: value})
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        ActiveLearningDriver(cfg, tmp_path / "run").run()
    seconds = time.perf_counter() - t0
    assert expect in str(err.value) and "\n" not in str(err.value)
    assert seconds < 20
    assert not (tmp_path / "run" / "store.sqlite").exists() and not (tmp_path / "run" / "pool").exists()
    assert not (tmp_path / "run" / "config.json").exists()


def test_lammps_engine_needs_periodic_scenarios(tmp_path):
    from ase import Atoms

    from alkit.scenarios import Scenario

    cfg = tiny(explore_engine="lammps")
    mol = Scenario(id="h2-gas", atoms=Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]]), temperature=300.0,
                   steps=10, ensemble="nvt")
    cfg.scenarios = cfg.scenarios + [mol]
    with pytest.raises(ConfigError, match="fully periodic.*h2-gas"):
        ActiveLearningDriver(cfg, tmp_path / "run").run()


# ---------------------------------------------------------------------------------------------------------------
# 2. an input error inside a worker stops the campaign (nothing stored); a crash is an unstable scenario with a reason


def test_input_error_in_a_worker_stops_the_campaign(one_iteration, tmp_path, monkeypatch):
    import alkit.driver as driver

    run = _copy(one_iteration, tmp_path)

    def bad_worker(*args, **kwargs):
        raise InputError("starting structure has atoms 0.100 Å apart")

    monkeypatch.setattr(driver, "_explore_worker", bad_worker)
    with pytest.raises(ConfigError, match="failed on its input: starting structure"):
        ActiveLearningDriver(tiny(max_iterations=3), run).run()  # extends the run: iteration 1 explores again
    from alkit.store import RunStore

    st = RunStore(run / "store.sqlite")
    try:
        assert all(st.get_state(f"explore:1:{s.id}") is None for s in tiny().scenarios)  # no stale record
    finally:
        st.close()


def test_crashed_md_is_unstable_with_its_reason(one_iteration, tmp_path, monkeypatch):
    import alkit.driver as driver

    run = _copy(one_iteration, tmp_path)

    def crashing_worker(*args, **kwargs):
        raise RuntimeError("LAMMPS: Out of range atoms - cannot compute PPPM")

    monkeypatch.setattr(driver, "_explore_worker", crashing_worker)
    summary = ActiveLearningDriver(tiny(max_iterations=2), run).run()
    assert not summary["converged"]
    assert summary["unstable_iteration"] == 1 and len(summary["unstable"]) == 4
    assert all("crash: RuntimeError: LAMMPS: Out of range" in u["stop_reason"] for u in summary["unstable"])
    text = format_status(summary)
    assert "crash: RuntimeError" in text
    from alkit.report import build_report

    page = build_report(run).read_text()
    assert "Scenarios in iteration 1" in page and "crash: RuntimeError: LAMMPS: Out of range" in page


# ---------------------------------------------------------------------------------------------------------------
# 4. the serial executor commits each label as it arrives: a kill loses only the label in progress


def test_serial_executor_commits_each_label_before_the_next(tmp_path):
    run = tmp_path / "run"
    calls = tmp_path / "calls.log"
    script = (
        "import sys\n"
        "from alkit.recipe import build_config\n"
        "from alkit.driver import ActiveLearningDriver\n"
        "cfg = build_config('ti_h', 'tiny', 'scratch')\n"
        f"cfg.labeller, cfg.labeller_kwargs = 'flaky_calc:SlowCHGNet', {{'delay': 1.5, 'log_path': {str(calls)!r}}}\n"
        "cfg.executor = 'serial'\n"
        f"ActiveLearningDriver(cfg, {str(run)!r}).run()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < 240:
            try:
                if (run / "store.sqlite").exists() and len(_labels(run)) >= 1:
                    break
            except sqlite3.OperationalError:  # the store is being created
                pass
            assert proc.poll() is None, "the campaign ended before the kill"
            time.sleep(0.05)
        n_committed = len(_labels(run))
        assert 1 <= n_committed < 4  # committed while the batch of 4 starting structures was still being labelled
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished_before = calls.read_text().splitlines()
    assert len(finished_before) == n_committed  # every finished calculation was committed
    done = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = calls.read_text().splitlines()
    assert len(lines) == len(set(lines))  # nothing labelled twice: the committed labels were not recomputed
    assert run_status(run)["converged"]


# ---------------------------------------------------------------------------------------------------------------
# 5. extending a finished run re-opens it; status, report and exit code show the new outcome


def test_extending_a_finished_run_reports_the_new_outcome(one_iteration, tmp_path, capsys):
    from alkit.report import summarize_run

    run = _copy(one_iteration, tmp_path)
    assert not run_status(run)["converged"]
    rc = main(["run", "ti_h", "--preset", "tiny", "--mode", "scratch", "--run-dir", str(run)])  # max_iterations 10
    out = capsys.readouterr().out
    s = run_status(run)
    assert rc == 0 and s["finished"] and s["converged"] and s["reason"] == "all scenarios stable"
    assert "finished: converged" in out
    assert summarize_run(run)["converged"] is True
    assert read_events(run, "run_reopened")[-1]["previous"]["reason"] == "max_iterations reached"
    assert json.loads((run / "config.json").read_text())["max_iterations"] == 10
    # a second identical run changes nothing
    assert main(["run", "ti_h", "--preset", "tiny", "--mode", "scratch", "--run-dir", str(run)]) == 0
    assert len(read_events(run, "run_reopened")) == 1


# ---------------------------------------------------------------------------------------------------------------
# 6. a torn last line of the event log does not swallow the next record


def test_torn_event_line_does_not_swallow_the_next_record(one_iteration, tmp_path):
    run = _copy(one_iteration, tmp_path)
    events = run / "events.jsonl"
    with open(events, "a") as fh:
        fh.write('{"time": 1, "event": "stage", "iter')  # a write cut by a kill
    EventLog(run).emit("run_finished", converged=True, iterations=7, reason="test record")
    assert read_events(run, "run_finished")[-1]["reason"] == "test record"
    s = run_status(run)
    assert s["finished"] and s["reason"] == "test record"


# ---------------------------------------------------------------------------------------------------------------
# 7. every command that reads a potential validates it the same way


@pytest.fixture(scope="module")
def potential(one_iteration) -> Path:
    return one_iteration / "iterations" / "iter_000" / "pot.mtp"


@pytest.mark.parametrize("command", ["grade", "md", "calc-efs", "select-add"])
def test_corrupt_potentials_are_refused_by_every_command(command, potential, tmp_path, capsys):
    from ase.build import bulk
    from ase.io import write

    good = potential.read_text()
    start = bulk("Ti", "hcp", a=2.95, c=4.68) * (2, 2, 1)
    write(tmp_path / "s.extxyz", [start])
    from alkit.store import RunStore

    st = RunStore(potential.parents[2] / "store.sqlite")
    try:
        write(tmp_path / "train.extxyz", st.atoms(status="labelled"))
    finally:
        st.close()
    import re

    cases = {
        "species3.mtp": good.replace("species_coeffs = {", "species_coeffs = {0.5, "),  # 3 for 2 species
        "nan.mtp": re.sub(r"(moment_coeffs = \{)[^,]+", r"\g<1>nan", good, count=1),
        "garbage.mtp": "MTP\nthis is not a potential\n",
    }
    assert cases["nan.mtp"] != good
    for name, text in cases.items():
        pot = tmp_path / name
        pot.write_text(text)
        args = {
            "grade": ["mtp", "grade", str(pot), str(tmp_path / "train.extxyz"), str(tmp_path / "s.extxyz"),
                      "--out", str(tmp_path / "g.extxyz")],
            "md": ["mtp", "md", str(pot), str(tmp_path / "s.extxyz"), "--als", str(tmp_path / "x.als"),
                   "--temperature", "300", "--steps", "5", "--out", str(tmp_path / "c.extxyz")],
            "calc-efs": ["mtp", "calc-efs", str(pot), str(tmp_path / "s.extxyz"), "--out", str(tmp_path / "e.extxyz")],
            "select-add": ["mtp", "select-add", str(pot), str(tmp_path / "train.extxyz"), str(tmp_path / "s.extxyz"),
                           "--out", str(tmp_path / "n.extxyz"), "--max", "2"],
        }[command]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and name in err[0] and "corrupt" in err[0], err
        assert "does not record its species" not in err[0]


# ---------------------------------------------------------------------------------------------------------------
# 8. reproducibility: the same configuration gives the same campaign with any executor and worker count


def _campaign_fingerprint(run: Path) -> dict:
    from alkit.io import structure_hash
    from alkit.store import RunStore

    st = RunStore(run / "store.sqlite")
    try:
        labels = sorted((structure_hash(a), round(a.calc.results["energy"], 8)) for a in st.atoms(status="labelled"))
    finally:
        st.close()
    pots = [p.read_text() for p in sorted(run.glob("iterations/iter_*/pot.mtp"))]
    return {"labels": labels, "potentials": pots, "status": run_status(run)["iterations"]}


@pytest.mark.slow
def test_same_campaign_with_one_and_two_workers(tmp_path):
    a = tmp_path / "serial"
    b = tmp_path / "process2"
    ActiveLearningDriver(tiny(executor="serial", n_workers=1), a).run()
    ActiveLearningDriver(tiny(executor="process", n_workers=2), b).run()
    fa, fb = _campaign_fingerprint(a), _campaign_fingerprint(b)
    assert fa["labels"] == fb["labels"]
    assert fa["potentials"] == fb["potentials"]
    strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in fa["status"]]
    assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in fb["status"]]


# ---------------------------------------------------------------------------------------------------------------
# 9. the small things


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "alkit.cli", "run", "ti_h", "--preset", "tiny", "--mode", "scratch",
                             "--run-dir", str(run)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    t0 = time.monotonic()
    while not (run / "events.jsonl").exists() and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-4000:]  # stderr kept: a full-suite run once saw -2 (SIGINT not handled)
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "alkit: interrupted; re-run the same command to resume"


def test_cli_logs_alkit_at_info_and_other_libraries_from_warning():
    # torch's atexit FakeTensor statistics (INFO) once came after the "interrupted" line; pymatgen's grain-boundary
    # builder wrote ~130 INFO lines into every campaign log
    script = ("import logging, sys; from alkit.cli import _configure_logging; _configure_logging(sys.argv[1] == '-v');"
              "logging.getLogger('pymatgen.core.interface').info('lib-info');"
              "logging.getLogger('torch').warning('lib-warning');"
              "logging.getLogger('alkit.driver').info('alkit-info'); logging.getLogger('alkit.driver').debug('alkit-debug')")
    quiet = subprocess.run([sys.executable, "-c", script, "-q"], env=_env(), capture_output=True, text=True, check=True)
    assert [line.split(": ", 1)[1] for line in quiet.stderr.splitlines()] == ["lib-warning", "alkit-info"]
    loud = subprocess.run([sys.executable, "-c", script, "-v"], env=_env(), capture_output=True, text=True, check=True)
    assert [line.split(": ", 1)[1] for line in loud.stderr.splitlines()] == ["lib-info", "lib-warning", "alkit-info",
                                                                             "alkit-debug"]


def test_status_keeps_stage_times_after_a_resume(one_iteration, tmp_path):
    from alkit.store import RunStore

    run = _copy(one_iteration, tmp_path)
    st = RunStore(run / "store.sqlite")
    try:
        stored = sum(st.get_state("wall:0").values())
    finally:
        st.close()
    assert run_status(run)["iterations"][0]["wall_s"] == round(stored, 1) > 0


def test_status_shows_pool_progress(tmp_path):
    from alkit.pool import run_pool

    cfg = tiny("direct")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(cfg.to_json()))
    run_pool(cfg.pool_scenarios[:1], run / "pool", potential="m3gnet", progress=False)
    s = run_status(run)
    assert s["pool_progress"] == {"scenarios": 1, "done": 1, "running": 0}
    assert "pool MD: 1/1 scenarios done" in format_status(s)


def test_cli_version_help_and_unwritable_outputs(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("alkit ")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    assert "ti_h" in out and "--preset quick" in out and "--preset tiny" in out and "al" in out
    X = np.random.default_rng(0).normal(size=(200, 8))
    np.save(tmp_path / "X.npy", X)
    t0 = time.perf_counter()
    rc = main(["select", str(tmp_path / "X.npy"), "--clusters", "5", "--out", "/proc/x/sel.json"])
    err = capsys.readouterr()
    assert rc == 2 and time.perf_counter() - t0 < 5
    assert len(err.err.strip().splitlines()) == 1 and "/proc/x/sel.json" in err.err
    assert "selected:" not in err.out  # refused before the fit


def test_report_names_recipe_and_preset(one_iteration):
    from alkit.report import summarize_run

    s = summarize_run(one_iteration)
    assert (s["recipe"], s["preset"]) == ("ti_h", "tiny")
