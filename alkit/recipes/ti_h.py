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

from alkit.campaign import ALConfig
from alkit.systems.ti_h import ti_h_scenarios

PRESETS = {
    "quick": "31 small Ti-H scenarios at 300/1000 K, CHGNet labels, MTP level 12 fitted to convergence (~11 min pool MD + 10-15 min AL on 2 cores)",
    "paper": "the paper's 274 scenarios, GPAW PBE labels, MTP level 20 fitted to convergence, LAMMPS MD (cluster scale)",
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
            gamma_select=3.0, gamma_break=3.0, explore_engine="ase", al_budget=8, max_iterations=6,
            max_collect_per_scenario=5, executor="serial", n_workers=1,
        )
    raise ValueError(f"unknown preset {preset!r}")
