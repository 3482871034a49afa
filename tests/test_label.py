"""Labellers: real CHGNet and GPAW calculations on tiny cells, VASP inputs parsed back with pymatgen, injected
failures (exception, NaN, timeout, a worker that dies) survived in-process, on threads and on a process pool,
the factory's errors and the ``alkit label`` command."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from alkit.errors import ConfigError, InputError
from alkit.label import (
    CalculatorLabeller,
    CHGNetLabeller,
    GPAWLabeller,
    LabelResult,
    VaspLabeller,
    kpoint_mesh,
    label_many,
    make_labeller,
)


class FlakyEMT(EMT):
    """A real ASE calculator (EMT) that misbehaves on request through ``atoms.info['inject']``."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        mode = atoms.info.get("inject") if atoms is not None else None
        if mode == "raise":
            raise RuntimeError("injected failure")
        if mode == "sleep":
            for _ in range(1200):  # 60 s in small steps, so that a timeout can interrupt it on any thread
                time.sleep(0.05)
        if mode == "die":
            os._exit(3)  # the worker process dies (as on a segfault or the OOM killer)
        super().calculate(atoms, properties, system_changes)
        if mode == "nan":
            self.results["energy"] = self.results["free_energy"] = float("nan")


FLAKY = f"{__name__}:FlakyEMT"


def _cu_cells(modes):
    base = bulk("Cu", "fcc", a=3.6, cubic=True)
    cells = []
    for k, mode in enumerate(modes):
        a = base.copy()
        a.rattle(0.03, seed=k)
        if mode:
            a.info["inject"] = mode
        cells.append(a)
    return cells


def _ti(n_h: int = 0):
    a = bulk("Ti", "hcp", a=2.95, c=4.69)
    if n_h:
        a = a.repeat((2, 2, 1))
        for k in range(n_h):
            a.append("H")
            a.positions[-1] = [0.7 + 0.9 * k, 0.9, 1.2]
    return a


def _check_outcomes(results, modes, cells):
    for r, mode, atoms in zip(results, modes, cells):
        if mode is None:
            assert r.ok, r.reason
            ref = atoms.copy()
            ref.calc = EMT()
            assert r.energy == pytest.approx(ref.get_potential_energy(), abs=1e-9)
            assert r.forces.shape == (len(atoms), 3) and r.stress.shape == (6,)
        else:
            assert r.status == "failed" and r.energy is None
    reasons = {m: r.reason for r, m in zip(results, modes) if m}
    if "raise" in reasons:
        assert reasons["raise"] == "RuntimeError: injected failure"
    if "nan" in reasons:
        assert "non-finite energy" in reasons["nan"]
    if "sleep" in reasons:
        assert "timeout" in reasons["sleep"]
    if "die" in reasons:
        assert "worker process died" in reasons["die"]


def test_label_result_checks_and_apply():
    a = _cu_cells([None])[0]
    n = len(a)
    assert LabelResult.from_values(np.nan, np.zeros((n, 3)), np.zeros(6), n).status == "failed"
    assert "shape" in LabelResult.from_values(1.0, np.zeros((n + 1, 3)), None, n).reason
    assert "stress" in LabelResult.from_values(1.0, np.zeros((n, 3)), [np.inf] * 6, n).reason
    full = np.arange(9.0).reshape(3, 3)
    r = LabelResult.from_values(-2.0, np.ones((n, 3)), full, n)  # a 3x3 stress becomes Voigt
    np.testing.assert_array_equal(r.stress, [0, 4, 8, 5, 2, 1])
    b = r.apply(a)
    assert b is not a and a.calc is None
    assert b.get_potential_energy() == -2.0 and b.get_forces().shape == (n, 3)
    with pytest.raises(InputError, match="failed label"):
        LabelResult.failure("x").apply(a)


