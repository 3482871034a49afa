"""alkit's compiled MTP core against motep (the oracle): energies, forces, stress, grade rows, the reverse-mode loss
gradient (finite differences and motep's Jacobian), the least-squares blocks, thread-count independence,
neighbour lists of awkward cells, MLIP-2 files (scaling, no species tag) and bad input."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from alkit.errors import ConfigError, InputError
from alkit.mtp.engine import MTPCalculator, MTPEngine
from alkit.mtp.potential import MTPPotential

SPECIES = ["Ti", "H"]


@pytest.fixture(autouse=True)
def _quiet_motep():
    logging.getLogger("motep").setLevel(logging.ERROR)  # motep warns about every contact below min_dist


def random_potential(level: int = 10, scaling: float = 1.0, seed: int = 0, min_dist: float = 0.8) -> MTPPotential:
    pot = MTPPotential.untrained(level, SPECIES, cutoff=4.5, min_dist=min_dist)
    rng = np.random.default_rng(seed)
    pot.initialize(rng)
    pot.radial_coeffs = rng.normal(0, 0.3, pot.radial_coeffs.shape)
    pot.moment_coeffs = rng.normal(0, 1.0, pot.n_scalar)
    pot.species_coeffs = rng.normal(0, 1.0, 2)
    pot.scaling = scaling
    return pot


def cells() -> dict[str, Atoms]:
    """Ti-H structures that stress the neighbour list: triclinic, smaller than the cutoff, H2 molecules, an
    isolated atom in a box, a slab (mixed periodicity)."""
    rng = np.random.default_rng(3)
    out = {}
    tri = bulk("Ti", "hcp", a=2.95, c=4.68) * (2, 2, 2)
    tri.set_cell(tri.cell.array @ np.array([[1, 0.21, 0.1], [0.05, 1, -0.17], [0.12, 0.03, 1]]), scale_atoms=True)
    tri += Atoms("H2", positions=[[1.0, 1.1, 1.3], [3.1, 2.2, 3.3]])
    tri.positions += rng.normal(0, 0.07, tri.positions.shape)
    out["triclinic"] = tri
    small = bulk("Ti", "bcc", a=3.28) + Atoms("H", positions=[[0.8, 0.4, 0.1]])  # 2 Ti + H, cell << 2 x cutoff
    small.set_cell(small.cell.array @ (np.eye(3) + rng.normal(0, 0.03, (3, 3))), scale_atoms=True)
    out["smaller_than_cutoff"] = small
    h2 = Atoms("H4", positions=[[0, 0, 0], [0.74, 0, 0], [2.5, 1.9, 0.3], [2.5, 2.65, 0.35]], cell=[6.0, 6.2, 5.8],
               pbc=True)
    out["h2_molecules"] = h2
    out["isolated_atom"] = Atoms("Ti", positions=[[2, 2, 2]], cell=[9, 9, 9], pbc=True)
    out["isolated_molecule"] = Atoms("TiH2", positions=[[0, 0, 0], [1.7, 0, 0], [0, 1.8, 0.2]], pbc=False)
    slab = bulk("Ti", "hcp", a=2.95, c=4.68) * (2, 2, 2)
    slab.center(vacuum=5.0, axis=2)
    slab.pbc = [True, True, False]
    slab += Atoms("H", positions=[[1.5, 0.9, slab.positions[:, 2].max() + 1.1]])
    out["slab"] = slab
    out["unwrapped_md_snapshot"] = unwrapped(small * (2, 2, 2), rng)
    return out


def unwrapped(atoms: Atoms, rng: np.random.Generator) -> Atoms:
    """``atoms`` with each atom moved by a random lattice vector of up to two cells per row, as an MD run leaves
    them (ASE does not wrap): the same structure, so every result must equal the wrapped one."""
    out = atoms.copy()
    out.positions += rng.integers(-2, 3, (len(out), 3)) @ out.cell.array
    return out


def motep_efs(pot: MTPPotential, atoms: Atoms):
    from motep.calculator import MTP

    a = atoms.copy()
    a.calc = MTP(pot.to_motep(SPECIES), engine="cext", mode="run")
    e = a.get_potential_energy()
    f = a.get_forces()
    s = a.get_stress() if np.all(a.pbc) else None
    return e, f, s


@pytest.mark.parametrize("name", list(cells()))
@pytest.mark.parametrize("level,scaling", [(10, 1.0), (16, 0.73)])
def test_energy_forces_stress_equal_motep(name, level, scaling):
    pot = random_potential(level, scaling)
    atoms = cells()[name]
    res = MTPEngine(pot, SPECIES).compute(atoms)
    e, f, s = motep_efs(pot, atoms)
    assert res["energy"] == pytest.approx(e, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(res["forces"], f, rtol=1e-10, atol=1e-10 * max(1.0, np.abs(f).max()))
    if s is not None:
        np.testing.assert_allclose(res["stress"], s, rtol=1e-10, atol=1e-10 * max(1e-3, np.abs(s).max()))
    else:
        assert "stress" not in res
    np.testing.assert_allclose(res["energies"].sum(), res["energy"], rtol=1e-12)


def test_forces_and_stress_are_derivatives_of_the_energy():
    pot = random_potential(12)
    atoms = cells()["triclinic"]
    eng = MTPEngine(pot, SPECIES, skin=0.0)
    f = eng.compute(atoms)["forces"]
    h = 1e-5
    for i, c in [(0, 0), (3, 1), (len(atoms) - 1, 2)]:
        p, m = atoms.copy(), atoms.copy()
        p.positions[i, c] += h
        m.positions[i, c] -= h
        fd = -(eng.compute(p)["energy"] - eng.compute(m)["energy"]) / (2 * h)
        assert f[i, c] == pytest.approx(fd, rel=1e-6, abs=1e-7)
    s = eng.compute(atoms)["stress"]
    for k, (a, b) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h
        es = []
        for sign in (1, -1):
            d = atoms.copy()
            d.set_cell(atoms.cell.array @ (np.eye(3) + sign * eps), scale_atoms=True)
            es.append(eng.compute(d)["energy"])
        fd = (es[0] - es[1]) / (2 * h) / atoms.get_volume() / (1 if a == b else 2)
        assert s[k] == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_neighbour_list_matches_ase_for_awkward_cells():
    from ase.neighborlist import neighbor_list

    from alkit.mtp import _core
    from alkit.mtp.engine import core_cell

    for name, atoms in cells().items():
        for rc in (2.0, 4.5, 7.0):
            i, j, shifts, vec = _core.neighbors(atoms.positions, core_cell(atoms), atoms.pbc, rc)
            ai, aj, ad = neighbor_list("ijd", atoms, rc)
            ours = sorted(zip(i.tolist(), j.tolist(), np.round(np.linalg.norm(vec, axis=1), 9).tolist()))
            ref = sorted(zip(ai.tolist(), aj.tolist(), np.round(ad, 9).tolist()))
            assert ours == ref, (name, rc)


def test_atoms_outside_the_cell_give_the_wrapped_results(data):
    """An MD snapshot with atoms cells away from the unit cell is the wrapped structure: energy, forces, virial and
    the training loss must not change (the image range of the neighbour search assumed wrapped atoms until
    this was measured on CHGNet MD snapshots, which it gave 29 eV of error)."""
    from alkit.mtp.train import TrainingData

    pot = random_potential(12)
    rng = np.random.default_rng(7)
    for name in ("triclinic", "smaller_than_cutoff", "slab"):
        atoms = cells()[name]
        moved = atoms.copy()
        shift = rng.integers(-2, 3, (len(atoms), 3)) * np.asarray(atoms.pbc, dtype=int)
        moved.positions += shift @ atoms.cell.array
        ref, got = MTPEngine(pot, SPECIES).compute(atoms), MTPEngine(pot, SPECIES).compute(moved)
        assert got["energy"] == pytest.approx(ref["energy"], rel=1e-11, abs=1e-11), name
        np.testing.assert_allclose(got["forces"], ref["forces"], rtol=1e-9, atol=1e-10 * np.abs(ref["forces"]).max())
        np.testing.assert_allclose(got["virial"], ref["virial"], rtol=1e-9, atol=1e-10 * np.abs(ref["virial"]).max())
        assert got["min_distance"] == pytest.approx(ref["min_distance"], rel=1e-12)
    pot, d = data
    structures = training_set()
    moved = []
    for a in structures:
        b = a.copy()
        b.positions += rng.integers(-2, 3, (len(b), 3)) @ b.cell.array
        b.calc = SinglePointCalculator(b, **a.calc.results)
        moved.append(b)
    ref = d.loss_grad(pot.theta, WEIGHTS)
    got = TrainingData(pot, moved, SPECIES).loss_grad(pot.theta, WEIGHTS)
    assert got[0] == pytest.approx(ref[0], rel=1e-10)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-8, atol=1e-10 * np.abs(ref[1]).max())


def test_persistent_neighbour_list_is_reused_and_rebuilt():
    pot = random_potential(10)
    atoms = cells()["triclinic"]
    eng = MTPEngine(pot, SPECIES, skin=1.0)
    ref = MTPEngine(pot, SPECIES, skin=0.0)
    rng = np.random.default_rng(0)
    for step in range(30):
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)
        if step % 10 == 9:  # NpT-like cell change
            atoms.set_cell(atoms.cell.array * 1.004, scale_atoms=True)
        a, b = eng.compute(atoms), ref.compute(atoms)
        assert a["energy"] == pytest.approx(b["energy"], rel=1e-12)
        np.testing.assert_allclose(a["forces"], b["forces"], rtol=1e-10, atol=1e-10)
    assert 1 <= eng.n_builds < 30 and ref.n_builds == 30
    # another structure (other size) through the same engine
    other = cells()["smaller_than_cutoff"]
    assert eng.compute(other)["energy"] == pytest.approx(ref.compute(other)["energy"], rel=1e-12)


def test_grade_rows_equal_motep_train_mode():
    from motep.calculator import make_calculator

    pot = random_potential(10)
    for atoms in (cells()["triclinic"], cells()["smaller_than_cutoff"]):
        calc = make_calculator(pot.to_motep(SPECIES), mode="train")
        calc.engine.calculate(atoms)
        ref = calc.engine.jac_energies(atoms).parameters.T
        eng = MTPEngine(pot, SPECIES)
        rows_all = eng.compute(atoms, rows="all")["rows"]
        rows_lin = eng.compute(atoms, rows="linear")["rows"]
        np.testing.assert_allclose(rows_all, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
        np.testing.assert_allclose(rows_lin, ref[:, : pot.n_linear], rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def training_set(n: int = 6, seed: int = 1, partial: bool = True) -> list[Atoms]:
    """Labelled (random targets) Ti-H cells of mixed sizes; with ``partial`` one without forces, one without
    stress."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = (bulk("Ti", "hcp", a=2.95, c=4.68) * [(2, 2, 1), (2, 2, 2), (3, 2, 1)][k % 3])
        atoms += Atoms("H", positions=[rng.uniform(0, 1, 3) @ atoms.cell.array])
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        labels = {"energy": float(rng.normal(-5 * len(atoms), 1))}
        if k != 2 or not partial:
            labels["forces"] = rng.normal(0, 0.5, (len(atoms), 3))
        if k != 3 or not partial:
            s = rng.normal(0, 0.01, (3, 3))
            labels["stress"] = full_3x3_to_voigt_6_stress(s + s.T)
        atoms.calc = SinglePointCalculator(atoms, **labels)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def data():
    from alkit.mtp.train import TrainingData

    pot = random_potential(10, scaling=1.1)
    pot.moment_coeffs *= 0.01
    return pot, TrainingData(pot, training_set(), SPECIES)


