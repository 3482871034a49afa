"""Benchmark of the configuration-pool stage (prints figures; run with ``nice -n 10``).

1. M3GNet MD speed (1 torch thread, in this process): the 38-atom hcp Ti36H2 cell and the 108-atom fcc Ti36H72
   cell, NpT (MTK) and NVT (Langevin), steps/s of :func:`alkit.md.run_md` (blow-up checks and snapshots included)
   and of bare force calls for comparison.
2. Pool throughput: 4 scenarios (Ti36H2, NpT, 300/1000 K x 2 seeds-by-id) on 2 workers, local process pool vs a
   Dask LocalCluster; snapshots/s over the whole call (worker start-up and model loading included) and over the MD
   time alone.

    ALKIT_MODEL_DIR=../shared/models nice -n 10 python bench/bench_pool.py [--md-steps 50] [--pool-steps 100]
"""
from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path


def limit_memory(gb: float) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    want = int(gb * 1024**3)
    if hard == resource.RLIM_INFINITY or hard > want:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def structures():
    """(name, atoms): Ti36H2 hcp and Ti36H72 fcc, from alkit.systems.ti_h when available, else ase.build."""
    try:
        from alkit.systems.ti_h import ti_h_bulk

        return [("hcp Ti36H2", ti_h_bulk("hcp", 2 / 36)), ("fcc Ti36H72", ti_h_bulk("fcc", 2.0))]
    except ImportError:  # pragma: no cover - fallback when the Ti-H builders are absent
        import numpy as np
        from ase import Atoms
        from ase.build import bulk

        hcp = bulk("Ti", "hcp", a=2.95, c=4.68).repeat((3, 3, 2)).repeat((1, 1, 2))  # 36 Ti
        hcp += Atoms("H2", positions=[hcp.cell.cartesian_positions([1 / 6, 1 / 3, 0.125]),
                                      hcp.cell.cartesian_positions([0.5, 0.5, 0.625])])
        fcc = bulk("Ti", "fcc", a=4.43, cubic=True).repeat((3, 3, 1))  # 36 Ti
        tet = fcc.cell.cartesian_positions(np.array([[x, y, z] for x in (1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12,
                                                                           11 / 12)
                                                     for y in (1 / 12, 3 / 12, 5 / 12, 7 / 12, 9 / 12, 11 / 12)
                                                     for z in (0.25, 0.75)]))
        fcc += Atoms("H%d" % len(tet), positions=tet)
        return [("hcp Ti36H2", hcp), ("fcc Ti36H72", fcc)]


def bench_md(model_dir, steps: int) -> None:
    from alkit._compat import set_torch_threads
    from alkit.md import run_md
    from alkit.potentials import make_calculator

    set_torch_threads(1)
    calc = make_calculator("m3gnet", model_dir)
    print(f"## M3GNet MD, 1 torch thread, {steps} steps (0.5 fs) after 5 warm-up steps")
    print("(wall and CPU of this thread; on a shared machine the CPU figure is the one to compare)")
    print(f"{'cell':<14} {'atoms':>5} {'ensemble':<9} {'steps/s':>8} {'ms/step':>8} {'CPU ms/step':>12} "
          f"{'CPU steps/s':>12} {'force calls/s (CPU)':>20}")
    for name, atoms in structures():
        probe = atoms.copy()
        probe.calc = calc
        probe.rattle(0.01, seed=0)
        probe.get_forces()
        c = time.thread_time()
        for i in range(10):
            probe.positions[0, 0] += 1e-4
            probe.get_forces()
        calls = 10 / (time.thread_time() - c)
        for ensemble in ("npt", "nvt"):
            run_md(atoms, calc, 300, ensemble=ensemble, steps=5, snapshot_interval=5)
            t, c = time.perf_counter(), time.thread_time()
            res = run_md(atoms, calc, 300, ensemble=ensemble, steps=steps, snapshot_interval=10)
            dt, dc = time.perf_counter() - t, time.thread_time() - c
            assert res.status == "completed", res.reason
            print(f"{name:<14} {len(atoms):>5} {ensemble:<9} {steps / dt:>8.2f} {1000 * dt / steps:>8.1f} "
                  f"{1000 * dc / steps:>12.1f} {steps / dc:>12.2f} {calls:>20.2f}")


def bench_pool(model_dir, steps: int, kinds=("process", "dask")) -> None:
    from alkit.executors import make_executor
    from alkit.pool import run_pool
    from alkit.scenarios import Scenario

    atoms = structures()[0][1]
    scen = [Scenario(f"ti36h2-{T}K-{i}", atoms, T, ensemble="npt", steps=steps, snapshot_interval=10)
            for T in (300, 1000) for i in range(2)]
    n_snap = sum(s.n_snapshots for s in scen)
    print(f"\n## pool throughput: 4 x Ti36H2 NpT scenarios x {steps} steps ({n_snap} snapshots), 2 workers")
    print("(snapshots/s over the whole call incl. worker start-up and model loading; 'MD CPU' = snapshots per CPU "
          "second of the MD threads x 2 workers)")
    print(f"{'executor':<10} {'wall s':>7} {'snapshots/s':>12} {'steps/s':>8} {'MD wall snap/s':>15} "
          f"{'MD CPU snap/s':>14}")
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            with make_executor(kind, n_workers=2) as ex:
                rep = run_pool(scen, Path(tmp) / "pool", potential="m3gnet", model_dir=model_dir, executor=ex,
                               progress=False)
            wall = time.perf_counter() - t
            n = len(rep.statuses)
            md_wall = sum(r["n_snapshots"] / r["md_time_s"] for r in rep.statuses.values()) / n * 2
            md_cpu = sum(r["n_snapshots"] / r["md_cpu_s"] for r in rep.statuses.values()) / n * 2
            print(f"{kind:<10} {wall:>7.1f} {rep.new_snapshots / wall:>12.2f} {rep.new_steps / wall:>8.1f} "
                  f"{md_wall:>15.2f} {md_cpu:>14.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--md-steps", type=int, default=50)
    ap.add_argument("--pool-steps", type=int, default=100)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--memory-gb", type=float, default=6.0, help="address-space limit of this process")
    ap.add_argument("--skip-md", action="store_true")
    ap.add_argument("--skip-pool", action="store_true")
    ap.add_argument("--executors", nargs="+", default=["process", "dask"], choices=["process", "dask", "serial"],
                    help="executors to compare, in this order")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import distributed  # noqa: F401  (configures its loggers on import; quieten them afterwards)

    logging.getLogger("distributed").setLevel(logging.WARNING)
    limit_memory(args.memory_gb)
    if not args.skip_md:
        bench_md(args.model_dir, args.md_steps)
    if not args.skip_pool:
        bench_pool(args.model_dir, args.pool_steps, args.executors)


if __name__ == "__main__":
    main()
