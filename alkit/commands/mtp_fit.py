"""``alkit mtp init|train|calc-efs``: MLIP-2-like fitting verbs (the grading/MD verbs live in ``mtp_explore``).

    alkit mtp init --level 16 --species Ti H --cutoff 5.0 --out pot.mtp
    alkit mtp train pot.mtp train.cfg --species Ti H --out trained.mtp [--valid valid.cfg] [--engine alkit|motep] [--threads 2]
    alkit mtp calc-efs trained.mtp in.extxyz --out out.extxyz
"""
from __future__ import annotations

from pathlib import Path


def _init(args) -> int:
    from alkit.mtp.levels import basis_counts, write_untrained_mtp

    path = write_untrained_mtp(args.out, args.level, args.species, cutoff=args.cutoff, min_dist=args.min_dist,
                               radial_basis_size=args.radial_basis_size)
    c = basis_counts(args.level)
    print(f"untrained MTP level {args.level} for {' '.join(args.species)} (cutoff {args.cutoff} Å): "
          f"{c['alpha_scalar_moments']} basis functions, {c['radial_funcs_count']} radial functions, "
          f"{c['alpha_moments_count']} moments -> {path}")
    return 0


def _train(args) -> int:
    from alkit.errors import ConfigError
    from alkit.mtp.fit import format_metrics, read_training_set, train_mtp
    from alkit.mtp.potential import MTPPotential

    pot = Path(args.potential)
    initial = None
    level = args.level
    if pot.is_file():
        data = MTPPotential.read(pot)  # a corrupt file is reported as such, before anything else
        species = data.resolve_species(args.species)
        if level is not None and data.level is not None and level != data.level:
            raise ConfigError(f"{pot} is a level-{data.level} potential but --level {level} was given")
        initial = pot
    elif level is None:
        raise ConfigError(f"potential file {pot} does not exist (give --level L to start from a fresh level-L MTP)")
    elif not args.species:
        raise ConfigError("--species is required to create a new potential (type order, e.g. --species Ti H)")
    else:
        species = list(args.species)
    train = read_training_set(args.train, species)
    valid = read_training_set(args.valid, species) if args.valid else None
    res = train_mtp(train, args.out, species, level=level or 8, cutoff=args.cutoff, initial=initial,
                    weights=tuple(args.weights), bfgs_maxiter=args.bfgs_maxiter, valid=valid, seed=args.seed,
                    engine=args.engine, tol=args.tol, threads=args.threads, method=args.method)
    how = ""
    if res.report is not None:
        how = f", {res.report.iterations} iterations ({res.report.reason})"
    print(f"trained MTP ({args.engine}) on {res.n_train} structures in {res.seconds:.1f} s{how} "
          f"({res.n_parameters} parameters, min_dist {res.min_dist:.2f} Å) -> {res.mtp_path}")
    print(f"train: {format_metrics(res.train_metrics)}")
    if res.valid_metrics is not None:
        print(f"valid: {format_metrics(res.valid_metrics)}")
    return 0


def _calc_efs(args) -> int:
    from alkit.mtp.fit import calc_efs, evaluate, format_metrics, read_training_set, write_training_set
    from alkit.mtp.potential import read_potential

    pot = Path(args.potential)
    species = read_potential(pot, args.species)[1]
    structures = read_training_set(args.structures, species)
    mode = "error" if args.strict else "warn"
    out = calc_efs(pot, structures, species, on_close_atoms=mode)
    write_training_set(args.out, out, species)
    print(f"computed energies, forces and stress of {len(out)} structures -> {args.out}")
    labelled = [s for s in structures if s.calc is not None and "energy" in (s.calc.results or {})]
    if labelled and args.errors:
        print(f"errors against the input labels: {format_metrics(evaluate(pot, labelled, species, on_close_atoms=mode))}")
    return 0


