"""MD with universal potentials (real M3GNet and CHGNet weights) and ASE's EMT; blow-up detection; potentials by name."""
from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from alkit.errors import ConfigError, ModelNotFoundError
from alkit.md import MDResult, run_md
from alkit.potentials import check_potential, make_calculator


def ti_hcp():
    return bulk("Ti", "hcp", a=2.95, c=4.68)


class NaNAfterEMT(EMT):
    """EMT that starts returning NaN forces after ``after`` calculations (an injected numerical failure)."""

    def __init__(self, after: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.after = after
        self.n_calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=("positions",)):
        super().calculate(atoms, properties, system_changes)
        self.n_calls += 1
        if self.n_calls > self.after:
            self.results["forces"] = np.full_like(self.results["forces"], np.nan)


@pytest.fixture(scope="module")
def m3gnet(model_dir):
    from alkit._compat import set_torch_threads

    set_torch_threads(1)
    return make_calculator("m3gnet", model_dir=model_dir)


@pytest.fixture(scope="module")
def chgnet():
    return make_calculator("chgnet")


def _check_snapshots(snaps, n_atoms):
    for step, frame in snaps:
        assert frame.calc is not None
        e = frame.get_potential_energy()
        f = frame.get_forces()
        s = frame.get_stress()
        assert np.isfinite(e) and f.shape == (n_atoms, 3) and np.all(np.isfinite(f))
        assert s.shape == (6,) and np.all(np.isfinite(s))


@pytest.mark.parametrize("potential", ["m3gnet", "chgnet"])
def test_universal_potential_nvt_and_npt(potential, request):
    calc = request.getfixturevalue(potential)
    atoms = ti_hcp()
    cell0 = atoms.cell.array.copy()
    for ensemble in ("nvt", "npt"):
        snaps = []
        res = run_md(atoms, calc, 1000, ensemble=ensemble, steps=12, snapshot_interval=4, seed=3,
                     on_snapshot=lambda step, frame: snaps.append((step, frame)))
        assert isinstance(res, MDResult)
        assert (res.status, res.steps_done, res.n_snapshots, res.reason) == ("completed", 12, 3, "")
        assert [s for s, _ in snaps] == [4, 8, 12]
        _check_snapshots(snaps, len(atoms))
        # energies are those of the potential at the snapshot geometry
        probe = snaps[-1][1].copy()
        probe.calc = calc
        assert probe.get_potential_energy() == pytest.approx(snaps[-1][1].get_potential_energy(), abs=1e-4)
        moved = np.abs(snaps[-1][1].positions - atoms.positions).max()
        assert moved > 1e-3
        cell_change = np.abs(snaps[-1][1].cell.array - cell0).max()
        if ensemble == "nvt":
            assert cell_change == 0.0
        else:
            assert cell_change > 1e-4, "the barostat did not move the cell"
    assert np.array_equal(atoms.cell.array, cell0), "run_md must not modify its input"


@pytest.mark.parametrize("ensemble,thermostat,barostat", [("nvt", "nose-hoover", "mtk"), ("npt", "langevin", "langevin")])
def test_other_integrators(ensemble, thermostat, barostat):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    res = run_md(atoms, EMT(), 600, ensemble=ensemble, steps=60, snapshot_interval=20, thermostat=thermostat,
                 barostat=barostat)
    assert res.status == "completed" and res.n_snapshots == 3
    changed = not np.allclose(res.last_good.cell.array, atoms.cell.array)
    assert changed == (ensemble == "npt")


def test_seeded_velocities_reproducible():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    runs = [run_md(atoms, EMT(), 500, ensemble="npt", steps=30, seed=s).last_good.positions for s in (7, 7, 8)]
    assert np.array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_nan_forces_are_a_blowup_with_last_good_frame():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    snaps = []
    res = run_md(atoms, NaNAfterEMT(after=8), 300, ensemble="nvt", steps=100, snapshot_interval=2,
                 on_snapshot=lambda s, f: snaps.append(s))
    assert res.status == "blowup" and "non-finite forces" in res.reason
    assert 0 < res.steps_done < 100
    assert snaps and snaps[-1] <= res.steps_done
    assert np.all(np.isfinite(res.last_good.get_forces()))
    assert np.all(np.isfinite(res.last_good.positions))