WEIGHTS = (1.0, 0.05, 0.3)


def test_loss_gradient_matches_finite_differences(data):
    pot, d = data
    theta = pot.theta
    loss, grad, parts = d.loss_grad(theta, WEIGHTS)
    assert loss == pytest.approx(parts["energy"] + parts["forces"] + parts["stress"])
    assert min(parts.values()) > 0
    h = 1e-6
    for i in list(range(0, pot.n_params, 7)) + [pot.n_params - 1]:
        up, dn = theta.copy(), theta.copy()
        up[i] += h
        dn[i] -= h
        fd = (d.loss_grad(up, WEIGHTS, gradient=False)[0] - d.loss_grad(dn, WEIGHTS, gradient=False)[0]) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-7 * np.abs(grad).max())


def test_loss_and_gradient_equal_motep_jacobian(data):
    from motep.loss import LossFunction, LossSetting

    from alkit.mtp.train import TrainingData

    pot = data[0]
    images = training_set(partial=False)  # motep 0.2.0's stress loss fails when some structures lack a stress
    d = TrainingData(pot, images, SPECIES)
    setting = LossSetting(energy_weight=WEIGHTS[0], forces_weight=WEIGHTS[1], stress_weight=WEIGHTS[2])
    lf = LossFunction(images, pot.to_motep(SPECIES), setting, engine="cext")
    p = pot.theta
    loss, grad, _ = d.loss_grad(p, WEIGHTS)
    assert loss == pytest.approx(lf(p), rel=1e-10)
    jac = lf.jac(p)
    np.testing.assert_allclose(grad, jac, rtol=1e-8, atol=1e-10 * np.abs(jac).max())


