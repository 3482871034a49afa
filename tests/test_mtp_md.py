"""MTP MD with gamma monitoring (ASE and LAMMPS engines) on the level-6 Ti-H MTP of test_mtp_grade (trained on 40
CHGNet-labelled Ti8Hn cells): stable low-temperature runs, runs that break and collect, fix halt, LAMMPS/ASE
consistency, blow-ups, bad input, CLI."""
from __future__ import annotations

import numpy as np
import pytest
from ase.io import read, write
from test_mtp_grade import SPECIES, build_tih, scaled

from alkit.errors import ConfigError, InputError


@pytest.fixture(scope="session")
def tih(tmp_path_factory):
    return build_tih(tmp_path_factory.getbasetemp() / "alkit_tih_mtp")


@pytest.fixture(scope="module")
def aset(tih):
    """Neighbourhood mode, linear coefficients (the default, and the driver's choice)."""
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    return ActiveSet.fit(pot, train, SPECIES, mode="nbh")


@pytest.fixture(scope="module")
def aset_all(tih):
    """Neighbourhood mode, all coefficients (MLIP-2): a much more sensitive grade on this small training set."""
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    return ActiveSet.fit(pot, train, SPECIES, mode="nbh", parameters="all")


@pytest.mark.parametrize("parameters", ["linear", "all"])
def test_grading_calculator(tih, aset, aset_all, parameters):
    from alkit.mtp.engine import MTPCalculator

    pot, train = tih
    aset = aset if parameters == "linear" else aset_all
    atoms = train[31].copy()
    atoms.rattle(0.01, seed=3)
    calc = MTPCalculator(active_set=aset, on_close_atoms="ignore")
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    gamma, per_atom = aset.grade(atoms)
    assert calc.results["gamma"] == pytest.approx(gamma, rel=1e-12)
    np.testing.assert_allclose(calc.results["gammas"], per_atom, rtol=1e-12)
    # run-mode evaluation (no grade) gives the same energy and forces
    fast = MTPCalculator(active_set=aset, grade_next=False, on_close_atoms="ignore")
    other = atoms.copy()
    other.calc = fast
    assert other.get_potential_energy() == pytest.approx(e, abs=1e-10)
    np.testing.assert_allclose(other.get_forces(), f, atol=1e-10)
    assert "gamma" not in fast.results
    # forces are minus the gradient of the energy
    i, h = 8, 1e-5
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[i, 0] += h
    minus.positions[i, 0] -= h
    plus.calc, minus.calc = MTPCalculator(active_set=aset, on_close_atoms="ignore"), MTPCalculator(active_set=aset, on_close_atoms="ignore")
    fd = -(plus.get_potential_energy() - minus.get_potential_energy()) / (2 * h)
    assert f[i, 0] == pytest.approx(fd, abs=1e-5)
    assert calc.last_min_distance == pytest.approx(min(atoms.get_distances(k, [j for j in range(len(atoms)) if j != k],
                                                                            mic=True).min() for k in range(len(atoms))))


def test_lammps_nve_trajectory_matches_ase(tih, aset):
    """Same initial velocities, NVE: LAMMPS (fix nve + fix external) and ASE VelocityVerlet follow the same
    trajectory; checks forces, units (velocities Å/ps vs ASE), the rotation into LAMMPS's frame and back."""
    from ase import units
    from ase.geometry import find_mic
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    from alkit.mtp.lammps_engine import _System
    from alkit.mtp.engine import MTPCalculator

    pot, train = tih
    start = train[35].copy()
    start.calc = None
    MaxwellBoltzmannDistribution(start, temperature_K=600, rng=np.random.default_rng(0))
    Stationary(start)
    ref = start.copy()
    ref.calc = MTPCalculator(active_set=aset, grade_next=False, on_close_atoms="ignore")
    VelocityVerlet(ref, 0.5 * units.fs).run(100)
    with _System(start, MTPCalculator(active_set=aset, grade_next=False, on_close_atoms="ignore"), timestep_fs=0.5, velocities=True) as sysm:
        sysm.lmp.commands_list(["fix alkit_nve all nve", "run 100"])
        x = np.array(sysm.lmp.numpy.extract_atom("x"), copy=True)
        tag = np.array(sysm.lmp.numpy.extract_atom("id"), copy=True).astype(int).ravel()
        frame = sysm.frame.copy()
        frame.positions[tag - 1] = x
        frame.set_cell(sysm.box(), scale_atoms=False)
        back = sysm.to_ase(frame)
    moved = find_mic(ref.positions - start.positions, ref.cell)[0]
    diff = find_mic(back.positions - ref.positions, ref.cell)[0]
    assert np.abs(moved).max() > 0.05  # the atoms did move
    assert np.abs(diff).max() < 1e-6


