"""The configuration-pool campaign: streaming snapshots, resume after a kill, blow-ups, executors (real process pool
and a real Dask LocalCluster), bad input, CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from alkit.cli import main as cli_main
from alkit.errors import ConfigError, InputError, ModelNotFoundError
from alkit.executors import SerialExecutor, make_executor
from alkit.pool import (PoolReport, load_pool, pool_status, read_status, run_pool, scenario_paths, scenario_stem)
from alkit.scenarios import Scenario, save_scenarios

EMT = "ase.calculators.emt:EMT"
REPO = Path(__file__).resolve().parents[1]


def cu(a=3.6):
    return bulk("Cu", "fcc", a=a, cubic=True)


def cu_scenarios(n=3, steps=40, interval=10):
    temps = [300, 800, 1500, 600]
    ens = ["nvt", "npt", "npt", "nvt"]
    return [Scenario(f"cu-{i}/T{temps[i]}", cu(), temps[i], ensemble=ens[i], steps=steps, snapshot_interval=interval)
            for i in range(n)]


def frames_by_id(frames):
    out: dict[str, list] = {}
    for f in frames:
        out.setdefault(f.info["scenario_id"], []).append(f)
    return out


NAN_CALC = textwrap.dedent(
    """
    import numpy as np
    from ase.calculators.emt import EMT

    class NaNOnGold(EMT):
        '''EMT that returns NaN forces for structures containing Au after a few calculations.'''
        def __init__(self, **kw):
            super().__init__(**kw)
            self.n = 0
        def calculate(self, atoms=None, properties=("energy",), system_changes=("positions",)):
            super().calculate(atoms, properties, system_changes)
            self.n += 1
            if 79 in self.atoms.numbers and self.n > 12:
                self.results["forces"] = np.full_like(self.results["forces"], np.nan)
    """
)


def test_pool_streams_snapshots_and_skips_finished(tmp_path):
    scen = cu_scenarios(3)
    rep = run_pool(scen, tmp_path, potential=EMT, executor="process", n_workers=2, progress=False)
    assert isinstance(rep, PoolReport)
    assert sorted(rep.ran) == sorted(s.id for s in scen) and rep.n_completed == 3 and not rep.failed
    frames = load_pool(tmp_path)
    assert len(frames) == 3 * 4 == rep.n_snapshots
    by_id = frames_by_id(frames)
    assert list(by_id) == [s.id for s in scen]  # manifest order
    for s in scen:
        fr = by_id[s.id]
        assert [f.info["step"] for f in fr] == [10, 20, 30, 40]
        for f in fr:
            assert f.info["temperature"] == s.temperature
            assert np.isfinite(f.get_potential_energy())
            assert f.get_forces().shape == (4, 3) and f.get_stress().shape == (6,)
        st = read_status(tmp_path, s.id)
        assert st["status"] == "completed" and st["steps_done"] == 40 and st["n_snapshots"] == 4
    npt = by_id[scen[1].id]
    assert not np.allclose(npt[-1].cell.array, scen[1].atoms.cell.array)
    assert "/" not in scenario_stem(scen[0].id)
    assert load_pool(tmp_path, [scen[2].id])[0].info["scenario_id"] == scen[2].id
    with pytest.raises(InputError, match="no snapshots"):
        load_pool(tmp_path, ["nope"])

    mtimes = {s.id: scenario_paths(tmp_path, s.id)["frames"].stat().st_mtime_ns for s in scen}
    rep2 = run_pool(scen, tmp_path, potential=EMT, executor="serial", progress=False)
    assert rep2.ran == [] and sorted(rep2.skipped) == sorted(mtimes)
    assert {s.id: scenario_paths(tmp_path, s.id)["frames"].stat().st_mtime_ns for s in scen} == mtimes

    # A lost done-marker + a partial, torn file: that scenario alone restarts cleanly, no duplicated frames.
    victim = scen[1].id
    p = scenario_paths(tmp_path, victim)
    p["status"].unlink()
    lines = p["frames"].read_text().splitlines(keepends=True)
    p["frames"].write_text("".join(lines[: 6 + 3]) + "4\nLattice=\"3.6 0 0")  # 1 frame + a torn one
    assert len(load_pool(tmp_path, [victim])) == 1  # the torn frame is dropped, not an error
    assert {r["scenario_id"]: r["status"] for r in pool_status(tmp_path)}[victim] == "partial"
    with make_executor("serial") as ex:
        assert isinstance(ex, SerialExecutor)
        rep3 = run_pool(scen, tmp_path, potential=EMT, executor=ex, progress=False)
    assert rep3.ran == [victim]
    again = frames_by_id(load_pool(tmp_path))
    assert [f.info["step"] for f in again[victim]] == [10, 20, 30, 40]
    assert sum(len(v) for v in again.values()) == 12
    for s in scen:
        if s.id != victim:
            assert scenario_paths(tmp_path, s.id)["frames"].stat().st_mtime_ns == mtimes[s.id]

    # A changed scenario definition invalidates its marker.
    changed = list(scen)
    changed[0] = Scenario(scen[0].id, cu(), 300, ensemble="nvt", steps=20, snapshot_interval=10)
    rep4 = run_pool(changed, tmp_path, potential=EMT, executor="serial", progress=False)
    assert rep4.ran == [scen[0].id] and len(load_pool(tmp_path, [scen[0].id])) == 2


def test_killed_campaign_keeps_frames_and_resumes(tmp_path):
    scen = [Scenario("short", cu(), 300, ensemble="nvt", steps=20, snapshot_interval=10),
            Scenario("long", cu(), 300, ensemble="nvt", steps=800, snapshot_interval=10)]
    sfile = tmp_path / "scen.json"
    save_scenarios(sfile, scen)
    out = tmp_path / "pool"
    script = (f"from alkit.pool import run_pool\n"
              f"run_pool({str(sfile)!r}, {str(out)!r}, potential={EMT!r}, executor='serial', progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    progress = scenario_paths(out, "long")["progress"]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if int(progress.read_text() or 0) >= 100:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        assert proc.poll() is None, "the campaign ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert read_status(out, "short")["status"] == "completed"
    assert read_status(out, "long") is None
    partial = load_pool(out, ["long"])
    assert len(partial) >= 10 and partial[0].info["step"] == 10  # what was produced before the kill was kept
    short_mtime = scenario_paths(out, "short")["frames"].stat().st_mtime_ns

    rep = run_pool(sfile, out, potential=EMT, executor="serial", progress=False)
    assert rep.ran == ["long"] and rep.skipped == ["short"]
    steps = [f.info["step"] for f in load_pool(out, ["long"])]
    assert steps == list(range(10, 801, 10))
    assert scenario_paths(out, "short")["frames"].stat().st_mtime_ns == short_mtime
    assert not progress.exists()


def test_blowup_stops_only_that_scenario(tmp_path, monkeypatch):
    (tmp_path / "nan_calc_mod.py").write_text(NAN_CALC)
    monkeypatch.syspath_prepend(str(tmp_path))
    gold = bulk("Au", "fcc", a=4.08, cubic=True)
    scen = [Scenario("cu", cu(), 300, ensemble="nvt", steps=30, snapshot_interval=5),
            Scenario("au", gold, 300, ensemble="nvt", steps=30, snapshot_interval=5),
            Scenario("cu-npt", cu(), 500, ensemble="npt", steps=30, snapshot_interval=5)]
    out = tmp_path / "pool"
    rep = run_pool(scen, out, potential="nan_calc_mod:NaNOnGold", executor="serial", progress=False)
    assert rep.n_completed == 2 and rep.n_blowup == 1
    st = read_status(out, "au")
    assert st["status"] == "blowup" and "non-finite forces" in st["reason"] and 0 < st["steps_done"] < 30
    from ase.io import read

    last = read(scenario_paths(out, "au")["last_good"])
    assert np.all(np.isfinite(last.get_forces())) and last.info["step"] == st["steps_done"]
    assert "non-finite" in last.info["blowup_reason"]
    au_frames = load_pool(out, ["au"])
    assert [f.info["step"] for f in au_frames] == list(range(5, st["steps_done"] + 1, 5))
    assert len(load_pool(out, ["cu"])) == 6 and len(load_pool(out, ["cu-npt"])) == 6
    # a blow-up is a finished scenario: not re-run
    rep2 = run_pool(scen, out, potential="nan_calc_mod:NaNOnGold", executor="serial", progress=False)
    assert rep2.ran == [] and rep2.n_blowup == 1


def _ti_scenarios():
    ti = bulk("Ti", "hcp", a=2.95, c=4.68)
    ti2 = ti.repeat((1, 1, 2))
    return [Scenario("ti-nvt-1000", ti, 1000, ensemble="nvt", steps=10, snapshot_interval=5),
            Scenario("ti-npt-300", ti2, 300, ensemble="npt", steps=10, snapshot_interval=5),
            Scenario("ti-npt-2000", ti, 2000, ensemble="npt", steps=10, snapshot_interval=5)]


def test_m3gnet_pool_dask_localcluster_matches_process_pool(tmp_path, model_dir):
    scen = _ti_scenarios()
    rep_p = run_pool(scen, tmp_path / "proc", potential="m3gnet", model_dir=model_dir, executor="process",
                     n_workers=2, progress=False)
    with make_executor("dask", n_workers=2) as ex:
        from distributed import Client

        rep_d = run_pool(scen, tmp_path / "dask", potential="m3gnet", model_dir=model_dir, executor=ex, progress=False)
        workers = Client.current().scheduler_info()["workers"]
        assert len(workers) == 2
    assert rep_p.n_completed == rep_d.n_completed == 3
    fp, fd = frames_by_id(load_pool(tmp_path / "proc")), frames_by_id(load_pool(tmp_path / "dask"))
    assert {k: len(v) for k, v in fp.items()} == {k: len(v) for k, v in fd.items()} == {s.id: 2 for s in scen}
    for sid in fp:  # same seeds, same code, one torch thread: the same trajectories
        for a, b in zip(fp[sid], fd[sid]):
            assert np.allclose(a.positions, b.positions, atol=1e-5)
            assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)
            assert a.info["potential"] == "m3gnet"


def test_bad_input_fails_before_any_md(tmp_path, model_dir):
    out = tmp_path / "pool"
    good = cu_scenarios(1)
    with pytest.raises(ConfigError, match="unknown potential 'm3gnat'"):
        run_pool(good, out, potential="m3gnat", executor="serial")
    with pytest.raises(ModelNotFoundError):
        run_pool(good, out, potential="m3gnet", model_dir=tmp_path / "no-models", executor="serial")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"scenarios": [ {"id": "x", ')
    with pytest.raises(ConfigError, match="not valid JSON"):
        run_pool(bad_json, out, potential=EMT)
    no_atoms = tmp_path / "no_atoms.json"
    no_atoms.write_text(json.dumps({"scenarios": [{"id": "x", "temperature": 300}]}))
    with pytest.raises(ConfigError, match="needs 'id' and 'atoms'"):
        run_pool(no_atoms, out, potential=EMT)
    overlapping = Atoms("Cu2", positions=[[0, 0, 0], [0.2, 0, 0]], cell=[5, 5, 5], pbc=True)
    scen = good + [Scenario("overlap", overlapping, 300, ensemble="nvt", steps=10, snapshot_interval=5)]
    with pytest.raises(InputError, match="overlapping atoms"):
        run_pool(scen, out, potential=EMT, executor="serial")
    assert not out.exists() or not list(out.glob("*.extxyz")), "MD started despite bad input"
    with pytest.raises(ConfigError, match="unknown executor"):
        with make_executor("slurm"):
            pass


def test_cli_pool_and_summary(tmp_path, capsys):
    sfile = tmp_path / "scen.json"
    save_scenarios(sfile, cu_scenarios(2, steps=20))
    out = tmp_path / "pool"
    rc = cli_main(["pool", str(sfile), "--out", str(out), "--potential", EMT, "--executor", "serial",
                   "--no-progress"])
    assert rc == 0
    assert "2 completed" in capsys.readouterr().out
    assert cli_main(["pool", "--summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cu-0/T300" in text and "completed" in text and "20/20" in text and "2 scenarios: 2 completed" in text
    assert cli_main(["pool", str(tmp_path / "missing.json"), "--out", str(out), "--potential", EMT]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_main(["pool", str(sfile), "--out", str(out), "--potential", "nonsense"]) == 2
    assert "unknown potential" in capsys.readouterr().err


def test_downsample_per_trajectory_with_direct(tmp_path):
    from alkit.encode import LocalDescriptorEncoder
    from alkit.pool import downsample

    scen = [Scenario("long-a", cu(), 900, ensemble="nvt", steps=80, snapshot_interval=2),
            Scenario("long-b", cu(), 300, ensemble="npt", steps=80, snapshot_interval=2),
            Scenario("short", cu(), 600, ensemble="nvt", steps=6, snapshot_interval=2)]
    run_pool(scen, tmp_path, potential=EMT, executor="serial", progress=False)
    frames = load_pool(tmp_path)
    assert [len(v) for v in frames_by_id(frames).values()] == [40, 40, 3]
    encoder = LocalDescriptorEncoder(cutoff=4.0, n_radial=8)
    keep = downsample(frames, encoder, n_per_trajectory=6, seed=0)
    assert keep == sorted(set(keep))
    kept_ids = [frames[i].info["scenario_id"] for i in keep]
    assert kept_ids.count("short") == 3  # fewer frames than clusters: all kept
    for sid in ("long-a", "long-b"):
        assert 1 <= kept_ids.count(sid) <= 6
    assert sum(kept_ids.count(s) for s in ("long-a", "long-b")) >= 8
    # the same with a callable encoder and the same seed; per-trajectory selection ignores the other trajectories
    again = downsample(frames, lambda fr: LocalDescriptorEncoder(cutoff=4.0, n_radial=8).transform(fr), 6, seed=0)
    assert again == keep
    only_a = [f for f in frames if f.info["scenario_id"] == "long-a"]
    sel_a = downsample(only_a, encoder, 6, seed=0)
    assert [only_a[i].info["step"] for i in sel_a] == [frames[i].info["step"] for i in keep
                                                        if frames[i].info["scenario_id"] == "long-a"]
    with pytest.raises(ConfigError):
        downsample(frames, encoder, 0)


def test_adopt_pool_shares_finished_scenarios_and_the_encoder_cache(tmp_path):
    """``alkit run --pool-from``: the runs of a comparison share one pool. Only scenarios the source finished with
    the same definition and potential are copied; anything else runs here; a wrong source is one clear error."""
    from alkit.encode import FeatureCache, merge_cache
    from alkit.pool import adopt_pool

    scen = cu_scenarios(3, steps=20)
    src = tmp_path / "a" / "pool"
    run_pool(scen[:2], src, potential=EMT, executor="serial", progress=False)  # scen[2] never ran in the source
    changed = [Scenario(scen[0].id, cu(3.65), 300, ensemble="nvt", steps=20, snapshot_interval=10)] + scen[1:]
    dst = tmp_path / "b" / "pool"
    adopted = adopt_pool(src, dst, changed, potential=EMT)
    assert adopted == [scen[1].id]  # scen[0] changed its definition, scen[2] is not in the source
    assert scenario_paths(dst, scen[1].id)["frames"].read_bytes() == scenario_paths(src, scen[1].id)["frames"].read_bytes()
    rep = run_pool(changed, dst, potential=EMT, executor="serial", progress=False)
    assert rep.skipped == [scen[1].id] and sorted(rep.ran) == sorted([scen[0].id, scen[2].id])
    assert len(load_pool(dst)) == 3 * 2
    assert adopt_pool(src, dst, changed, potential=EMT) == [scen[1].id]  # idempotent on a rerun
    with pytest.raises(ConfigError, match="no finished scenario"):
        adopt_pool(src, tmp_path / "c", changed, potential="ase.calculators.lj:LennardJones")
    with pytest.raises(ConfigError, match="not a directory"):
        adopt_pool(tmp_path / "missing", tmp_path / "c", scen, potential=EMT)

    # the encoder cache: vectors the destination lacks are added; its own are kept
    a = FeatureCache(tmp_path / "a" / "cache", "enc", 4)
    a.put({"k1": np.ones(4), "k2": np.full(4, 2.0)})
    b = FeatureCache(tmp_path / "b" / "cache", "enc", 4)
    b.put({"k2": np.full(4, 5.0)})
    assert merge_cache(tmp_path / "a" / "cache", tmp_path / "b" / "cache") == 1
    got = b.get(["k1", "k2"])
    assert np.allclose(got["k1"], 1.0) and np.allclose(got["k2"], 5.0)
    assert merge_cache(tmp_path / "a" / "cache", tmp_path / "b" / "cache") == 0