def test_least_squares_blocks_give_the_loss(data):
    pot, d = data
    theta = pot.theta
    K, h, c0 = d.data.lls(theta, list(WEIGHTS), 1)
    phi = theta[: pot.n_linear]
    assert phi @ K @ phi - 2 * h @ phi + c0 == pytest.approx(d.loss_grad(theta, WEIGHTS)[0], rel=1e-10)
    np.testing.assert_allclose(K, K.T, rtol=0, atol=0)
    # the solved linear coefficients zero the loss gradient w.r.t. them
    solved, loss = d.solve_linear(theta, WEIGHTS)
    g = d.loss_grad(solved, WEIGHTS)[1]
    assert loss <= d.loss_grad(theta, WEIGHTS)[0]
    assert np.abs(g[: pot.n_linear]).max() < 1e-6 * np.abs(d.loss_grad(theta, WEIGHTS)[1][: pot.n_linear]).max()


def test_one_and_two_threads_give_identical_results(data):
    pot, d = data
    theta = pot.theta
    a, b = d.loss_grad(theta, WEIGHTS, 1), d.loss_grad(theta, WEIGHTS, 2)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    for x, y in zip(d.predict(theta, 1), d.predict(theta, 2)):
        assert np.array_equal(x, y)
    ka, kb = d.data.lls(theta, list(WEIGHTS), 1), d.data.lls(theta, list(WEIGHTS), 2)
    assert np.array_equal(ka[0], kb[0]) and np.array_equal(ka[1], kb[1]) and ka[2] == kb[2]
    big = bulk("Ti", "hcp", a=2.95, c=4.68) * (5, 5, 3)  # enough atoms for the evaluator to use threads
    big.rattle(0.05, seed=2)
    r1 = MTPEngine(pot, SPECIES, n_threads=1).compute(big, rows="all")
    r2 = MTPEngine(pot, SPECIES, n_threads=2).compute(big, rows="all")
    for key in ("energy", "forces", "virial", "rows", "energies"):
        assert np.array_equal(r1[key], r2[key])