def register(mtp_sub) -> None:
    p = mtp_sub.add_parser("init", help="write an untrained MTP of a given level (alkit's own level definitions)",
                           description="Generate an untrained MTP (MLIP-2 .mtp format) of level 2..28 for any species.")
    p.add_argument("--level", type=int, required=True, help="MTP level (even, 2..28)")
    p.add_argument("--species", nargs="+", required=True, help="element symbols in type order, e.g. Ti H")
    p.add_argument("--cutoff", type=float, default=5.0, help="cutoff radius max_dist in Å (default 5.0)")
    p.add_argument("--min-dist", type=float, default=0.5, help="min_dist in Å (training resets it from the data)")
    p.add_argument("--radial-basis-size", type=int, default=8, help="Chebyshev radial basis size (default 8)")
    p.add_argument("--out", required=True, help="output .mtp file")
    p.set_defaults(func=_init)

    p = mtp_sub.add_parser("train", help="fit an MTP (LLS, L-BFGS to convergence, LLS) to a .cfg or extxyz training set",
                           description="Fit POT.mtp (untrained level file or trained potential to warm-start) to the "
                                       "labelled structures in TRAIN and write the trained potential. Prints train "
                                       "(and validation) RMSE/MAE: energy meV/atom, forces eV/Å, stress GPa.")
    p.add_argument("potential", help="initial .mtp (created from --level if it does not exist)")
    p.add_argument("train", help="training set (.cfg or any ASE format with energies/forces/stress, e.g. extxyz)")
    p.add_argument("--out", required=True, help="trained .mtp output")
    p.add_argument("--valid", default=None, help="validation set (.cfg or extxyz)")
    p.add_argument("--species", nargs="+", default=None,
                   help="element symbols in type order (default: recorded in the .mtp file by alkit)")
    p.add_argument("--level", type=int, default=None, help="level of a fresh potential when POT.mtp does not exist")
    p.add_argument("--cutoff", type=float, default=5.0, help="cutoff of a fresh potential in Å (default 5.0)")
    p.add_argument("--weights", type=float, nargs=3, default=[1.0, 0.01, 0.0], metavar=("E", "F", "S"),
                   help="loss weights for energy, forces, stress (default 1 0.01 0)")
    p.add_argument("--engine", choices=["alkit", "motep"], default="alkit",
                   help="training engine: alkit's compiled core (default) or motep")
    p.add_argument("--bfgs-maxiter", type=int, default=1000,
                   help="cap on optimiser iterations over all coefficients (default 1000, MLIP-2's; 0: LLS only)")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="stop when the loss drops by less than this fraction over 50 iterations (default 1e-3; "
                        "alkit engine)")
    p.add_argument("--threads", type=int, default=1, help="threads over configurations (alkit engine; default 1)")
    p.add_argument("--method", choices=["varpro", "bfgs"], default="varpro",
                   help="alkit optimiser: variable projection (default: L-BFGS over the radial coefficients, linear "
                        "ones solved at every step) or L-BFGS over all coefficients (MLIP-2's scheme)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random initial radial coefficients")
    p.set_defaults(func=_train)

    p = mtp_sub.add_parser("calc-efs", help="energies, forces and stress of structures with a trained MTP",
                           description="Evaluate POT.mtp on the structures in IN and write them with the MTP's "
                                       "energy/forces/stress to OUT (.cfg or extxyz).")
    p.add_argument("potential", help="trained .mtp")
    p.add_argument("structures", help="input structures (.cfg or any ASE format)")
    p.add_argument("--out", required=True, help="output file (.cfg or extxyz)")
    p.add_argument("--species", nargs="+", default=None, help="element symbols in type order (default: from the .mtp)")
    p.add_argument("--strict", action="store_true",
                   help="fail on atoms closer than the potential's min_dist (default: warn; only structures closer "
                        "than half of it are refused)")
    p.add_argument("--errors", action="store_true", help="also print errors against labels found in IN")
    p.set_defaults(func=_calc_efs)