def test_lammps_and_ase_agree_on_one_frame(tih, aset_all):
    """Energy, forces (LAMMPS force array) and stress (LAMMPS virial pressure) through fix external equal the ASE
    calculator's, for the hcp cell and for the same lattice given by a strongly tilted basis."""
    from alkit.mtp.lammps_engine import lammps_single_point
    from alkit.mtp.engine import MTPCalculator

    pot, train = tih
    frame = train[35].copy()
    frame.rattle(0.02, seed=1)
    tilted = frame.copy()
    c = frame.cell.array
    tilted.set_cell(np.array([c[0], c[1] + 2 * c[0], c[2] - c[1]]), scale_atoms=False)  # same lattice
    for atoms in (frame, tilted):
        atoms.calc = MTPCalculator(active_set=aset_all, on_close_atoms="ignore")
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        el, fl, sl = lammps_single_point(atoms, MTPCalculator(active_set=aset_all, on_close_atoms="ignore"))
        assert el == pytest.approx(e, abs=1e-8)
        np.testing.assert_allclose(fl, f, atol=1e-8)
        np.testing.assert_allclose(sl, s, rtol=1e-6, atol=1e-9)
    assert tilted.get_potential_energy() == pytest.approx(frame.get_potential_energy(), abs=1e-8)


@pytest.mark.parametrize("engine", ["ase", "lammps"])
def test_stable_low_temperature_nvt(tih, aset, engine):
    from alkit.mtp.md import run_mtp_md

    pot, train = tih
    res = run_mtp_md(train[0], pot, aset, SPECIES, temperature=30, steps=60, engine=engine, seed=1,
                     scenario_id="ti8-30K")
    assert res.stable and res.stop_reason == "completed"
    assert res.steps_done == res.steps_total == 60
    assert 0 < res.max_gamma <= 3.0
    assert res.collected == []
    assert res.graded_steps == 61  # step 0 + every step
    assert res.scenario_id == "ti8-30K" and res.engine == engine


@pytest.mark.parametrize("engine", ["ase", "lammps"])
def test_hot_run_breaks_and_collects(tih, aset_all, engine):
    """At 3000 K gamma climbs; structures above gamma_select are collected and the run stops at the first step
    with gamma > gamma_break (for LAMMPS, the step at which fix halt ended the run)."""
    from alkit.mtp.md import run_mtp_md

    pot, train = tih
    aset = aset_all
    res = run_mtp_md(train[0], pot, aset, SPECIES, temperature=3000, steps=400, gamma_select=2.0, gamma_break=10.0,
                     engine=engine, seed=0, scenario_id="hot")
    assert not res.stable and res.stop_reason == "gamma"
    assert 0 < res.steps_done < 400
    assert len(res.collected) >= 2
    steps = [a.info["step"] for a in res.collected]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert all(a.info["gamma"] > 2.0 for a in res.collected)
    last = res.collected[-1]
    assert last.info["step"] == res.steps_done  # LAMMPS: ntimestep after fix halt == the breaking step
    assert last.info["gamma"] > 10.0 and last.info["gamma"] == pytest.approx(res.max_gamma)
    assert all(a.info["gamma"] <= 10.0 for a in res.collected[:-1])
    assert last.info["scenario_id"] == "hot" and last.calc is None
    assert last.arrays["gamma"].shape == (len(last),) and last.arrays["gamma"].max() == pytest.approx(last.info["gamma"])
    # the collected structure (back in the caller's frame for LAMMPS) grades as recorded
    assert aset.grade(last)[0] == pytest.approx(last.info["gamma"], rel=1e-6)


@pytest.mark.parametrize("engine", ["ase", "lammps"])
def test_npt_with_sparse_grading(tih, aset, engine):
    from alkit.mtp.md import run_mtp_md

    pot, train = tih
    res = run_mtp_md(train[1], pot, aset, SPECIES, temperature=30, steps=40, ensemble="npt", engine=engine,
                     grade_every=5, pressure_gpa=0.0)
    assert res.stable and res.steps_done == 40
    assert res.graded_steps == 1 + 40 // 5


def test_perturbed_start_breaks_at_step_zero(tih, aset):
    from alkit.mtp.md import run_mtp_md

    pot, train = tih
    start = scaled(train[33], 0.85)
    res = run_mtp_md(start, pot, aset, SPECIES, temperature=300, steps=100, engine="lammps")
    assert not res.stable and res.stop_reason == "gamma" and res.steps_done == 0
    assert len(res.collected) == 1 and res.collected[0].info["step"] == 0 and res.collected[0].info["gamma"] > 3