MLIP2_TEXT = """MTP
version = 1.1.0
potential_name = MTP1m
scaling = 7.312500000000000e-01
species_count = 2
potential_tag = 
radial_basis_type = RBChebyshev
\tmin_dist = 1.200000000000000e+00
\tmax_dist = 4.500000000000000e+00
\tradial_basis_size = 3
\tradial_funcs_count = 2
\tradial_coeffs
\t\t0-0
\t\t\t{1.100000000000000e-01, -2.000000000000000e-01, 3.000000000000000e-02}
\t\t\t{-5.000000000000000e-02, 1.200000000000000e-01, 7.000000000000000e-02}
\t\t0-1
\t\t\t{2.100000000000000e-01, 4.000000000000000e-02, -1.300000000000000e-01}
\t\t\t{6.000000000000000e-02, -8.000000000000000e-02, 1.500000000000000e-01}
\t\t1-0
\t\t\t{-1.700000000000000e-01, 9.000000000000000e-02, 2.000000000000000e-02}
\t\t\t{3.300000000000000e-01, -1.100000000000000e-01, 4.000000000000000e-02}
\t\t1-1
\t\t\t{8.000000000000000e-02, 1.400000000000000e-01, -6.000000000000000e-02}
\t\t\t{-2.200000000000000e-01, 5.000000000000000e-02, 1.000000000000000e-02}
alpha_moments_count = 8
alpha_index_basic_count = 5
alpha_index_basic = {{0, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}, {1, 0, 0, 0}}
alpha_index_times_count = 5
alpha_index_times = {{0, 0, 1, 5}, {1, 1, 1, 6}, {2, 2, 1, 6}, {3, 3, 1, 6}, {0, 5, 1, 7}}
alpha_scalar_moments = 5
alpha_moment_mapping = {0, 4, 5, 6, 7}
species_coeffs = {-1.600000000000000e+00, -2.300000000000000e+00}
moment_coeffs = {5.000000000000000e-01, -3.000000000000000e-01, 1.100000000000000e+00, 4.000000000000000e-01, -2.000000000000000e-01}
"""


