"""Ti-H recipe: titanium hydrides in four Ti phases, epsilon-TiH2, grain boundaries and solid H2.

Presets:
- ``paper``: the reference paper's 274 scenarios (4 phases x 9 compositions, 6 GBs x 9 compositions, epsilon-TiH2, at
  300/1000/3000 K NpT, + H2 at 300 K), 10 ps (20,000 x 0.5 fs) M3GNet trajectories down-sampled to 1,000 frames
  each through DIRECT, GPAW PBE labels at the paper's settings. Weeks of CPU: run it on a cluster (Dask executor).
- ``quick``: a scaled version (31 scenarios of 16-30 atoms at 300/1000 K) that finishes on 2 CPU cores with the
  CHGNet stand-in labeller (measured here: 4-25 min per campaign, the M3GNet pool MD being most of it).
- ``tiny``: a handful of <= 20-atom scenarios for tests and demos (minutes).

Usage: ``alkit run ti_h --preset quick --mode direct`` (or ``--mode scratch`` for AL from scratch).
"""
from __future__ import annotations

from ase import Atoms

from alkit.campaign import ALConfig
from alkit.systems.ti_h import ti_h_bulk, ti_h_scenarios
from alkit.validate import MDSystem, ValidationSpec

PRESETS = {
    "quick": "31 small Ti-H scenarios at 300/1000 K, CHGNet labels, MTP level 12 fitted to convergence (~11 min pool MD + 10-15 min AL on 2 cores)",
    "paper": "the paper's 274 scenarios, GPAW PBE labels, MTP level 20 fitted to convergence, LAMMPS MD (cluster scale)",
    "workstation": "37 Ti-H scenarios of <= 32 atoms at 300/1000/3000 K (4 phases x 2 H contents, a GB per phase, eps-TiH2, H2), 2-ps MTP MD (LAMMPS), level 16 to convergence, CHGNet labels (sized from measured rates; seed-0 results in the README)",
    "tiny": "4 scenarios (hcp/bcc Ti8 and Ti8H2) at 300 K, CHGNet labels, MTP level 6 fitted to convergence (tests, minutes)",
}


