"""alkit's LAMMPS plugin (pair_style mtp, compute mtp/grade) against the Python engine and ActiveSet: energies,
forces and virial (per atom and global; newton on and off; triclinic and small cells; MLIP-2 files), 2 MPI ranks
equal to 1, the grade, fix halt on the break, NVE energy conservation, and errors as LAMMPS errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write
from test_mtp_engine import MLIP2_TEXT, cells, random_potential
from test_mtp_grade import SPECIES, build_tih

from alkit.mtp.engine import MTPEngine
from alkit.mtp.grade import ActiveSet

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@pytest.fixture(scope="session")
def tih(tmp_path_factory):
    return build_tih(tmp_path_factory.getbasetemp() / "alkit_tih_mtp")


def evaluate(tmp_path, atoms, pot, als=None, newton="on", nve=0, nprocs=1, elements=None, species=None, name="r"):
    write(tmp_path / f"{name}.traj", atoms)  # lossless (extxyz rounds positions)
    cmd = [sys.executable, str(HERE / "_lammps_eval.py"), str(tmp_path / f"{name}.traj"), str(pot),
           "--newton", newton, "--out", str(tmp_path / f"{name}.json")]
    if als:
        cmd += ["--als", str(als)]
    if nve:
        cmd += ["--nve", str(nve)]
    if elements:
        cmd += ["--elements", *elements]
    if species:
        cmd += ["--species", *species]
    if nprocs > 1:
        mpirun = Path(sys.executable).parent / "mpirun"
        cmd = [str(mpirun), "-np", str(nprocs)] + cmd
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{HERE}", OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:] + res.stdout[-2000:])
    return json.loads((tmp_path / f"{name}.json").read_text())


def python_reference(pot, atoms, species=SPECIES):
    res = MTPEngine(pot, species).compute(atoms)
    return res


def check_against_python(out, ref, atoms, rtol=1e-10):
    e = ref["energy"]
    assert out["energy"] == pytest.approx(e, rel=rtol, abs=rtol)
    f_ref = ref["forces"]
    np.testing.assert_allclose(out["forces"], f_ref, rtol=rtol, atol=rtol * np.abs(f_ref).max())
    np.testing.assert_allclose(out["energies"], ref["energies"], rtol=rtol, atol=rtol * np.abs(ref["energies"]).max())
    # global virial: LAMMPS's pressure tensor (virial part) x volume / nktv2p = -(the core's virial) in eV,
    # expressed in LAMMPS's rotated frame
    rot = np.array(out["rot"])
    pv = out["pv"]  # xx yy zz xy xz yz
    P = np.array([[pv[0], pv[3], pv[4]], [pv[3], pv[1], pv[5]], [pv[4], pv[5], pv[2]]])
    W_lmp = -P * out["volume"] / out["nktv2p"]
    w = ref["virial"]
    W_ref = rot.T @ (0.5 * (w + w.T)) @ rot
    np.testing.assert_allclose(W_lmp, W_ref, rtol=rtol, atol=rtol * np.abs(W_ref).max())
    # per-atom virials (compute stress/atom: the per-atom virial in pressure x volume units) add up to the global one
    sa = np.array(out["stress_atom"]).sum(axis=0) / out["nktv2p"]
    np.testing.assert_allclose(sa,
                               [W_ref[0, 0], W_ref[1, 1], W_ref[2, 2], W_ref[0, 1], W_ref[0, 2], W_ref[1, 2]],
                               rtol=1e-9, atol=1e-9 * np.abs(W_ref).max())


@pytest.mark.parametrize("name", ["triclinic", "smaller_than_cutoff", "h2_molecules"])
@pytest.mark.parametrize("newton", ["on", "off"])
def test_energy_forces_virial_equal_the_python_engine(name, newton, tmp_path):
    pot = random_potential(12, scaling=0.9)
    pot.write(tmp_path / "p.mtp")
    atoms = cells()[name]
    out = evaluate(tmp_path, atoms, tmp_path / "p.mtp", newton=newton)
    check_against_python(out, python_reference(pot, atoms), atoms)


def test_two_mpi_ranks_equal_one(tih, tmp_path):
    pot, train = tih
    aset = ActiveSet.fit(pot, train, SPECIES, mode="nbh")
    aset.save(tmp_path / "state.als")
    big = bulk("Ti", "hcp", a=2.95, c=4.68) * (4, 4, 3)
    big += Atoms("H4", positions=[[1.4, 0.9, 1.2], [4.3, 2.5, 3.5], [7.0, 5.1, 7.0], [2.0, 6.0, 9.5]])
    big.rattle(0.05, seed=3)
    one = evaluate(tmp_path, big, pot, als=tmp_path / "state.als", name="one")
    two = evaluate(tmp_path, big, pot, als=tmp_path / "state.als", nprocs=2, name="two")
    assert two["nprocs"] == 2
    assert two["energy"] == pytest.approx(one["energy"], rel=1e-12)
    np.testing.assert_allclose(two["forces"], one["forces"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(two["pv"], one["pv"], rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(two["gammas"], one["gammas"], rtol=1e-12, atol=1e-14)
    assert two["grade_vector"][:3] == pytest.approx(one["grade_vector"][:3], rel=1e-12)
    from alkit.mtp.potential import MTPPotential

    check_against_python(two, python_reference(MTPPotential.read(pot), big), big)


@pytest.mark.parametrize("mode,parameters", [("nbh", "linear"), ("nbh", "all"), ("cfg", "linear")])
def test_grade_equals_the_python_active_set(tih, tmp_path, mode, parameters):
    pot, train = tih
    aset = ActiveSet.fit(pot, train, SPECIES, mode=mode, parameters=parameters)
    aset.save(tmp_path / "state.als")
    probe = train[30].copy()
    # compressed by 10 % (extrapolative: gamma > 1 for every fit; at 5 % the linear nbh grade is ~1, fit-dependent)
    probe.set_cell(probe.cell.array * 0.90, scale_atoms=True)
    out = evaluate(tmp_path, probe, pot, als=tmp_path / "state.als")
    gamma, per_atom = aset.grade(probe)
    assert gamma > 1.0
    np.testing.assert_allclose(out["gammas"], per_atom, rtol=1e-10, atol=1e-12)
    g = out["grade_vector"]
    assert g[0] == pytest.approx(gamma, rel=1e-10)
    assert g[1] == pytest.approx(MTPEngine(aset.potential, SPECIES).compute(probe)["min_distance"], rel=1e-12)
    assert g[2] == 0.0 and g[4] == 0.0  # finite; graded at step 0


def test_fix_halt_stops_at_the_break_and_the_frame_is_collected(tih, tmp_path):
    """A hot run breaks inside LAMMPS at the first step whose grade exceeds gamma_break; the collected frame's
    grade (computed in LAMMPS) equals ActiveSet.grade of that frame."""
    from alkit.mtp.md import run_mtp_md

    pot, train = tih
    aset = ActiveSet.fit(pot, train, SPECIES, mode="nbh")
    res = run_mtp_md(train[35], pot, aset, SPECIES, temperature=2500, steps=400, gamma_select=1.2, gamma_break=1.6,
                     seed=3, engine="lammps", lammps_coupling="plugin", max_collect=50)
    assert res.stop_reason == "gamma" and not res.stable
    assert 0 < res.steps_done < 400
    last = res.collected[-1]
    assert last.info["step"] == res.steps_done and last.info["gamma"] > 1.6
    assert all(1.2 < a.info["gamma"] <= 1.6 for a in res.collected[:-1])
    gamma, per_atom = aset.grade(last)
    assert gamma == pytest.approx(last.info["gamma"], rel=1e-8)
    np.testing.assert_allclose(last.arrays["gamma"], per_atom, rtol=1e-8, atol=1e-10)
    assert res.max_gamma == pytest.approx(last.info["gamma"], rel=1e-12)
    # the fallback (fix external, grade in Python) breaks too
    ext = run_mtp_md(train[35], pot, aset, SPECIES, temperature=2500, steps=400, gamma_select=1.2, gamma_break=1.6,
                     seed=3, engine="lammps", lammps_coupling="external")
    assert ext.stop_reason == "gamma" and ext.collected[-1].info["gamma"] > 1.6


def test_nve_conserves_energy(tih, tmp_path):
    pot, train = tih
    cell = train[35].copy() * (2, 2, 2)
    out = evaluate(tmp_path, cell, pot, nve=100)
    e = np.array(out["etotal"])
    assert len(e) == 11
    drift = np.abs(e - e[0]).max() / len(cell)
    assert drift < 2e-5  # eV/atom over 100 steps of 0.5 fs at 600 K


def test_mlip2_file_without_species_tag(tmp_path):
    """An MLIP-2 file (scaling, empty tag): its type order is given by ``species`` (or, without it, by the order of
    first appearance in pair_coeff, MLIP-2's convention that LAMMPS type k is MTP type k - 1)."""
    (tmp_path / "mlip2.mtp").write_text(MLIP2_TEXT)
    from alkit.mtp.potential import MTPPotential

    pot = MTPPotential.read(tmp_path / "mlip2.mtp")
    atoms = cells()["triclinic"]  # LAMMPS types: 1 = H, 2 = Ti (sorted by atomic number)
    out = evaluate(tmp_path, atoms, tmp_path / "mlip2.mtp", species=["Ti", "H"])
    check_against_python(out, python_reference(pot, atoms), atoms)
    swapped = atoms.copy()
    swapped.numbers = np.where(atoms.numbers == 22, 1, 22)  # every Ti an H and vice versa: type order H, Ti
    out = evaluate(tmp_path, atoms, tmp_path / "mlip2.mtp", name="conv")  # pair_coeff * * H Ti -> H is type 0
    check_against_python(out, python_reference(pot, swapped, species=["Ti", "H"]), atoms)


def test_errors_are_lammps_errors_with_a_clear_message(tih, tmp_path):
    pot, train = tih
    aset = ActiveSet.fit(pot, train, SPECIES, mode="nbh")
    aset.save(tmp_path / "state.als")
    atoms = cells()["triclinic"]  # types 1 = H, 2 = Ti
    with pytest.raises(RuntimeError, match="cannot open potential file .*missing.mtp"):
        evaluate(tmp_path, atoms, tmp_path / "missing.mtp")
    with pytest.raises(RuntimeError, match="element Cu is not a species of .*Ti H"):
        evaluate(tmp_path, atoms, pot, elements=["Cu", "Ti"])
    other = random_potential(6)
    other.write(tmp_path / "other.mtp")
    with pytest.raises(RuntimeError, match="active set .* was built for a different potential"):
        evaluate(tmp_path, atoms, tmp_path / "other.mtp", als=tmp_path / "state.als")
    (tmp_path / "broken.mtp").write_text(MLIP2_TEXT.replace("alpha_moments_count = 8", "alpha_moments_count = x"))
    with pytest.raises(RuntimeError, match="broken.mtp is corrupt"):
        evaluate(tmp_path, atoms, tmp_path / "broken.mtp", elements=["Ti", "H"])


def test_cli_plugin_path(capsys):
    from alkit.cli import main

    assert main(["lammps", "plugin-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.is_file() and path.name == "alkit_mtp_plugin.so"


def test_nvt_holds_light_and_heavy_atoms_at_the_target_temperature():
    """Equipartition in the LAMMPS NVT of diffusion runs: H and Ti both near the target. With ``fix langevin ...
    zero yes`` (the mean random force taken off every atom alike, not by mass) H ran at 1.55x the target beside
    Ti, and H diffused twice as fast as under ASE's Langevin."""
    from ase import units

    from alkit.mtp.lammps_engine import sample_unwrapped_positions
    from alkit.recipes.ti_h import validation

    pot = REPO / "docs" / "workstation" / "ws3-direct-1" / "iterations" / "iter_005" / "pot.mtp"  # a real Ti-H fit
    cell = next(s.atoms for s in validation("workstation").diffusion_systems if s.name.startswith("bcc"))
    pos, status = sample_unwrapped_positions(cell, pot, 1000.0, 3000, 1, 0.5, seed=3)
    assert status == "completed"
    v = np.diff(pos[1000:], axis=0) / 0.5e-3  # Å/ps from one 0.5-fs step
    ke = 0.5 * cell.get_masses()[None, :, None] * v ** 2 * 1.0364269e-4  # eV
    for z in (1, 22):
        t = ke[:, cell.numbers == z, :].sum(axis=2).mean() * 2 / (3 * units.kB)
        assert 850 < t < 1150, (z, t)
