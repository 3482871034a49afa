"""``alkit run RECIPE`` (start or resume a campaign) and ``alkit status RUN_DIR``."""
from __future__ import annotations

import json


def config_from_args(args):
    """The recipe's configuration with the command line's overrides (an option left out keeps the recipe's value)."""
    from alkit.recipe import build_config

    cfg = build_config(args.recipe, preset=args.preset, mode=args.mode)
    for key in ("executor", "n_workers", "max_iterations", "labeller", "seed", "post_validation"):
        val = getattr(args, key, None)
        if val is not None:
            setattr(cfg, key, val)
    return cfg


def _run(args) -> int:
    from alkit.driver import ActiveLearningDriver, format_status

    cfg = config_from_args(args)
    run_dir = args.run_dir or f"runs/{cfg.name}-{args.mode}"
    summary = ActiveLearningDriver(cfg, run_dir, pool_from=args.pool_from).run()
    print(format_status(summary))
    return 0 if summary["converged"] else 1


def _status(args) -> int:
    from alkit.driver import format_status, run_status

    s = run_status(args.run_dir)
    print(json.dumps(s, indent=1) if args.json else format_status(s))
    return 0


def _recipes_epilog() -> str:
    from alkit.recipe import list_recipes

    lines = ["recipes and presets (the first preset is the default):"]
    for name, presets in list_recipes().items():
        lines.append(f"  {name}")
        lines += [f"    --preset {p:<12} {d}" for p, d in presets.items()]
    lines.append("or give the path of your own recipe script (defining PRESETS and build(preset, mode)).")
    return "\n".join(lines)


def register(sub) -> None:
    import argparse

    p = sub.add_parser("run", help="run (or resume) an active-learning campaign from a recipe",
                       epilog=_recipes_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Start a campaign, or resume the one in --run-dir (a resume must use the stored "
                                   "configuration; only the executor, workers, timeouts and --max-iterations may "
                                   "change).")
    p.add_argument("recipe", help="a shipped recipe (e.g. ti_h), ./recipes/<name>.py, or the path of a recipe script")
    p.add_argument("--preset", default=None, help="recipe preset (default: the recipe's first)")
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/<name>-<mode>)")
    p.add_argument("--mode", choices=("direct", "scratch"), default="direct",
                   help="direct: DIRECT-seeded AL; scratch: AL from the scenarios' starting structures")
    p.add_argument("--executor", choices=("process", "dask", "serial"), default=None)
    p.add_argument("--workers", dest="n_workers", type=int, default=None)
    p.add_argument("--max-iterations", type=int, default=None)
    p.add_argument("--labeller", default=None, help="override the recipe's labeller (chgnet, gpaw, vasp, module:Name)")
    p.add_argument("--seed", type=int, default=None,
                   help="campaign seed (MD velocities, radial-basis start, DIRECT); repeated campaigns for "
                        "`alkit compare` differ only by it")
    p.add_argument("--pool-from", default=None, metavar="RUN_DIR",
                   help="adopt the finished pool scenarios (same definitions and potential) and encoder cache of "
                        "another run instead of re-running them; the campaigns of one comparison share one pool, "
                        "which is not counted in either mode")
    p.add_argument("--post-validation", action=argparse.BooleanOptionalAction, default=None,
                   help="run (or skip) `alkit validate` after the campaign (default: the recipe's choice); for a "
                        "repeated comparison, validate the runs afterwards so the campaigns' wall times compare")
    p.set_defaults(func=_run)

    s = sub.add_parser("status", help="summary of where a campaign stands")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=_status)