def test_mlip2_file_with_scaling_and_no_species_tag(tmp_path):
    """A file as MLIP-2 writes it (scaling, empty potential_tag): read, evaluated as motep does, written back
    bit for bit in its coefficients, and the species must be given."""
    from motep.io.mlip.mtp import read_mtp

    path = tmp_path / "mlip2.mtp"
    path.write_text(MLIP2_TEXT)
    pot = MTPPotential.read(path)
    assert pot.scaling == 0.73125 and pot.potential_tag == "" and pot.tag_species is None
    with pytest.raises(ConfigError, match="does not record its species"):
        pot.resolve_species(None)
    assert pot.resolve_species(["Ti", "H"]) == ["Ti", "H"]
    data = read_mtp(path)
    np.testing.assert_array_equal(pot.theta, data.parameters)
    atoms = cells()["triclinic"]
    res = MTPEngine(pot, SPECIES).compute(atoms)
    e, f, s = motep_efs(pot, atoms)
    assert res["energy"] == pytest.approx(e, rel=1e-12)
    np.testing.assert_allclose(res["forces"], f, rtol=1e-10, atol=1e-12)
    out = pot.write(tmp_path / "back.mtp")
    back = MTPPotential.read(out)
    np.testing.assert_array_equal(back.theta, pot.theta)
    assert back.scaling == pot.scaling and back.min_dist == pot.min_dist
    assert np.array_equal(read_mtp(out).parameters, data.parameters)  # motep reads alkit's file the same
    # the CLI evaluates it given the species
    from alkit.cli import main
    from ase.io import write

    write(tmp_path / "in.extxyz", [atoms])
    assert main(["mtp", "calc-efs", str(path), str(tmp_path / "in.extxyz"), "--species", "Ti", "H",
                 "--out", str(tmp_path / "efs.extxyz")]) == 0


def test_basis_with_monomials_missing_their_lower_powers(tmp_path):
    """The core forms each monomial from a lower one and each gradient from lower monomials, adding the lower
    monomials a file lacks. A basis of only even powers and x y (no x, y or z alone) must still give motep's energy,
    forces, stress and loss gradient, and the least-squares blocks must give the loss."""
    from motep.loss import LossFunction, LossSetting

    from alkit.mtp.train import TrainingData

    text = MLIP2_TEXT.replace(
        "alpha_moments_count = 8\nalpha_index_basic_count = 5\n"
        "alpha_index_basic = {{0, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}, {1, 0, 0, 0}}\n"
        "alpha_index_times_count = 5\n"
        "alpha_index_times = {{0, 0, 1, 5}, {1, 1, 1, 6}, {2, 2, 1, 6}, {3, 3, 1, 6}, {0, 5, 1, 7}}\n",
        "alpha_moments_count = 9\nalpha_index_basic_count = 6\n"
        "alpha_index_basic = {{0, 0, 0, 0}, {0, 2, 0, 0}, {0, 0, 2, 0}, {0, 0, 0, 2}, {1, 0, 0, 0}, {1, 1, 1, 0}}\n"
        "alpha_index_times_count = 4\n"
        "alpha_index_times = {{0, 0, 1, 6}, {1, 2, 2, 7}, {5, 5, 1, 8}, {3, 4, 1, 8}}\n").replace(
        "alpha_moment_mapping = {0, 4, 5, 6, 7}", "alpha_moment_mapping = {0, 4, 6, 7, 8}")
    assert "{1, 1, 1, 0}" in text and "{0, 4, 6, 7, 8}" in text
    (tmp_path / "even.mtp").write_text(text)
    pot = MTPPotential.read(tmp_path / "even.mtp")
    assert pot.basis.n_monomials == 8  # 1, x^2, y^2, z^2, xy of the file, and the added x, y, z
    for name in ("triclinic", "smaller_than_cutoff"):
        atoms = cells()[name]
        res = MTPEngine(pot, SPECIES).compute(atoms)
        e, f, s = motep_efs(pot, atoms)
        assert res["energy"] == pytest.approx(e, rel=1e-10)
        np.testing.assert_allclose(res["forces"], f, rtol=1e-10, atol=1e-10 * np.abs(f).max())
        np.testing.assert_allclose(res["stress"], s, rtol=1e-10, atol=1e-10 * np.abs(s).max())
    images = training_set(partial=False)
    d = TrainingData(pot, images, SPECIES)
    lf = LossFunction(images, pot.to_motep(SPECIES),
                      LossSetting(energy_weight=WEIGHTS[0], forces_weight=WEIGHTS[1], stress_weight=WEIGHTS[2]),
                      engine="cext")
    loss, grad, _ = d.loss_grad(pot.theta, WEIGHTS)
    assert loss == pytest.approx(lf(pot.theta), rel=1e-10)
    jac = lf.jac(pot.theta)
    np.testing.assert_allclose(grad, jac, rtol=1e-8, atol=1e-10 * np.abs(jac).max())
    K, h, c0 = d.data.lls(pot.theta, list(WEIGHTS), 1)
    phi = pot.theta[: pot.n_linear]
    assert phi @ K @ phi - 2 * h @ phi + c0 == pytest.approx(loss, rel=1e-10)