def test_failures_survived_in_process_with_timeout():
    modes = [None, "raise", "nan", "sleep", None]
    cells = _cu_cells(modes)
    seen = []
    results = label_many(CalculatorLabeller(FLAKY), cells, timeout=1.5, progress=False,
                         on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == list(range(len(cells)))
    _check_outcomes(results, modes, cells)
    assert results[3].seconds < 10


def test_timeout_on_worker_threads():
    modes = ["sleep", None, None]
    cells = _cu_cells(modes)
    with ThreadPoolExecutor(2) as ex:
        results = label_many(CalculatorLabeller(FLAKY), cells, executor=ex, timeout=1.0, progress=False)
    _check_outcomes(results, modes, cells)


def test_shared_calculator_is_thread_safe():
    cells = _cu_cells([None] * 12)
    lab = CalculatorLabeller("ase.calculators.emt:EMT", reuse=True)  # one calculator for every structure
    with ThreadPoolExecutor(4) as ex:
        results = label_many(lab, cells, executor=ex, progress=False)
    _check_outcomes(results, [None] * 12, cells)
    assert pickle.loads(pickle.dumps(lab))._calc is None


def test_process_pool_failures_timeout_and_dead_worker():
    modes = [None, "raise", "die", None, "nan", "sleep", None]
    cells = _cu_cells(modes)
    order = []
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        results = label_many(CalculatorLabeller(FLAKY), cells, executor=ex, timeout=2.0, progress=False,
                             on_result=lambda i, r: order.append(i))
    assert sorted(order) == list(range(len(cells)))  # each structure reported exactly once
    _check_outcomes(results, modes, cells)


def test_chgnet_labeller_ti_h():
    atoms = _ti(n_h=2)
    lab = make_labeller("chgnet")
    lab.check()
    r = lab.label(atoms)
    assert r.ok, r.reason
    assert np.isfinite(r.energy) and r.energy < 0
    assert r.forces.shape == (len(atoms), 3) and np.all(np.isfinite(r.forces))
    assert r.stress.shape == (6,) and np.all(np.isfinite(r.stress))
    assert np.abs(r.forces).max() > 1e-3  # the interstitial H pushes its neighbours
    assert lab._calc is not None and pickle.loads(pickle.dumps(lab))._calc is None  # the model is not shipped


def test_gpaw_labeller_hcp_ti_real_dft():
    lab = GPAWLabeller(preset="paper", ecut=250, kpt_density=1.0)  # spin-polarized, 3x3x2 k-points
    assert lab.settings()["spinpol"] is True and lab.name == "gpaw"
    lab.check()
    atoms = _ti()
    r = lab.label(atoms)
    assert r.ok, r.reason
    assert np.isfinite(r.energy) and r.energy < 0
    assert r.forces.shape == (2, 3) and np.abs(r.forces).max() < 1e-3  # zero by symmetry
    assert r.stress.shape == (6,) and np.all(np.isfinite(r.stress))
    # an SCF that cannot converge is a failed label with the reason, not an exception
    bad = GPAWLabeller(preset="cheap", ecut=200, kpt_density=1.0, maxiter=2).label(atoms)
    assert bad.status == "failed" and "SCF not converged" in bad.reason


def test_gpaw_presets_and_bad_settings():
    cheap = make_labeller("gpaw-cheap", ecut=300)
    s = cheap.settings()
    assert cheap.name == "gpaw-cheap" and s["ecut"] == 300 and s["spinpol"] is False
    paper = make_labeller("gpaw").settings()
    assert paper["ecut"] == 500 and paper["kpt_density"] == 3.5 and paper["spinpol"] is True
    with pytest.raises(ConfigError, match="preset"):
        GPAWLabeller(preset="fast").check()
    with pytest.raises(ConfigError, match="ecut"):
        GPAWLabeller(ecut=-1).check()
    with pytest.raises(ConfigError, match="smearing"):
        GPAWLabeller(smearing=("cold", 0.1)).check()


def test_vasp_inputs_parse_back(tmp_path, monkeypatch):
    from pymatgen.io.vasp import Incar, Kpoints, Poscar

    monkeypatch.delenv("VASP_PP_PATH", raising=False)
    atoms = _ti(n_h=1)
    lab = make_labeller("vasp")
    out = lab.write_inputs(atoms, tmp_path / "in")
    incar = Incar.from_file(out / "INCAR")
    assert incar["ENCUT"] == 500 and incar["ISPIN"] == 2 and incar["GGA"].upper() == "PE"
    assert incar["ISMEAR"] == 1 and incar["SIGMA"] == 0.1 and incar["EDIFF"] == 1e-5
    assert incar["IBRION"] == -1 and incar["NSW"] == 0 and incar["ISIF"] == 2 and incar["PREC"] == "Accurate"
    assert incar["MAGMOM"] == [1.0] * len(atoms)
    kpts = Kpoints.from_file(out / "KPOINTS")
    assert kpts.style.name == "Gamma"
    # density in k-points per Å^-1 along each reciprocal vector: n_i = ceil(2π |b_i| density)
    expected = np.ceil(2 * np.pi * 3.5 * np.linalg.norm(atoms.cell.reciprocal(), axis=1)).astype(int)
    assert list(kpts.kpts[0]) == list(expected) == kpoint_mesh(atoms, 3.5)
    poscar = Poscar.from_file(out / "POSCAR")
    assert poscar.site_symbols == ["Ti", "H"] and poscar.natoms == [8, 1]
    np.testing.assert_allclose(poscar.structure.lattice.matrix, atoms.cell.array, atol=1e-8)
    assert (out / "POTCAR.spec").read_text().split() == ["Ti_sv", "H"]
    assert not (out / "POTCAR").exists()
    non_spin = VaspLabeller(spinpol=False, ecut=400, kpt_density=2.0, smearing=("fermi-dirac", 0.05))
    incar2 = Incar.from_file(non_spin.write_inputs(atoms, tmp_path / "in2") / "INCAR")
    assert incar2["ISPIN"] == 1 and incar2["ENCUT"] == 400 and incar2["ISMEAR"] == -1 and "MAGMOM" not in incar2


def test_vasp_check_fails_clearly_and_label_fails_without_raising(tmp_path, monkeypatch):
    for var in ("ASE_VASP_COMMAND", "VASP_COMMAND", "VASP_SCRIPT", "VASP_PP_PATH"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="VASP labeller cannot start: no VASP command"):
        make_labeller("vasp").check()
    monkeypatch.setenv("ASE_VASP_COMMAND", "mpirun -np 2 vasp_std_not_here")
    with pytest.raises(ConfigError, match="vasp_std_not_here"):
        make_labeller("vasp").check()
    r = VaspLabeller(directory=str(tmp_path / "runs")).label(_ti())
    assert r.status == "failed" and r.reason


def test_make_labeller_errors():
    with pytest.raises(ConfigError, match="unknown labeller 'dft9000'"):
        make_labeller("dft9000")
    with pytest.raises(ConfigError, match="unknown GPAW preset"):
        make_labeller("gpaw-ultra")
    with pytest.raises(ConfigError, match="cannot import module"):
        make_labeller("no_such_module_xyz:Calc")
    with pytest.raises(ConfigError, match="has no attribute"):
        make_labeller("ase.calculators.emt:NoSuchCalc")
    with pytest.raises(ConfigError, match="bad option"):
        make_labeller("chgnet", cutoff=5)
    with pytest.raises(ConfigError, match="timeout"):
        label_many(make_labeller("ase.calculators.emt:EMT"), _cu_cells([None]), timeout=0)
    assert make_labeller("ase.calculators.emt:EMT").name == "ase.calculators.emt:EMT"


def test_cli_label(tmp_path, capsys):
    from ase.io import read, write

    from alkit.cli import main

    modes = [None, "raise", None]
    src = tmp_path / "in.extxyz"
    write(src, _cu_cells(modes))
    out = tmp_path / "labelled.extxyz"
    rc = main(["label", str(src), "--labeller", FLAKY, "--out", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1  # some structures failed
    assert "[1] Cu4: FAILED  RuntimeError: injected failure" in text
    assert "2 labelled, 1 failed of 3" in text and "failed [1] Cu4: RuntimeError: injected failure" in text
    frames = read(out, ":")
    assert len(frames) == 2 and all(np.isfinite(f.get_potential_energy()) for f in frames)
    assert frames[0].info["labeller"] == FLAKY and frames[0].get_forces().shape == (4, 3)

    rc = main(["label", str(src), "--labeller", "nope", "--out", str(out)])
    assert rc == 2 and "unknown labeller 'nope'" in capsys.readouterr().err
    rc = main(["label", str(src), "-l", "ase.calculators.emt:EMT", "--set", "asap_cutoff", "-o", str(out)])
    assert rc == 2 and "key=value" in capsys.readouterr().err