@pytest.mark.parametrize("engine", ["ase", "lammps"])
def test_blowup_stops_unstable(tih, aset, engine):
    """With the grade ignored (huge thresholds) a 50000 K run collapses atoms below half the potential's min_dist."""
    from alkit.mtp.md import run_mtp_md

    pot, train = tih
    res = run_mtp_md(train[35], pot, aset, SPECIES, temperature=50000, steps=300, gamma_select=1e29,
                     gamma_break=1e30, seed=0, max_temperature_factor=1e6, engine=engine)
    assert not res.stable
    assert res.stop_reason.startswith("blowup")
    # the ASE run collapses; in LAMMPS an atom may be flung out of the box first (LAMMPS then drops it, which the
    # callback reports as a blow-up instead of reading the shortened atom arrays)
    assert "closer than" in res.stop_reason or (engine == "lammps" and "LAMMPS lost" in res.stop_reason)
    assert 0 < res.steps_done < 300
    # nothing crossed gamma_select, but a frame from before the blow-up is collected for labelling
    assert len(res.collected) == 1 and res.collected[0].info["before_blowup"]
    assert res.collected[0].info["step"] < res.steps_done
    # the runaway-temperature check of both engines (a factor below 1 trips it at once)
    res = run_mtp_md(train[0], pot, aset, SPECIES, temperature=300, steps=50, max_temperature_factor=0.5,
                     engine=engine)
    assert not res.stable and "runaway temperature" in res.stop_reason and res.steps_done <= 2


def test_bad_input(tih, aset, tmp_path):
    from alkit.mtp.grade import ActiveSet
    from alkit.mtp.md import run_mtp_md

    pot, train = tih
    close = train[30].copy()
    h = int(np.where(close.numbers == 1)[0][0])
    close.positions[h] = close.positions[0] + [0.4 * aset.min_dist, 0.0, 0.0]
    with pytest.raises(InputError, match="collapsed"):
        run_mtp_md(close, pot, aset, SPECIES, 300, 10)
    with_o = train[0].copy()
    with_o.append("O")
    with_o.positions[-1] = [1.5, 1.5, 2.0]
    with pytest.raises(InputError, match="O"):
        run_mtp_md(with_o, pot, aset, SPECIES, 300, 10)
    with pytest.raises(InputError, match="species"):
        run_mtp_md(train[0], pot, aset, ["H", "Ti"], 300, 10)
    with pytest.raises(ConfigError, match="gamma_select"):
        run_mtp_md(train[0], pot, aset, SPECIES, 300, 10, gamma_select=5, gamma_break=3)
    with pytest.raises(ConfigError, match="engine"):
        run_mtp_md(train[0], pot, aset, SPECIES, 300, 10, engine="gromacs")
    with pytest.raises(ConfigError, match="ensemble"):
        run_mtp_md(train[0], pot, aset, SPECIES, 300, 10, ensemble="nve")
    other = tmp_path / "other.mtp"
    other.write_text(pot.read_text() + "\n")
    with pytest.raises(InputError, match="different potential"):
        run_mtp_md(train[0], other, aset, SPECIES, 300, 10)
    molecule = train[0].copy()
    molecule.pbc = False
    with pytest.raises(InputError, match="periodic"):
        run_mtp_md(molecule, pot, aset, SPECIES, 300, 10, engine="lammps")
    assert isinstance(aset, ActiveSet)


def test_cli_md(tih, tmp_path, capsys):
    """`alkit mtp grade --parameters all` writes the active set that `alkit mtp md` then monitors with."""
    from alkit.cli import main

    pot, train = tih
    train_file, start = tmp_path / "train.extxyz", tmp_path / "start.extxyz"
    write(train_file, train)
    write(start, [train[0], scaled(train[2], 1.0)])
    als = tmp_path / "state.als"
    assert main(["mtp", "grade", str(pot), str(train_file), str(start), "--out", str(tmp_path / "g.extxyz"),
                 "--als", str(als), "--species", "Ti", "H", "--parameters", "all"]) == 0
    out = tmp_path / "collected.extxyz"
    assert main(["mtp", "md", str(pot), str(start), "--als", str(als), "--temperature", "3000", "--steps", "400",
                 "--gamma-select", "2", "--gamma-break", "10", "--engine", "lammps", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "UNSTABLE: gamma after" in text
    collected = read(out, ":")
    assert collected and collected[-1].info["gamma"] > 10
    assert main(["mtp", "md", str(pot), str(start), "--als", str(als), "--temperature", "30", "--steps", "20",
                 "--out", str(tmp_path / "none.extxyz")]) == 0
    assert "stable: completed after 20/20 steps" in capsys.readouterr().out
    assert main(["mtp", "md", str(pot), str(start), "--als", str(tmp_path / "missing.als"), "--temperature", "30",
                 "--steps", "5", "--out", str(out)]) == 2
    assert "missing.als" in capsys.readouterr().err