def test_trained_potential_round_trips_through_mlip2_files(tmp_path):
    from ase.io import read

    from alkit.mtp.fit import train_mtp

    images = training_set(8)
    res = train_mtp(images, tmp_path / "t.mtp", SPECIES, level=6, bfgs_maxiter=15, seed=3)
    pot = MTPPotential.read(res.mtp_path)
    text = res.mtp_path.read_text()
    assert pot.to_text() == text  # written exactly as it is read back
    pot.write(tmp_path / "again.mtp")
    assert (tmp_path / "again.mtp").read_text() == text
    calc = MTPCalculator(tmp_path / "again.mtp")
    a = images[0].copy()
    a.calc = calc
    b = images[0].copy()
    b.calc = MTPCalculator(res.mtp_path)
    assert a.get_potential_energy() == b.get_potential_energy()


def test_bad_input_is_refused_with_one_clear_line(tmp_path):
    from alkit.mtp.fit import train_mtp
    from alkit.mtp.train import TrainingData

    pot = random_potential(6)
    eng = MTPEngine(pot, SPECIES)
    cu = cells()["triclinic"]
    cu.numbers[0] = 29
    with pytest.raises(InputError, match=r"\['Cu'\].*does not know"):
        eng.compute(cu)
    nan = cells()["triclinic"]
    nan.positions[2, 1] = np.nan
    with pytest.raises(InputError, match="non-finite positions"):
        eng.compute(nan)
    with pytest.raises(InputError, match="without atoms"):
        eng.compute(Atoms())
    with pytest.raises(InputError, match="empty"):
        TrainingData(pot, [], SPECIES)
    with pytest.raises(InputError, match="empty"):
        train_mtp([], tmp_path / "o.mtp", SPECIES)
    cases = {
        "garbage.mtp": "MTP\nthis is not a potential\n",
        "notmtp.mtp": "hello\n",
        "counts.mtp": MLIP2_TEXT.replace("alpha_scalar_moments = 5", "alpha_scalar_moments = 6"),
        "species.mtp": MLIP2_TEXT.replace("species_coeffs = {", "species_coeffs = {1.0, "),
        "nan.mtp": MLIP2_TEXT.replace("moment_coeffs = {5.000000000000000e-01", "moment_coeffs = {nan"),
        "order.mtp": MLIP2_TEXT.replace("{0, 0, 1, 5}, {1, 1, 1, 6}", "{0, 7, 1, 5}, {1, 1, 1, 6}"),
        "truncated.mtp": MLIP2_TEXT[: len(MLIP2_TEXT) // 2],
        "radial.mtp": MLIP2_TEXT.replace("{1.100000000000000e-01, -2.000000000000000e-01, 3.000000000000000e-02}",
                                         "{1.1e-01, -2.0e-01}"),
    }
    for name, text in cases.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ConfigError, match=name) as err:
            MTPPotential.read(p)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        MTPPotential.read(tmp_path / "missing.mtp")
    with pytest.raises(ConfigError, match="untrained"):
        MTPCalculator(MTPPotential.untrained(6, SPECIES))
    with pytest.raises(ConfigError, match="on_close_atoms"):
        MTPCalculator(pot, SPECIES, on_close_atoms="maybe")
