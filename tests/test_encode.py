"""Encoder stage: real pretrained weights (M3GNet/MEGNet Eform, M3GNet PES), real SQLite cache, real CLI."""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import write
from pymatgen.core import Lattice, Structure

from alkit import cli
from alkit.encode import (
    FeatureCache,
    LocalDescriptorEncoder,
    M3GNetEncoder,
    MEGNetEncoder,
    encode,
    get_encoder,
)
from alkit.errors import ConfigError, InputError
from alkit.io import to_atoms, to_structure


def _tih(rep=(2, 2, 2), n_h=1, seed=0) -> Atoms:
    """A small rattled hcp-Ti cell with interstitial H (Ti-H is alkit's first system)."""
    atoms = bulk("Ti", "hcp", a=2.95, c=4.68).repeat(rep)
    rng = np.random.default_rng(seed)
    placed = 0
    while placed < n_h:
        trial = atoms + Atoms("H", positions=[atoms.cell.cartesian_positions(rng.random(3))])
        if trial.get_distances(len(trial) - 1, range(len(trial) - 1), mic=True).min() > 1.6:
            atoms, placed = trial, placed + 1
    atoms.rattle(0.05, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def m3g(model_dir):
    return M3GNetEncoder(model_dir=model_dir, batch_size=4).fit()


@pytest.fixture(scope="module")
def cells():
    return [_tih(seed=s) for s in range(5)]


# ---------------------------------------------------------------------------------------------- weights and shim
def test_cscl_formation_energy_matches_published(m3g):
    # matgl's README structure for CsCl (Materials Project relaxed, Pm-3m, a = 4.1437 Å).
    cscl = Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.1437), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    eform = m3g.predict_eform([cscl])
    assert eform.shape == (1,)
    assert eform[0] == pytest.approx(-2.2196, abs=1e-3)


def test_m3gnet_pes_energy_of_matgl_mos_reference(model_dir):
    from alkit._compat import import_matgl
    from alkit.config import PES_MODEL, model_path

    matgl = import_matgl()
    from matgl.ext.ase import PESCalculator

    pot = matgl.load_model(str(model_path(PES_MODEL, model_dir)))
    # matgl tests/conftest.py ``MoS`` fixture; tests/ext/test_ase.py expects -10.824362 eV.
    mos = to_atoms(Structure(Lattice.cubic(4.0), ["Mo", "S"], [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]))
    mos.calc = PESCalculator(potential=pot)
    assert mos.get_potential_energy() == pytest.approx(-10.824362, abs=1e-4)


def test_readout_is_the_vector_feeding_the_final_mlp(m3g, cells):
    import torch

    X = m3g.transform(cells)
    assert X.shape == (len(cells), 128) and X.dtype == np.float32
    # Same vector as matgl's own single-structure path (pymatgen graph converter, unbatched) ...
    ref = m3g.net_.predict_structure(to_structure(cells[0]), return_features=True, output_layers=["readout"])
    np.testing.assert_allclose(X[0], ref["readout"].detach().numpy()[0], atol=1e-5)
    # ... and the final MLP applied to it gives the model's formation energy.
    with torch.no_grad():
        e = m3g.model_.transformer.inverse_transform(m3g.net_.final_layer(torch.from_numpy(X))).numpy().ravel()
    np.testing.assert_allclose(e, m3g.predict_eform(cells), atol=1e-5)


@pytest.mark.filterwarnings("ignore:For a single graph")
def test_megnet_readout_feeds_its_output_mlp(model_dir, cells):
    import torch

    enc = get_encoder("megnet", model_dir=model_dir, batch_size=2).fit()
    assert isinstance(enc, MEGNetEncoder)
    X = enc.transform(cells[:3])
    assert X.shape == (3, 160) and X.dtype == np.float32
    with torch.no_grad():
        e = enc.model_.transformer.inverse_transform(enc.net_.output_proj(torch.from_numpy(X))).numpy().ravel()
    ref = [float(enc.model_.predict_structure(to_structure(a))) for a in cells[:3]]
    np.testing.assert_allclose(e, ref, atol=1e-4)


# ---------------------------------------------------------------------------------------------- behaviour
def test_deterministic_and_batch_independent(m3g, model_dir, cells):
    X1 = m3g.transform(cells)
    X2 = m3g.transform(cells)
    np.testing.assert_array_equal(X1, X2)
    single = M3GNetEncoder(model_dir=model_dir, batch_size=1).transform(cells)
    np.testing.assert_allclose(single, X1, atol=1e-5)
    capped = M3GNetEncoder(model_dir=model_dir, batch_size=8, max_batch_atoms=40).transform(cells)  # 2 per batch
    np.testing.assert_allclose(capped, X1, atol=1e-5)


def test_forward_batches_respect_structure_and_atom_caps():
    enc = M3GNetEncoder(batch_size=3, max_batch_atoms=40)
    sizes = [17, 17, 17, 50, 2, 2, 2, 2]
    spans = enc._batches([Atoms("H" * n) for n in sizes])
    assert spans == [(0, 2), (2, 3), (3, 4), (4, 7), (7, 8)]
    from sklearn.base import clone

    assert clone(enc).get_params() == enc.get_params()