def build(preset: str, mode: str) -> ALConfig:
    if preset == "paper":
        pool = ti_h_scenarios("paper")  # 20,000 steps, every snapshot kept
        explore = ti_h_scenarios("paper", snapshot_interval=100)
        return ALConfig(
            name="ti_h-paper", species=["Ti", "H"], scenarios=explore, pool_scenarios=pool, mode=mode,
            pool_potential="m3gnet", pool_per_trajectory=1000, encoder="m3gnet",
            n_clusters=1000, k=1, labeller="gpaw", labeller_kwargs={"preset": "paper"},
            mtp_level=20, cutoff=5.0, loss_weights=(1.0, 0.01, 0.0), bfgs_maxiter=1000, fit_threads=8,
            gamma_select=3.0, gamma_break=3.0, explore_engine="lammps", al_budget=50, max_iterations=40,
            executor="dask", n_workers=32,
        )
    if preset == "workstation":
        # Sized from measured rates on 2 cores (README benchmarks): M3GNet ~25 steps/s per core for ~32 atoms, so the
        # 37 x 1,000-step pool trajectories take ~12 min (run once, shared by all campaigns of a comparison); level-16
        # MTP MD in LAMMPS runs a 4,000-step scenario of <= 32 atoms in well under a minute, so one exploration of
        # every scenario is <= ~10 min on 2 workers; a converged level-16 fit of ~200 cells of ~30 atoms is ~2-4 min.
        # That gives ~3-4 AL iterations in 45 min; the 3000 K runs are where scratch AL is expected to need more.
        ws = dict(h_per_ti=(0.125, 1.0),
                  supercells={"hcp": (2, 2, 2), "bcc": (2, 2, 2), "fcc": (2, 2, 2), "omega": (2, 2, 1)},
                  gbs={"hcp": ["twist"], "bcc": ["tilt"], "fcc": ["tilt"]}, gb_h_per_ti=(0.125,),
                  gb_min_separation=4.0, epsilon_supercell=(2, 2, 2), h2_supercell=(2, 2, 1),
                  temperatures=(300.0, 1000.0, 3000.0))
        pool = ti_h_scenarios("quick", steps=1000, snapshot_interval=10, **ws)
        explore = ti_h_scenarios("quick", steps=4000, snapshot_interval=100, **ws)
        return ALConfig(
            name="ti_h-workstation", species=["Ti", "H"], scenarios=explore, pool_scenarios=pool, mode=mode,
            pool_potential="m3gnet", encoder="m3gnet", n_clusters=80, k=1,
            labeller="chgnet", mtp_level=16, cutoff=5.0, loss_weights=(1.0, 0.01, 0.0),
            gamma_select=3.0, gamma_break=3.0, explore_engine="lammps", al_budget=20, max_iterations=15,
            max_collect_per_scenario=10, executor="process", n_workers=2, post_validation=True,
        )
    if preset == "quick":
        pool = ti_h_scenarios("quick", steps=300, snapshot_interval=10)
        explore = ti_h_scenarios("quick", steps=500, snapshot_interval=100)
        return ALConfig(
            name="ti_h-quick", species=["Ti", "H"], scenarios=explore, pool_scenarios=pool, mode=mode,
            pool_potential="m3gnet", encoder="m3gnet", n_clusters=60, k=1,
            labeller="chgnet", mtp_level=12, cutoff=5.0, loss_weights=(1.0, 0.01, 0.0),
            gamma_select=3.0, gamma_break=3.0, explore_engine="ase", al_budget=15, max_iterations=12,
            max_collect_per_scenario=10, executor="process", n_workers=2,
        )
    if preset == "tiny":
        small = dict(h_per_ti=(0.0, 0.25), gbs={}, epsilon=False, h2=False)
        pool = ti_h_scenarios("tiny", steps=60, snapshot_interval=5, **small)
        explore = ti_h_scenarios("tiny", steps=100, snapshot_interval=10, **small)
        return ALConfig(
            name="ti_h-tiny", species=["Ti", "H"], scenarios=explore, pool_scenarios=pool, mode=mode,
            pool_potential="m3gnet", encoder="m3gnet", n_clusters=4, k=1,
            labeller="chgnet", mtp_level=6, cutoff=5.0,
            # cap 10: a tiny campaign's path depends on rounding (with the kernels of 80abe8c scratch needs 7
            # iterations, 12 labels; before, fewer), and the tests need it to converge
            gamma_select=3.0, gamma_break=3.0, explore_engine="ase", al_budget=8, max_iterations=10,
            max_collect_per_scenario=5, executor="serial", n_workers=1,
        )
    raise ValueError(f"unknown preset {preset!r}")


def _cell(phase: str, n_h: int, supercell: tuple[int, int, int]) -> tuple[str, Atoms]:
    """A bulk Ti-H validation cell with ``n_h`` interstitial H (named e.g. ``hcp-Ti36H2``), bare of site arrays."""
    n_ti = 2 * supercell[0] * supercell[1] * supercell[2]  # hcp, bcc and fcc cells hold 2 Ti per unit cell
    a = ti_h_bulk(phase, n_h / n_ti, supercell=supercell, seed=7)  # seed 7: not a campaign structure
    return f"{phase}-Ti{n_ti}H{n_h}", Atoms(a.numbers, positions=a.positions, cell=a.cell, pbc=True)


