"""``alkit pool``: build a configuration pool by universal-potential MD over a scenario file, or summarise one.

    alkit pool SCENARIOS.json --out DIR [--potential m3gnet|chgnet|module:Name] [--workers N]
               [--executor process|dask|serial] [--dask-address ADDR] [--model-dir D]
    alkit pool --summary DIR
"""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "pool",
        help="universal-potential MD over scenarios -> configuration pool (or --summary DIR)",
        description="Run MD with a universal potential over every scenario in SCENARIOS.json, streaming snapshots "
        "to DIR (one extxyz per scenario). Finished scenarios are skipped on a re-run; interrupted ones restart.",
    )
    p.add_argument("scenarios", nargs="?", help="scenario file (JSON, see alkit.scenarios.save_scenarios)")
    p.add_argument("--out", "-o", help="pool directory")
    p.add_argument("--potential", default="m3gnet", help="m3gnet (default), chgnet or package.module:Name")
    p.add_argument("--workers", "-j", type=int, default=None, help="worker processes (default: min(#scenarios, #cpus))")
    p.add_argument("--executor", choices=("process", "dask", "serial"), default="process")
    p.add_argument("--dask-address", default=None, help="address of a running Dask scheduler (implies --executor dask)")
    p.add_argument("--model-dir", default=None, help="pretrained model directory (default: $ALKIT_MODEL_DIR)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thermostat", choices=("langevin", "nose-hoover"), default="langevin", help="NVT thermostat")
    p.add_argument("--barostat", choices=("mtk", "langevin"), default="mtk", help="NpT barostat")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary", metavar="DIR", help="print the per-scenario status of pool DIR and exit")
    p.set_defaults(func=_handle)


def _print_summary(out_dir) -> int:
    from alkit.pool import pool_status

    rows = pool_status(out_dir)
    counts: dict[str, int] = {}
    print(f"{'scenario':<40} {'status':<10} {'steps':>13} {'snaps':>6}  reason")
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
        steps = f"{r.get('steps_done', 0)}/{r.get('steps', '?')}"
        print(f"{r['scenario_id']:<40} {r['status']:<10} {steps:>13} {r.get('n_snapshots', ''):>6}  {r.get('reason', '')}")
    print(f"{len(rows)} scenarios: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def _handle(args: argparse.Namespace) -> int:
    import logging

    from alkit.errors import ConfigError

    if args.summary:
        return _print_summary(args.summary)
    if not args.scenarios or not args.out:
        raise ConfigError("alkit pool needs SCENARIOS.json and --out DIR (or --summary DIR)")

    from alkit.executors import make_executor
    from alkit.pool import PoolFailure, as_scenarios, run_pool, validate_campaign

    scenarios = as_scenarios(args.scenarios)
    validate_campaign(scenarios, args.potential, args.model_dir)  # before a cluster is started
    kind = "dask" if args.dask_address else args.executor
    if kind == "dask":
        import distributed  # noqa: F401  (configures its loggers on import; quieten them afterwards)

        logging.getLogger("distributed").setLevel(logging.WARNING)
    workers = args.workers or min(len(scenarios), __import__("os").cpu_count() or 1)
    md_kwargs = {"thermostat": args.thermostat, "barostat": args.barostat}
    with make_executor(kind, n_workers=workers, address=args.dask_address) as ex:
        try:
            report = run_pool(scenarios, args.out, potential=args.potential, model_dir=args.model_dir, executor=ex,
                              progress=not args.no_progress, seed=args.seed, md_kwargs=md_kwargs)
        except PoolFailure as exc:
            print(exc.report.summary())
            print(f"alkit: error: {exc}")
            return 1
    print(report.summary())
    return 0