def test_runaway_temperature_and_close_atoms_are_blowups():
    hot = bulk("Cu", "fcc", a=3.0, cubic=True)
    hot.rattle(0.2, seed=1)  # compressed and disordered: the potential energy floods the thermostat
    res = run_md(hot, EMT(), 30, ensemble="nvt", steps=100)
    assert res.status == "blowup" and "runaway temperature" in res.reason
    close = bulk("Cu", "fcc", a=3.6, cubic=True)
    res = run_md(close, EMT(), 300, ensemble="nvt", steps=10, min_distance=2.6)  # nearest neighbours 2.55 Å
    assert res.status == "blowup" and "closer than 2.6" in res.reason and res.steps_done == 0


def test_callbacks_can_stop():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    res = run_md(atoms, EMT(), 300, ensemble="nvt", steps=100, snapshot_interval=5,
                 on_snapshot=lambda step, frame: step < 15)
    assert (res.status, res.steps_done, res.n_snapshots) == ("stopped", 15, 3)
    seen = []
    res = run_md(atoms, EMT(), 300, ensemble="nvt", steps=100, on_step=lambda step, a: seen.append(step) or step < 7)
    assert res.status == "stopped" and seen == list(range(1, 8))


def test_callback_errors_propagate():
    def boom(step, frame):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        run_md(bulk("Cu", "fcc", a=3.6, cubic=True), EMT(), 300, steps=10, snapshot_interval=5, on_snapshot=boom)


def test_bad_md_settings():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    with pytest.raises(ConfigError, match="ensemble"):
        run_md(atoms, EMT(), 300, ensemble="nve")
    with pytest.raises(ConfigError, match="thermostat"):
        run_md(atoms, EMT(), 300, thermostat="berendsen")
    with pytest.raises(ConfigError, match="temperature"):
        run_md(atoms, EMT(), -5)


def test_potential_names(tmp_path):
    with pytest.raises(ConfigError, match="unknown potential 'mace'"):
        make_calculator("mace")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        make_calculator("m3gnet", model_dir=tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="model.pt is missing"):
        check_potential("m3gnet", model_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot import module"):
        check_potential("no_such_pkg.calc:Calc")
    with pytest.raises(ConfigError, match="no attribute"):
        check_potential("ase.calculators.emt:NoSuch")
    with pytest.raises(ConfigError, match="did not give an ASE calculator"):
        make_calculator("builtins:dict")
    calc = make_calculator("ase.calculators.emt:EMT")
    assert isinstance(calc, EMT)


class FailAfterEMT(EMT):
    """EMT whose neighbour search 'fails' after a few calculations, as a calculator does on exploded coordinates."""

    def __init__(self, after: int = 6, **kwargs):
        super().__init__(**kwargs)
        self.after, self.n_calls = after, 0

    def calculate(self, *args, **kwargs):
        self.n_calls += 1
        if self.n_calls > self.after:
            raise ValueError("cell too large for the neighbour list")
        super().calculate(*args, **kwargs)


def test_calculator_errors_mid_run_are_blowups_but_not_at_the_start():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    res = run_md(atoms, FailAfterEMT(), 300, ensemble="nvt", steps=50)
    assert res.status == "blowup" and "ValueError" in res.reason and "neighbour list" in res.reason
    assert 0 < res.steps_done < 50 and np.all(np.isfinite(res.last_good.get_forces()))
    with pytest.raises(Exception):  # EMT has no Ti parameters: a configuration problem, reported as such
        run_md(bulk("Ti", "hcp", a=2.95, c=4.68), EMT(), 300, steps=5)