def validation(preset: str) -> ValidationSpec | None:
    """Post-AL validation (``alkit validate``): the paper's test set -- labeller MD of hcp Ti36H2, bcc Ti36H36 and
    fcc Ti36H72 at 1000 K and fcc at 3000 K, 400 snapshots -- at the preset's scale, and H diffusion in the same
    three phases (published Ea: paper's MTP-DIRECT 0.42 / 0.14 / 0.91 eV, experiment 0.45 / 0.15 / 0.92 eV)."""
    refs = {"hcp": {"paper MTP-DIRECT": 0.42, "experiment": 0.45},
            "bcc": {"paper MTP-DIRECT": 0.14, "experiment": 0.15},
            "fcc": {"paper MTP-DIRECT": 0.91, "experiment": 0.92}}
    if preset == "tiny":  # plumbing only: 6 test structures, 200-step diffusion runs, one short labeller run
        cells = [_cell("hcp", 2, (2, 2, 1)), _cell("bcc", 2, (2, 2, 1))]
        return ValidationSpec(
            test_systems=[MDSystem(n, a, (300.0,)) for n, a in cells],
            test_steps=12, test_snapshot_interval=4, test_snapshots=3,
            diffusion_systems=[MDSystem(n, a, (600.0, 900.0), labeller_temperatures=(900.0,) if n.startswith("bcc")
                                        else (), diffusion_steps=300 if n.startswith("hcp") else None)
                               for n, a in cells],
            diffusion_steps=200, diffusion_sample_interval=5, labeller_diffusion_steps=30,
            references={n: refs[n.split("-")[0]] for n, _ in cells})
    # (supercell, number of H) of the hcp / bcc / fcc cells
    q = {"hcp": ((2, 2, 2), 2), "bcc": ((2, 2, 2), 16), "fcc": ((2, 2, 2), 32)}
    sizes = {"quick": q, "workstation": q | {"hcp": ((3, 3, 2), 2)},
             "paper": {"hcp": ((3, 3, 2), 2), "bcc": ((3, 3, 2), 36), "fcc": ((3, 3, 2), 72)}}
    if preset not in sizes:
        return None
    cells = {p: _cell(p, n, sc) for p, (sc, n) in sizes[preset].items()}
    test_t = {"hcp": (1000.0,), "bcc": (1000.0,), "fcc": (1000.0, 3000.0)}
    diff_t = {"hcp": (800.0, 1000.0, 1200.0, 1400.0), "bcc": (600.0, 800.0, 1000.0, 1200.0),
              "fcc": (1200.0, 1400.0, 1600.0, 1800.0)}
    # labeller MD where it is affordable: the fast-diffusing bcc phase at its three highest temperatures (three,
    # so that the labeller's E_a has a standard error; ~26 CPU-min per 3-ps CHGNet run of 32 atoms)
    lab_t = {"hcp": (), "bcc": (800.0, 1000.0, 1200.0), "fcc": ()}
    # the dilute hcp cell (2 H) needs longer MTP runs than the others for the same MSD statistics: 20 ps gave
    # hcp E_a from -0.04 to 0.29 eV across potentials of one campaign setting; 100 ps is the paper's length
    hcp_steps = {"quick": 100000, "workstation": 200000}.get(preset)
    md = {  # test_steps, snapshot interval, snapshots per trajectory, diffusion steps, sample interval, labeller steps
        "quick": (600, 10, 25, 20000, 20, 4000),  # 100 test structures, 10-ps MTP runs, 2-ps CHGNet runs
        "workstation": (1200, 10, 100, 40000, 20, 6000),  # 400 test structures, 20-ps MTP runs, 3-ps CHGNet runs
        "paper": (4000, 20, 100, 200000, 50, 20000),  # 400 AIMD snapshots, 100-ps MTP runs, 10-ps AIMD (cluster)
    }[preset]
    return ValidationSpec(
        test_systems=[MDSystem(cells[p][0], cells[p][1], test_t[p]) for p in cells],
        test_steps=md[0], test_snapshot_interval=md[1], test_snapshots=md[2],
        diffusion_systems=[MDSystem(cells[p][0], cells[p][1], diff_t[p], labeller_temperatures=lab_t[p],
                                    diffusion_steps=hcp_steps if p == "hcp" else None) for p in cells],
        diffusion_steps=md[3], diffusion_sample_interval=md[4], labeller_diffusion_steps=md[5],
        references={cells[p][0]: refs[p] for p in cells})
