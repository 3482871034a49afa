"""Ti-H structure and scenario builders (alkit.systems.ti_h): real ASE/pymatgen/spglib, no stubs."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from alkit.errors import ConfigError
from alkit.io import check_structure
from alkit.scenarios import load_scenarios, save_scenarios
from alkit.systems import ti_h

warnings.filterwarnings("ignore", message="No Pauling electronegativity")

RATIOS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


@pytest.fixture(scope="module")
def paper():
    return ti_h.ti_h_scenarios()


@pytest.fixture(scope="module")
def paper_structures(paper):
    """One scenario per distinct starting structure."""
    seen: dict[str, object] = {}
    for s in paper:
        seen.setdefault(s.tags["structure"], s)
    return seen


def _pair_min(atoms: Atoms, zi: int, zj: int, cutoff: float = 4.0) -> float:
    i, j, d = neighbor_list("ijd", atoms, cutoff)
    m = (atoms.numbers[i] == zi) & (atoms.numbers[j] == zj)
    return float(d[m].min()) if m.any() else math.inf


def _spacegroup(atoms: Atoms) -> int:
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from alkit.io import to_structure

    return SpacegroupAnalyzer(to_structure(atoms), symprec=1e-3).get_space_group_number()


# --------------------------------------------------------------------------------------------- paper set
def test_paper_set_counts_ids_and_tags(paper):
    assert len(paper) == 274
    ids = [s.id for s in paper]
    assert len(set(ids)) == 274
    for wanted in ("hcp-TiH0.50-1000K", "gb-tilt-bcc-TiH1.00-300K", "gb-twist-fcc-TiH2.00-3000K",
                   "omega-TiH0.00-300K", "eps-TiH2-3000K", "h2-300K"):
        assert wanted in ids
    kinds = [s.tags["kind"] for s in paper]
    assert kinds.count("bulk") == (4 * 9 + 1) * 3
    assert kinds.count("gb") == 3 * 2 * 9 * 3
    assert kinds.count("molecular") == 1
    assert {s.tags["structure"] for s in paper}.__len__() == 92  # 91 Ti-containing + H2
    for s in paper:
        assert s.tags["temperature"] == s.temperature
        assert s.timestep_fs == 0.5 and s.steps == 20000 and s.snapshot_interval == 1
        if s.tags["kind"] == "molecular":
            assert s.temperature == 300.0 and s.tags["phase"] == "H2"
        else:
            assert s.ensemble == "npt" and s.temperature in (300.0, 1000.0, 3000.0)
            assert s.id.endswith(f"-{s.temperature:g}K")
    gb_kinds = {(s.tags["phase"], s.tags["gb"]) for s in paper if s.tags["kind"] == "gb"}
    assert gb_kinds == {(p, k) for p in ("hcp", "bcc", "fcc") for k in ("twist", "tilt")}


def test_paper_compositions_exact(paper_structures):
    for key, s in paper_structures.items():
        n_ti, n_h = int((s.atoms.numbers == 22).sum()), int((s.atoms.numbers == 1).sum())
        assert (n_ti, n_h) == (s.tags["n_ti"], s.tags["n_h"])
        if s.tags["kind"] == "bulk" and s.tags["phase"] != "eps":
            assert n_ti == 36
            assert n_h == round(36 * s.tags["h_per_ti_nominal"])  # 0, 9, ..., 72
        elif s.tags["kind"] == "gb":
            assert n_h == math.floor(s.tags["h_per_ti_nominal"] * n_ti + 0.5)
        elif s.tags["phase"] == "eps":
            assert (n_ti, n_h) == (36, 72)
        else:
            assert (n_ti, n_h) == (0, 72)
    for phase in ti_h.PHASES:
        got = sorted(paper_structures[f"{phase}-TiH{x:.2f}"].tags["n_h"] for x in RATIOS)
        assert got == [0, 9, 18, 27, 36, 45, 54, 63, 72]


def test_paper_structures_are_sound_and_h_is_interstitial(paper_structures):
    for key, s in paper_structures.items():
        a = s.atoms
        check_structure(a, min_dist=0.6, name=key)
        i, j, d = neighbor_list("ijd", a, 2.4)
        zi, zj = a.numbers[i], a.numbers[j]
        def pair_min(p, q):
            m = (zi == p) & (zj == q)
            return d[m].min() if m.any() else math.inf
        assert pair_min(22, 1) > 0.7 and pair_min(1, 1) > 0.6 and pair_min(22, 22) > 2.0, key
        if s.tags["kind"] == "molecular" or s.tags["n_h"] == 0:
            continue
        # Every H sits in a hole: its nearest Ti at a typical Ti-H bond length, and no two H closer than 1 A.
        m = (zi == 1) & (zj == 22)
        nearest = np.full(len(a), np.inf)
        np.minimum.at(nearest, i[m], d[m])
        h_near = nearest[a.numbers == 1]
        assert np.all((h_near > 1.6) & (h_near < 2.3)), (key, h_near.min(), h_near.max())
        assert pair_min(1, 1) >= 1.0 - 1e-9, key


def test_bulk_sites_are_tetrahedral_and_octahedral():
    for phase in ti_h.PHASES:
        host = ti_h.bulk_host(phase)
        assert host.n_ti == 36
        assert host.n_sites == {"bcc": 9 * 36}.get(phase, 3 * 36)
        probe = host.atoms.copy()
        probe += Atoms("H%d" % host.n_sites, positions=host.sites)
        i, j, d = neighbor_list("ijd", probe, 2.45)
        m = (i >= 36) & (j < 36)
        for k, kind in enumerate(host.site_kinds):
            ds = d[m & (i == 36 + k)]
            if kind == "tet":  # 4 equidistant Ti
                assert len(ds) == 4 and np.ptp(ds) < 1e-6, (phase, kind, ds)
            else:  # octahedron (distorted in bcc and omega)
                assert len(ds) == 6, (phase, kind, ds)
        # no duplicate sites
        assert _pair_min(Atoms("H%d" % host.n_sites, positions=host.sites, cell=host.atoms.cell, pbc=True), 1, 1) > 0.8


def test_h_fills_both_site_kinds(paper_structures):
    for phase in ti_h.PHASES:
        s = ti_h.ti_h_bulk(phase, 2.0)
        kinds = set(s.get_array("site_kind")[s.numbers == 1].tolist())
        assert kinds == {1, 2}, phase
    only_tet = ti_h.ti_h_bulk("fcc", 1.0, site_kinds=("tet",))
    assert set(only_tet.get_array("site_kind")[only_tet.numbers == 1].tolist()) == {1}


def test_space_groups_of_bulk_phases():
    expected = {"hcp": 194, "bcc": 229, "fcc": 225, "omega": 191}
    for phase, number in expected.items():
        assert _spacegroup(ti_h.bulk_host(phase).atoms) == number, phase
        assert _spacegroup(ti_h.ti_h_bulk(phase, 0.0)) == number, phase
    assert _spacegroup(ti_h.epsilon_tih2()) == 139
    assert _spacegroup(ti_h.h2_crystal()) == 194
    h2 = ti_h.h2_crystal()
    assert len(h2) == 72 and abs(_pair_min(h2, 1, 1) - 0.741) < 1e-6


def test_literature_lattice_and_hydrogen_expansion():
    hcp = ti_h.ti_unit_cell("hcp")
    assert np.allclose(hcp.cell.cellpar()[[0, 2]], [2.9508, 4.6855])
    eps = ti_h.epsilon_tih2((1, 1, 1))
    assert len(eps) == 3 and abs(_pair_min(eps, 22, 1) - 1.925) < 0.01
    v0 = ti_h.ti_h_bulk("fcc", 0.0).cell.volume
    v2 = ti_h.ti_h_bulk("fcc", 2.0).cell.volume
    assert v2 == pytest.approx(v0 + 72 * 2.2)
    assert ti_h.ti_h_bulk("fcc", 2.0, h_volume=0.0).cell.volume == pytest.approx(v0)
    custom = ti_h.ti_unit_cell("bcc", lattice={"bcc": {"a": 3.25}})
    assert np.allclose(custom.cell.lengths(), 3.25)


# --------------------------------------------------------------------------------------------- grain boundaries
def test_paper_gbs_have_boundaries_10_A_apart(paper_structures):
    for key, s in paper_structures.items():
        if s.tags["kind"] != "gb":
            continue
        assert s.tags["gb_separation"] >= 10.0, key
        assert 30 <= s.tags["n_ti"] <= 100, key


def test_gb_separation_measure():
    # Two slabs of a simple cubic lattice, 4 layers each, spacing 2 A, in a 16 A cell: boundaries midway
    # between the facing layers, 8 A apart.
    layers = np.arange(8) * 2.0 + 0.5
    pos = np.array([[0, 0, z] for z in layers])
    atoms = Atoms("Ti8", positions=pos, cell=[2, 2, 16], pbc=True)
    grain = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert ti_h.gb_separation(atoms, grain) == pytest.approx(8.0)
    # Unequal grains (3 + 5 layers): boundaries at 5.5 and 15.5 (wrapping), 6 A apart the short way.
    assert ti_h.gb_separation(atoms, np.array([0, 0, 0, 1, 1, 1, 1, 1])) == pytest.approx(6.0)
    # A grain that wraps around the periodic boundary is handled.
    shifted = atoms.copy()
    shifted.positions[:, 2] += 13.0
    shifted.wrap()
    assert ti_h.gb_separation(shifted, grain) == pytest.approx(8.0)


def test_gb_construction_details():
    host = ti_h.grain_boundary_host("bcc", "tilt", min_separation=10.0)
    cell = host.atoms.cell.array
    # c is normal to the boundary plane, so the separation is half the cell height.
    assert abs(cell[2] @ cell[0]) < 1e-6 and abs(cell[2] @ cell[1]) < 1e-6
    half = np.linalg.norm(cell[2]) / 2
    assert half - 1.0 <= host.info["separation"] <= half + 1e-6
    assert host.info["separation"] >= 10.0
    assert set(host.grain.tolist()) == {0, 1}
    assert _pair_min(host.atoms, 22, 22) > 0.7 * 2.866
    assert set(host.site_kinds.tolist()) == {"tet", "oct"}
    # every remaining site is a hole: nearest Ti within the bulk range
    for s in (ti_h.add_hydrogen(host, host.n_ti, 0),):
        check_structure(s, 0.7)
    # grain thickness grows to meet a larger separation
    wide = ti_h.grain_boundary_host("bcc", "tilt", min_separation=20.0)
    assert wide.info["separation"] >= 20.0 and wide.n_ti > host.n_ti
    for phase in ti_h.GB_PHASES:
        assert ti_h.is_symmetric_tilt(phase, ti_h.DEFAULT_GB_SPECS[phase]["tilt"])
        assert not ti_h.is_symmetric_tilt(phase, ti_h.DEFAULT_GB_SPECS[phase]["twist"])
    assert not ti_h.is_symmetric_tilt("bcc", {"axis": [0, 0, 1], "angle": 36.869898, "plane": [1, 1, 0]})


# --------------------------------------------------------------------------------------------- determinism, I/O
def test_determinism_and_seed():
    a = ti_h.ti_h_scenarios("tiny")
    b = ti_h.ti_h_scenarios("tiny")
    assert [s.id for s in a] == [s.id for s in b]
    for x, y in zip(a, b):
        assert np.array_equal(x.atoms.numbers, y.atoms.numbers)
        assert np.allclose(x.atoms.positions, y.atoms.positions)
    c = ti_h.ti_h_scenarios("tiny", seed=1)
    differs = [not np.allclose(x.atoms.positions, y.atoms.positions) for x, y in zip(a, c) if x.tags["n_h"]
               and x.tags["kind"] != "molecular" and x.tags["phase"] != "eps"]
    assert any(differs)
    # A structure does not depend on which other structures are built.
    alone = ti_h.ti_h_bulk("hcp", 1.0, supercell=(2, 2, 1))
    in_set = next(s for s in a if s.id == "hcp-TiH1.00-300K")
    assert np.allclose(alone.positions, in_set.atoms.positions)


def test_round_trip_paper_set(paper, tmp_path):
    path = tmp_path / "ti_h.json"
    save_scenarios(path, paper)
    back = load_scenarios(path)
    assert [s.id for s in back] == [s.id for s in paper]
    for x, y in zip(paper, back):
        assert np.array_equal(x.atoms.numbers, y.atoms.numbers)
        assert np.allclose(x.atoms.positions, y.atoms.positions)
        assert np.allclose(x.atoms.cell.array, y.atoms.cell.array)
        assert (x.temperature, x.ensemble, x.steps, x.snapshot_interval, x.tags) == \
               (y.temperature, y.ensemble, y.steps, y.snapshot_interval, y.tags)


def test_presets():
    assert set(ti_h.PRESETS) == {"paper", "quick", "tiny"}
    tiny = ti_h.ti_h_scenarios("tiny")
    assert 4 <= len(tiny) <= 10 and max(len(s.atoms) for s in tiny) <= 20
    assert {s.tags["kind"] for s in tiny} == {"bulk", "gb", "molecular"}
    quick = ti_h.ti_h_scenarios("quick")
    assert len(quick) == 31
    assert {s.temperature for s in quick} == {300.0, 1000.0}
    assert all(s.steps == 400 for s in quick) and max(len(s.atoms) for s in quick) <= 110
    for s in tiny + quick:
        check_structure(s.atoms, 0.6, s.id)
    # overrides on top of a preset
    few = ti_h.ti_h_scenarios("tiny", temperatures=(500,), steps=7, h2=False, gbs={})
    assert [s.id for s in few] == ["hcp-TiH0.00-500K", "hcp-TiH1.00-500K", "bcc-TiH0.00-500K",
                                   "bcc-TiH1.00-500K", "eps-TiH2-500K"]
    assert all(s.steps == 7 for s in few)


def test_relax_lattice_with_an_ase_calculator():
    from ase.build import bulk
    from ase.calculators.emt import EMT

    start = bulk("Cu", "fcc", a=3.80)
    relaxed = ti_h.relax_lattice(start, EMT(), fmax=0.005, steps=300)
    assert relaxed.cell.volume < start.cell.volume
    assert np.abs(relaxed.get_stress()).max() < 5e-3  # eV/A^3
    assert start.calc is None  # the input is left alone


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"phases": ("hcp", "rutile")}, "unknown Ti phase 'rutile'"),
        ({"h_per_ti": (3.5,)}, "interstitial sites"),
        ({"h_per_ti": (-0.5,)}, "H/Ti ratio"),
        ({"h_per_ti": (0.25, 0.251)}, "collide"),
        ({"min_hh_distance": 3.0, "h_per_ti": (2.0,)}, "could place only"),
        ({"supercells": {"hcp": (0, 2, 2)}}, "supercell"),
        ({"supercells": {"bct": (2, 2, 2)}}, "unknown phase"),
        ({"gbs": {"omega": ["tilt"]}}, "grain boundaries are built for"),
        ({"gbs": {"bcc": ["mixed"]}}, "unknown grain-boundary kind"),
        ({"temperatures": (300, -5)}, "temperatures"),
        ({"steps": 0}, "steps"),
        ({"ensemble": "nve"}, "ensemble"),
        ({"lattice": {"hcp": {"b": 3.0}}}, "unknown constants"),
        ({"temprature": (300,)}, "unknown Ti-H scenario parameters"),
        ({"site_kinds": ("tet", "hex")}, "site_kinds"),
        ({"gb_rm_ratio": 1.5}, "gb_rm_ratio"),
        ({"h2_supercell": (1, 1)}, "h2_supercell"),
    ],
)
def test_bad_parameters_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ti_h.ti_h_scenarios("tiny", **kwargs)


def test_bad_preset_and_gb_spec():
    with pytest.raises(ConfigError, match="unknown Ti-H preset"):
        ti_h.ti_h_scenarios("huge")
    with pytest.raises(ConfigError, match="not a symmetric tilt"):
        ti_h.grain_boundary_host("bcc", "tilt", {"plane": [1, 1, 0]})
    with pytest.raises(ConfigError, match="only 108"):
        ti_h.ti_h_bulk("fcc", 3.1)