def test_atoms_and_structure_give_the_same_vector(m3g, cells):
    X = m3g.transform([cells[1], to_structure(cells[1])])
    np.testing.assert_allclose(X[0], X[1], atol=1e-6)


def test_invariant_to_permutation_supercell_and_rigid_motion(m3g, cells):
    a = cells[2]
    perm = a[np.random.default_rng(3).permutation(len(a))]
    sup = a.repeat((2, 1, 1))
    moved = a.copy()
    moved.rotate(37, "z", rotate_cell=True)
    moved.translate([0.3, -0.2, 0.1])
    X = m3g.transform([a, perm, sup, moved])
    for k in (1, 2, 3):
        np.testing.assert_allclose(X[k], X[0], atol=1e-5)
    # ... while a real change of the structure changes the vector.
    squeezed = a.copy()
    squeezed.set_cell(a.cell * 0.97, scale_atoms=True)
    assert np.abs(m3g.transform([squeezed])[0] - X[0]).max() > 1e-3


def test_cache_hit_runs_no_model_and_survives_a_new_process_object(model_dir, cells, tmp_path):
    first = M3GNetEncoder(model_dir=model_dir, batch_size=2, cache_dir=tmp_path).fit()
    X = first.transform(cells + [cells[0]])  # a duplicate is encoded once
    assert first.n_encoded_ == len(cells)
    assert first.n_model_calls_ == 3  # 5 unique structures in batches of 2

    second = M3GNetEncoder(model_dir=model_dir, batch_size=2, cache_dir=tmp_path).fit()
    calls = []
    second.net_.register_forward_hook(lambda *args: calls.append(1))
    np.testing.assert_array_equal(second.transform(cells + [cells[0]]), X)
    assert calls == [] and second.n_encoded_ == 0

    new = _tih(seed=99)
    Y = second.transform([cells[0], new])
    assert len(calls) == 1 and second.n_encoded_ == 1
    np.testing.assert_allclose(Y[1], M3GNetEncoder(model_dir=model_dir).transform([new])[0], atol=1e-6)
    assert len(FeatureCache(tmp_path, second.identity_, 128)) == len(cells) + 1


def test_cache_is_keyed_by_encoder_identity(model_dir, cells, tmp_path):
    m = M3GNetEncoder(model_dir=model_dir, cache_dir=tmp_path)
    loc = LocalDescriptorEncoder(species=["H", "Ti"], cache_dir=tmp_path)
    assert m.transform(cells[:1]).shape == (1, 128)
    assert loc.transform(cells[:1]).shape == (1, loc.n_features_out_)
    names = sorted(p.name for p in tmp_path.glob("*.sqlite"))
    assert len(names) == 2 and names[0].startswith("M3GNet-MP-2018.6.1-Eform-") and names[1].startswith("local-")


