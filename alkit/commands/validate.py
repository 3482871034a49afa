"""``alkit validate RUN_DIR``: post-AL validation (test-set errors, H diffusion, iteration 0's stability)."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="validate a campaign: test-set errors of every iteration, H diffusion with the final MTP, "
             "iteration 0's stability",
        description="Labeller MD test set (cached in RUN_DIR/validation), energy/force errors of every iteration's "
                    "potential with parity plots, MSD / diffusivity / Arrhenius fit of H with the final MTP "
                    "(compared with labeller MD where the recipe says it is affordable), and the stability of "
                    "iteration 0 per temperature. Writes validation.json, validation.md, validation.html and PNGs.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (holds config.json and iterations/)")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default: RUN_DIR/validation)")
    p.add_argument("--preset", default=None, help="take the validation of another preset of the run's recipe")
    p.add_argument("--temperatures", metavar="K", type=float, nargs="+", default=None,
                   help="diffusion temperatures for every system (labeller MD only where they match the recipe's)")
    p.add_argument("--no-labeller-md", dest="labeller_md", action="store_false",
                   help="no diffusion MD with the labeller (the test set still uses it)")
    p.add_argument("--no-test-set", dest="test_set", action="store_false", help="skip the test-set errors")
    p.add_argument("--no-diffusion", dest="diffusion", action="store_false", help="skip the diffusion MD")
    p.add_argument("--engine", choices=("auto", "lammps", "ase"), default="auto",
                   help="MTP diffusion MD engine (auto: LAMMPS pair_style mtp when built)")
    p.add_argument("--executor", choices=("serial", "process", "dask"), default="serial")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cache-from", metavar="RUN_DIR", default=None,
                   help="re-use the labeller MD (test set, labeller diffusion) another run of the same labeller and "
                        "spec already ran: the runs of a comparison are measured on one test set")
    p.set_defaults(func=_validate)


def _validate(args) -> int:
    from pathlib import Path

    from alkit.validate import validate_run

    validate_run(args.run_dir, out_dir=args.out, temperatures=args.temperatures, preset=args.preset,
                 test_set=args.test_set, diffusion=args.diffusion, labeller_md=args.labeller_md,
                 engine=args.engine, executor=args.executor, workers=args.workers, cache_from=args.cache_from)
    out = Path(args.out) if args.out else Path(args.run_dir) / "validation"
    print((out / "validation.md").read_text(encoding="utf-8"))
    print((out / "validation.html").resolve())
    return 0
