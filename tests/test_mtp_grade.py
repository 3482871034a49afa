"""MaxVol extrapolation grade, active-set persistence, select-add and the grade/select-add CLI, on a real level-6
Ti-H MTP trained (motep via alkit.mtp.fit) on 40 tiny CHGNet-labelled Ti8Hn cells."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read, write

from alkit.errors import InputError

SPECIES = ["Ti", "H"]


# ----------------------------------------------------------------------------------------------------------------
# shared data (test_mtp_md.py imports build_tih; the build is cached under the session's basetemp)
# ----------------------------------------------------------------------------------------------------------------
def make_structures(n: int = 40, seed: int = 0) -> list[Atoms]:
    """24 strained/rattled Ti8 hcp cells, then 16 with 1-3 interstitial H."""
    rng = np.random.default_rng(seed)
    base = bulk("Ti", "hcp", a=2.95, c=4.68).repeat((2, 2, 1))
    out = []
    for i in range(n):
        a = base.copy()
        for _ in range(0 if i < 24 else 1 + i % 3):
            for _try in range(500):
                trial = a + Atoms("H", [rng.uniform(0, 1, 3) @ a.cell.array])
                d = trial.get_distances(len(a), list(range(len(a))), mic=True)
                if np.all(d[a.numbers == 22] > 1.75) and np.all(d[a.numbers == 1] > 1.6):
                    a = trial
                    break
        a.set_cell(a.cell.array @ np.diag(1 + rng.uniform(-0.03, 0.03, 3)), scale_atoms=True)
        a.positions += rng.normal(0, 0.06, a.positions.shape)
        out.append(a)
    return out


def build_tih(root: Path) -> tuple[Path, list[Atoms]]:
    """(trained level-6 Ti-H .mtp, its 40 labelled training structures), built once per session."""
    pot, data = root / "tih.mtp", root / "train.extxyz"
    if pot.is_file() and data.is_file():
        return pot, read(data, ":")
    root.mkdir(parents=True, exist_ok=True)
    from ase.calculators.singlepoint import SinglePointCalculator
    from chgnet.model.dynamics import CHGNetCalculator

    from alkit._compat import set_torch_threads
    from alkit.mtp.fit import train_mtp

    set_torch_threads(1)
    calc = CHGNetCalculator(use_device="cpu")
    labelled = []
    for a in make_structures():
        a.calc = calc
        res = {"energy": a.get_potential_energy(), "forces": a.get_forces(), "stress": a.get_stress()}
        a.calc = SinglePointCalculator(a, **res)
        labelled.append(a)
    train_mtp(labelled, pot, SPECIES, level=6, seed=0)  # alkit engine, to convergence
    write(data, labelled)
    return pot, read(data, ":")


@pytest.fixture(scope="session")
def tih(tmp_path_factory):
    return build_tih(tmp_path_factory.getbasetemp() / "alkit_tih_mtp")


@pytest.fixture(scope="module")
def asets(tih):
    """Active sets of the Ti-H potential by (mode, parameters), fitted on first use."""
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    cache: dict = {}

    def get(mode: str = "nbh", parameters: str = "linear"):
        if (mode, parameters) not in cache:
            cache[mode, parameters] = ActiveSet.fit(pot, train, SPECIES, mode=mode, parameters=parameters)
        return cache[mode, parameters]

    return get


def sheared(atoms: Atoms, s: float = 0.25) -> Atoms:
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ np.array([[1, s, 0], [0, 1, 0], [0, 0, 1]]), scale_atoms=True)
    return out


def scaled(atoms: Atoms, f: float) -> Atoms:
    out = atoms.copy()
    out.set_cell(atoms.cell.array * f, scale_atoms=True)
    return out


# ----------------------------------------------------------------------------------------------------------------
# grading
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parameters", ["linear", "all"])
@pytest.mark.parametrize("mode", ["nbh", "cfg"])
def test_training_structures_grade_at_most_one(tih, asets, mode, parameters):
    pot, train = tih
    aset = asets(mode, parameters)
    assert aset.mode == ("neighborhood" if mode == "nbh" else "configuration")
    assert aset.parameters == parameters
    if parameters == "linear":  # 5 moment + 2 species coefficients, full rank: motep's algorithm
        assert aset.algorithm == "maxvol-qr" and aset.matrix.shape == (7, 7)
    else:  # + 64 radial coefficients: always rank deficient (exact symmetries), regularised start
        assert aset.algorithm == "maxvol-regularized" and aset.matrix.shape == (71, 71)
    g = aset.grade_many(train)
    assert g.shape == (len(train),)
    assert np.all(g <= 1.0 + 1e-6)
    assert g.max() > 1.0 - 1e-6  # the active-set rows themselves grade exactly 1
    gamma, per_atom = aset.grade(train[30])
    assert per_atom.shape == (len(train[30]),)
    assert gamma == pytest.approx(per_atom.max())
    real = aset.sources[:, 0] >= 0
    assert np.all(aset.sources[real, 0] < len(train))
    if mode == "nbh":
        assert np.all(aset.sources[real, 1] >= 0)


@pytest.mark.parametrize("mode", ["nbh", "cfg"])
def test_distorted_structures_grade_high(tih, asets, mode):
    pot, train = tih
    x = train[30]
    distorted = (sheared(x, 0.25), scaled(x, 0.93), scaled(x, 1.15))
    # all coefficients: every strong distortion is far outside the training span
    assert min(asets(mode, "all").grade(y)[0] for y in distorted) > 10.0
    # linear coefficients (7 of them at level 6): a smoother, weaker signal
    lin = asets(mode, "linear")
    g = [lin.grade(y)[0] for y in distorted]
    assert max(g) > 1.5 and lin.grade(scaled(x, 0.85))[0] > 5.0
    # an in-distribution Ti8 cell (rattled and strained like the training data) stays near or below 1
    for parameters in ("linear", "all"):
        assert asets(mode, parameters).grade(scaled(train[5], 1.005))[0] < 1.5


def test_rows_match_motep_train_mode(tih, asets):
    """alkit's site-energy Jacobian (compiled core, evaluation pass) equals the rows motep's Grader takes from its
    train-mode engine (jac_energies / jac_energy)."""
    from motep.calculator import make_calculator

    pot, train = tih
    data = asets("nbh", "all").potential.to_motep(SPECIES)
    for atoms in (train[35], train[3], sheared(train[30], 0.1)):
        calc = make_calculator(data, mode="train")
        calc.engine.calculate(atoms)
        ref_nbh = calc.engine.jac_energies(atoms).parameters.T
        ref_cfg = calc.engine.jac_energy(atoms).parameters / len(atoms)
        ours_nbh = asets("nbh", "all").rows(atoms)
        ours_cfg = asets("cfg", "all").rows(atoms)[0]
        np.testing.assert_allclose(ours_nbh, ref_nbh, rtol=1e-10, atol=1e-12 * np.abs(ref_nbh).max())
        np.testing.assert_allclose(ours_cfg, ref_cfg, rtol=1e-10, atol=1e-12 * np.abs(ref_cfg).max())
        # the same tolerance as above: a small entry beside entries of 1e4 carries their round-off (7e-11 relative
        # on one entry of 2e-4 on an AVX-512 machine), so a purely relative 1e-12 fails on round-off alone
        lin = ref_nbh[:, :7]
        np.testing.assert_allclose(asets("nbh", "linear").rows(atoms), lin, rtol=1e-10, atol=1e-12 * np.abs(lin).max())


def test_save_load_roundtrip(tih, asets, tmp_path):
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    probe = train[20:30] + [sheared(train[30]), scaled(train[31], 0.95)]
    local = tmp_path / "pot.mtp"
    local.write_bytes(Path(pot).read_bytes())
    for aset in (asets("nbh", "linear"), asets("cfg", "linear"), asets("nbh", "all")):
        aset = dataclasses.replace(aset, mtp_path=str(local), _engine=None, _inv=None, _data=None)
        path = aset.save(tmp_path / f"{aset.mode}-{aset.parameters}.als")
        back = ActiveSet.load(path)  # finds the potential next to the file
        assert Path(back.mtp_path).resolve() == local.resolve()
        assert (back.mode, back.parameters, back.algorithm) == (aset.mode, aset.parameters, aset.algorithm)
        np.testing.assert_array_equal(back.matrix, aset.matrix)
        np.testing.assert_array_equal(back.grade_many(probe), aset.grade_many(probe))
        np.testing.assert_array_equal(back.grade(probe[-1])[1], aset.grade(probe[-1])[1])
    # a different potential is refused
    other = tmp_path / "other.mtp"
    other.write_text(re.sub(r"(species_coeffs = \{)[^,]+", r"\g<1>0.0", local.read_text(), count=1))
    assert other.read_text() != local.read_text()
    with pytest.raises(InputError, match="different potential"):
        ActiveSet.load(tmp_path / "neighborhood-linear.als", mtp_path=other)
    bad = tmp_path / "bad.als"
    bad.write_text("not an active set")
    with pytest.raises(InputError, match="cannot read active-set file"):
        ActiveSet.load(bad, mtp_path=local)
    with pytest.raises(InputError, match="does not exist"):
        ActiveSet.load(tmp_path / "missing.als")


@pytest.mark.parametrize("mode", ["nbh", "cfg"])
def test_same_gamma_as_motep_grader(tih, mode):
    """With linear parameters (where motep's active-set matrix has full rank) alkit's MaxVol reproduces motep's
    Grader to round-off."""
    from motep.grade.grader import Grader
    from motep.grade.setting import GradeMode
    from motep.io.mlip.mtp import read_mtp

    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    aset = ActiveSet.fit(pot, train, SPECIES, mode=mode, parameters="linear", energy_per_atom=False)
    assert aset.algorithm == "maxvol-qr"
    data = read_mtp(str(pot))
    data.species = [22, 1]
    data.optimized = ["species_coeffs", "moment_coeffs"]
    grader = Grader(data, seed=1, mode=GradeMode.NEIGHBORHOOD if mode == "nbh" else GradeMode.CONFIGURATION)
    grader.update(train)
    probe = train[::3] + [sheared(train[30], 0.25), scaled(train[3], 0.95), scaled(train[33], 1.15),
                          scaled(train[36], 1.06), scaled(train[30], 0.85)]
    for k, a in enumerate(probe[-8:]):
        a.rattle(0.03, seed=k)
    graded = grader.grade(probe)
    ours = aset.grade_many(probe)
    theirs = np.array([a.calc.results["MV_grade"] for a in graded])
    assert np.abs(ours - theirs).max() < 1e-6 * max(1.0, theirs.max())
    assert ours.max() > 1.5  # the comparison covers extrapolative structures too
    if mode == "nbh":
        for a in graded[-3:]:
            np.testing.assert_allclose(aset.grade(a)[1], a.calc.results["nbh_grades"], rtol=1e-6, atol=1e-9)


def test_rank_deficient_and_singular_cases_do_not_crash(tih):
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    # fewer configurations than parameters (configuration mode, early iteration), both parameter sets
    for parameters, p in (("linear", 7), ("all", 71)):
        few = ActiveSet.fit(pot, train[:3] + train[30:32], SPECIES, mode="cfg", parameters=parameters)
        assert few.algorithm == "maxvol-regularized" and few.matrix.shape == (p, p)
        assert int((few.sources[:, 0] >= 0).sum()) == 5
        assert np.all(few.grade_many(train[:3] + train[30:32]) <= 1 + 1e-6)
        assert few.grade(train[10])[0] > 1.0
    # Ti-only training data: the H species column is zero; an H-containing structure is far out of the span
    for parameters in ("linear", "all"):
        ti_only = ActiveSet.fit(pot, train[:24], SPECIES, mode="nbh", parameters=parameters)
        assert ti_only.algorithm == "maxvol-regularized"
        assert np.all(ti_only.grade_many(train[:24]) <= 1 + 1e-6)
        assert ti_only.grade(train[30])[0] > 100.0
    # the same structure many times: rank 1 (configuration mode)
    same = ActiveSet.fit(pot, [train[0]] * 4, SPECIES, mode="cfg")
    assert int((same.sources[:, 0] >= 0).sum()) == 1
    assert same.grade(train[0])[0] == pytest.approx(1.0)
    assert np.isfinite(same.grade(train[1])[0])
    # a singular active-set matrix: graded through the pseudo-inverse, no crash
    singular = dataclasses.replace(few, matrix=np.zeros_like(few.matrix), _inv=None)
    g, per_atom = singular.grade(train[0])
    assert np.isfinite(g) and per_atom.shape == (len(train[0]),)


def test_select_add(tih, asets):
    from alkit.mtp.grade import select_add

    pot, train = tih
    shear, comp, exp = sheared(train[30], 0.25), scaled(train[30], 0.93), scaled(train[30], 1.15)
    cands = [train[3].copy(), train[30].copy(), shear, comp, exp, shear.copy()]
    for aset in (asets("nbh", "all"), asets("cfg", "all"), asets("cfg", "linear")):
        gam = aset.grade_many(cands)
        chosen = select_add(aset, cands, max_add=10, train=train)
        assert chosen, "extrapolative candidates must be selected"
        assert set(chosen) <= {2, 3, 4, 5}  # never the training duplicates
        assert not {2, 5} <= set(chosen)  # a duplicate adds no volume once its twin is in
        assert len(set(chosen)) == len(chosen)
        one = select_add(aset, cands, max_add=1, train=train)
        assert len(one) == 1 and one[0] == int(np.argmax(gam))  # the largest |c| enters first
        two = select_add(aset, cands, max_add=2)  # without the training rows (the driver's call)
        assert 1 <= len(two) <= 2 and set(two) <= {2, 3, 4, 5}
        assert select_add(aset, cands, max_add=0) == []
        assert select_add(aset, [], max_add=3) == []
        # nothing is selected when every candidate is inside the training data
        assert select_add(aset, train[:5], max_add=3, train=train) == []


# ----------------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------------
def test_bad_input(tih, asets, tmp_path):
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    nbh = asets()
    with_o = train[0].copy()
    with_o.append("O")
    with_o.positions[-1] = [1.0, 1.0, 1.0]
    with pytest.raises(InputError, match=r"species \['O'\]"):
        nbh.grade(with_o)
    close = train[30].copy()
    h = int(np.where(close.numbers == 1)[0][0])
    ti = int(np.argmin(close.get_distances(h, list(range(8)), mic=True)))
    close.positions[h] = close.positions[ti] + [0.4 * nbh.min_dist, 0.0, 0.0]
    with pytest.raises(InputError, match="collapsed"):
        nbh.grade(close)
    # a contact between half min_dist and min_dist is extrapolation: graded, not refused
    near = train[30].copy()
    near.positions[h] = near.positions[ti] + [0.8 * nbh.min_dist, 0.0, 0.0]
    assert nbh.grade(near)[0] > 1.0
    with pytest.raises(InputError, match="empty"):
        ActiveSet.fit(pot, [], SPECIES)
    with pytest.raises(InputError, match="species_count"):
        ActiveSet.fit(pot, train[:3], ["Ti"])
    with pytest.raises(InputError, match="grading mode"):
        ActiveSet.fit(pot, train[:3], SPECIES, mode="atoms")
    with pytest.raises(InputError, match="parameters"):
        ActiveSet.fit(pot, train[:3], SPECIES, parameters="radial")
    corrupt = tmp_path / "corrupt.mtp"
    corrupt.write_text(Path(pot).read_text()[:400])
    with pytest.raises(InputError, match="corrupt.mtp"):
        ActiveSet.fit(corrupt, train[:3], SPECIES)
    with pytest.raises(InputError, match="does not exist"):
        ActiveSet.fit(tmp_path / "nope.mtp", train[:3], SPECIES)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def test_cli_grade_and_select_add(tih, tmp_path, capsys):
    from alkit.cli import main
    from alkit.mtp.grade import ActiveSet

    pot, train = tih
    train_file = tmp_path / "train.extxyz"
    write(train_file, train)
    probe = tmp_path / "probe.extxyz"
    write(probe, [train[1], scaled(train[31], 0.85), scaled(train[31], 1.3)])
    out = tmp_path / "graded.extxyz"
    als = tmp_path / "state.als"
    assert main(["mtp", "grade", str(pot), str(train_file), str(probe), "--out", str(out), "--als", str(als),
                 "--species", "Ti", "H"]) == 0
    graded = read(out, ":")
    assert len(graded) == 3
    assert graded[0].info["gamma"] <= 1 + 1e-6 and graded[1].info["MV_grade"] > 3
    assert graded[1].arrays["gamma"].shape == (len(graded[1]),)
    assert "graded 3 structures" in capsys.readouterr().out
    aset = ActiveSet.load(als, mtp_path=pot)
    assert aset.grade(graded[2])[0] == pytest.approx(graded[2].info["gamma"], rel=1e-9)

    out_cfg = tmp_path / "graded_cfg.cfg"
    assert main(["mtp", "grade", str(pot), str(train_file), str(probe), "--out", str(out_cfg), "--mode", "cfg",
                 "--parameters", "all", "--als", str(tmp_path / "cfg.als"), "--species", "Ti", "H"]) == 0
    assert "MV_grade" in out_cfg.read_text()
    cfg_set = ActiveSet.load(tmp_path / "cfg.als", mtp_path=pot)
    assert (cfg_set.mode, cfg_set.parameters) == ("configuration", "all")

    new = tmp_path / "new.extxyz"
    assert main(["mtp", "select-add", str(pot), str(train_file), str(probe), "--out", str(new), "--max", "1",
                 "--als", str(tmp_path / "sa.als"), "--species", "Ti", "H"]) == 0
    sel = read(new, ":")
    assert len(sel) == 1 and sel[0].info["candidate_index"] in (1, 2)
    assert "selected 1 of 3" in capsys.readouterr().out

    assert main(["mtp", "grade", str(pot), str(tmp_path / "missing.extxyz"), str(probe), "--out", str(out),
                 "--species", "Ti", "H"]) == 2
    assert "missing.extxyz" in capsys.readouterr().err


@pytest.mark.parametrize("rank_deficient", [False, True, "round-off"])
def test_maxvol_holds_for_rows_spanning_many_orders_of_magnitude(rank_deficient):
    """Level-16 basis rows span 1e-5..4e11 per column. There, the Sherman-Morrison updates of the swap loop drifted
    until the loop stopped on a set that graded its own training rows at gamma ~ 500 (a workstation campaign then broke
    every MD at step 0), and ``np.linalg.inv`` of the active set lost every digit. Both loops now re-check c exactly
    before they stop, and the inverse is taken after equilibration."""
    from alkit.mtp.grade import _inverse, maxvol_qr, maxvol_regularized

    rng = np.random.default_rng(3)
    n, p = 3000, 60
    B = rng.standard_normal((n, p)) @ np.diag(10.0 ** np.linspace(-5, 11, p))
    if rank_deficient is True:  # one direction no row spans: only MLIP-2's regularised start applies
        B[:, 7] = 2.0 * B[:, 3]
    elif rank_deficient:
        # the same, but the dependent column is built from columns of ~1e12, so every row has a round-off component
        # of ~1e-4 along the missing direction: above an absolute eps = 1e-5, the loop swapped that noise in and the
        # set graded its own rows at gamma ~ 15 (a workstation campaign: 198 of 202 training structures above 1)
        B = rng.standard_normal((n, p)) @ np.diag(10.0 ** np.linspace(-5, 13, p))
        B[:, 7] = 0.3 * B[:, 55] + 0.7 * B[:, 58]
    state = maxvol_qr(B)
    if rank_deficient:
        assert state is None
        state = maxvol_regularized(B)
    assert state.success
    gamma = np.abs(B @ _inverse(state.A)).max(axis=1)
    assert gamma.max() <= 1.0 + 1e-5
    # the equilibrated inverse is an inverse to round-off relative to the scaling (plain inv is not tested: it may
    # or may not survive a given random matrix)
    A = state.A
    s = np.abs(A).max(axis=0)
    assert np.abs((A @ _inverse(A)) - np.eye(p)).max() < 1e-6 or rank_deficient
    assert np.abs((A / s) @ (_inverse(A) * s[:, None]) - np.eye(p)).max() < 1e-6