def test_cache_survives_a_kill_mid_write(tmp_path):
    """A process SIGKILLed while writing leaves every stored vector whole and correct."""
    script = textwrap.dedent(f"""
        import numpy as np
        from alkit.encode import FeatureCache
        cache = FeatureCache({str(tmp_path)!r}, "kill-test", 128)
        i = 0
        while True:
            cache.put({{f"k{{j}}": np.full(128, j, np.float32) for j in range(i, i + 50)}})
            i += 50
            if i == 200:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cache = FeatureCache(tmp_path, "kill-test", 128)
    n = len(cache)
    assert n >= 200 and n % 50 == 0  # only whole transactions
    got = cache.get([f"k{j}" for j in range(n + 50)])
    assert len(got) == n
    assert all(np.all(v == int(k[1:])) for k, v in got.items())


def test_encoder_pickles_without_its_model(m3g, cells):
    clone = pickle.loads(pickle.dumps(m3g))
    assert getattr(clone, "model_", None) is None
    np.testing.assert_allclose(clone.transform(cells[:2]), m3g.transform(cells[:2]), atol=1e-6)


# ---------------------------------------------------------------------------------------------- model-free encoder
def test_local_encoder_shape_and_invariances(cells):
    enc = LocalDescriptorEncoder(species=["H", "Ti"], n_radial=8).fit()
    a = cells[0]
    perm = a[np.random.default_rng(1).permutation(len(a))]
    sup = a.repeat((1, 2, 2))
    moved = a.copy()
    moved.rotate(55, "x", rotate_cell=True)
    X = enc.transform([a, perm, sup, moved, cells[1]])
    assert X.shape == (5, 2 * 2 * 8 * 2 + 2) and X.dtype == np.float32
    assert enc.get_feature_names_out().shape == (X.shape[1],)
    for k in (1, 2, 3):
        np.testing.assert_allclose(X[k], X[0], atol=1e-5)
    assert np.abs(X[4] - X[0]).max() > 1e-3
    np.testing.assert_allclose(X[0, -2:], [1 / 17, 16 / 17], atol=1e-6)  # composition H, Ti


def test_fast_neighbour_search_matches_ase():
    from ase.neighborlist import neighbor_list

    from alkit.encode import _neighbors

    a = bulk("Ti", "hcp", a=2.95, c=4.68) * (2, 1, 1)
    a.set_cell(a.cell.array + [[0, 0, 0], [0.4, 0, 0], [0.3, -0.2, 0]], scale_atoms=True)  # triclinic
    a.rattle(0.1, seed=4)
    fast = sorted(zip(*(np.round(x, 6).tolist() for x in _neighbors(a, 5.0))))
    ref = sorted(zip(*(np.round(x, 6).tolist() for x in neighbor_list("ijd", a, 5.0))))
    assert len(fast) > 50 and fast == ref
    mol = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])  # non-periodic: ASE path
    assert len(_neighbors(mol, 2.0)[0]) == 6


def test_local_encoder_learns_species_then_rejects_unknown_elements(cells):
    enc = LocalDescriptorEncoder()
    X = enc.transform(cells[:2])  # species learned from the first input
    assert enc.species_ == ("H", "Ti")
    assert X.shape[1] == enc.n_features_out_
    cu = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(InputError, match=r"\['Cu'\] not in the encoder's species list"):
        enc.transform([cells[0], cu])
    with pytest.raises(ConfigError, match="element symbols"):
        LocalDescriptorEncoder(species=["Ti", "Xx"]).fit()


def test_any_callable_is_an_encoder(cells):
    X = encode(cells, lambda structures: np.array([[len(a), a.get_volume()] for a in structures]))
    assert X.shape == (len(cells), 2) and X.dtype == np.float32
    with pytest.raises(InputError, match="shape"):
        encode(cells, lambda structures: np.zeros((1, 3)))
    with pytest.raises(InputError, match="non-finite"):
        encode(cells, lambda structures: np.full((len(structures), 2), np.nan))


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_problem(m3g):
    for enc in (m3g, LocalDescriptorEncoder(species=["Ti"])):
        with pytest.raises(InputError, match="empty"):
            enc.transform([])
    with pytest.raises(InputError, match="empty"):
        encode([], m3g)
    with pytest.raises(InputError, match="expected ase.Atoms"):
        m3g.transform(["not a structure"])
    with pytest.raises(InputError, match=r"\['Po'\].*does not know"):
        m3g.transform([Atoms("Po2", positions=[[0, 0, 0], [1.6, 1.6, 1.6]], cell=[3.2] * 3, pbc=True)])
    with pytest.raises(InputError, match="degenerate"):
        m3g.transform([Atoms("Ti", cell=[[0, 0, 0]] * 3, pbc=True)])
    with pytest.raises(ConfigError, match="unknown encoder"):
        get_encoder("soap")
    with pytest.raises(ConfigError, match="not an intensive M3GNet property model"):
        M3GNetEncoder(model_dir=m3g.model_dir, model_name="M3GNet-MP-2021.2.8-PES").fit()
    with pytest.raises(ConfigError, match="batch_size"):
        M3GNetEncoder(batch_size=0).transform([bulk("Ti")])


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_reads_every_ase_format(tmp_path, capsys, cells):
    write(tmp_path / "a.extxyz", cells[:2])
    write(tmp_path / "b.traj", cells[2:4])
    write(tmp_path / "c.db", cells[4:5])
    write(tmp_path / "POSCAR", cells[0], format="vasp")
    write(tmp_path / "d.cif", cells[1])
    files = [str(tmp_path / n) for n in ("a.extxyz", "b.traj", "c.db", "POSCAR", "d.cif")]
    out = tmp_path / "features.npy"
    assert cli.main(["encode", *files, "--out", str(out), "--encoder", "local", "--species", "H", "Ti", "-q"]) == 0
    X = np.load(out)
    assert X.shape == (7, LocalDescriptorEncoder(species=["H", "Ti"]).fit().n_features_out_) and X.dtype == np.float32
    np.testing.assert_allclose(X[5], X[0], atol=1e-4)  # the POSCAR is the first extxyz frame
    printed = capsys.readouterr().out
    assert "N=7" in printed and f"d={X.shape[1]}" in printed and " s " in printed


def test_cli_m3gnet_with_cache(tmp_path, capsys, model_dir, cells):
    write(tmp_path / "s.extxyz", cells[:3])
    out = tmp_path / "f.npy"
    args = ["encode", str(tmp_path / "s.extxyz"), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
            "--model-dir", str(model_dir), "--batch-size", "2"]
    assert cli.main(args) == 0
    X = np.load(out)
    assert X.shape == (3, 128) and X.dtype == np.float32
    assert "N=3" in capsys.readouterr().out
    assert cli.main(args) == 0  # second run: everything from the cache
    np.testing.assert_array_equal(np.load(out), X)


def test_cli_unreadable_file_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.xyz"
    bad.write_text("3\nnot really\nTi 0 0\n")
    assert cli.main(["encode", str(bad), "--out", str(tmp_path / "f.npy"), "--encoder", "local"]) == 2
    err = capsys.readouterr().err
    assert "broken.xyz" in err and "cannot read" in err
    assert not (tmp_path / "f.npy").exists()
    assert cli.main(["encode", str(tmp_path / "missing.traj"), "--out", str(tmp_path / "f.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
