"""``alkit mtp grade|select-add|md``: MLIP-2-like extrapolation-grade verbs (fitting verbs live in ``mtp_fit``).

    alkit mtp grade pot.mtp train.cfg in.extxyz --out graded.extxyz [--mode nbh|cfg] [--als state.als]
    alkit mtp select-add pot.mtp train.cfg candidates.extxyz --out new.extxyz --max 20
    alkit mtp md pot.mtp start.extxyz --als state.als --temperature 600 --steps 2000 --out collected.extxyz
"""
from __future__ import annotations

from pathlib import Path


def _species(pot: Path, given):
    """Species of ``pot`` in type order (given or from its tag), after reading and checking the whole file: a corrupt
    potential is reported as corrupt before anything else happens."""
    from alkit.mtp.potential import read_potential

    return read_potential(pot, given)[1]


def _read(path, species):
    from alkit.mtp.fit import read_training_set

    return read_training_set(path, species)


def _write(path, structures, species) -> None:
    from alkit.mtp.fit import write_training_set

    path = Path(path)
    if not structures:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        return
    write_training_set(path, structures, species)


def _default_als(pot: Path) -> Path:
    return pot.with_suffix(".als")


def _active_set(args, pot: Path, species):
    """Build the active set from TRAIN and save it (``--als``, default next to the potential)."""
    from alkit.mtp.grade import ActiveSet

    train = _read(args.train, species)
    aset = ActiveSet.fit(pot, train, species, mode=args.mode, parameters=args.parameters)
    als = Path(args.als) if args.als else _default_als(pot)
    aset.save(als)
    print(f"active set ({aset.mode} mode, {aset.parameters} coefficients, {aset.algorithm}) from {len(train)} "
          f"training structures ({aset.n_rows} rows, {aset.n_parameters} parameters) -> {als}")
    return aset, train


def _grade(args) -> int:
    pot = Path(args.potential)
    species = _species(pot, args.species)
    aset, _ = _active_set(args, pot, species)
    structures = _read(args.structures, species)
    grades = []
    for atoms in structures:
        gamma, per_atom = aset.grade(atoms)
        atoms.info["MV_grade"] = gamma  # MLIP-2's feature name
        atoms.info["gamma"] = gamma
        if aset.mode == "neighborhood":
            atoms.arrays["gamma"] = per_atom
        grades.append(gamma)
    _write(args.out, structures, species)
    import numpy as np

    g = np.asarray(grades)
    print(f"graded {len(g)} structures: max gamma {g.max():.4g}, median {np.median(g):.4g}; "
          f"{int((g > 1 + 1e-6).sum())} > 1, {int((g > 3).sum())} > 3 -> {args.out}")
    return 0


def _select_add(args) -> int:
    from alkit.mtp.grade import select_add

    pot = Path(args.potential)
    species = _species(pot, args.species)
    aset, train = _active_set(args, pot, species)
    candidates = _read(args.candidates, species)
    idx = select_add(aset, candidates, max_add=args.max, threshold=args.threshold, train=train)
    chosen = [candidates[i] for i in idx]
    for i, atoms in zip(idx, chosen):
        atoms.info["candidate_index"] = int(i)
    _write(args.out, chosen, species)
    print(f"selected {len(chosen)} of {len(candidates)} candidates (limit {args.max}) -> {args.out}")
    return 0


def _md(args) -> int:
    from alkit.errors import InputError
    from alkit.mtp.grade import ActiveSet
    from alkit.mtp.md import run_mtp_md

    from alkit.mtp.potential import MTPPotential

    pot = Path(args.potential)
    MTPPotential.read(pot).require_trained()  # a corrupt potential is reported as such, before its active set
    als = Path(args.als) if args.als else _default_als(pot)
    aset = ActiveSet.load(als, mtp_path=pot)
    from ase.data import chemical_symbols

    species = [chemical_symbols[z] for z in aset.species]
    frames = _read(args.structure, species)
    if not -len(frames) <= args.index < len(frames):
        raise InputError(f"{args.structure} holds {len(frames)} structures; --index {args.index} is out of range")
    res = run_mtp_md(
        frames[args.index], pot, aset, species, temperature=args.temperature, steps=args.steps,
        ensemble=args.ensemble, timestep_fs=args.timestep, gamma_select=args.gamma_select,
        gamma_break=args.gamma_break, engine=args.engine, grade_every=args.grade_every, seed=args.seed,
        max_collect=args.max_collect, pressure_gpa=args.pressure,
    )
    _write(args.out, res.collected, species)
    state = "stable" if res.stable else "UNSTABLE"
    print(f"{state}: {res.stop_reason} after {res.steps_done}/{res.steps_total} steps "
          f"({res.seconds:.1f} s, {args.engine}); max gamma {res.max_gamma:.4g}; "
          f"{len(res.collected)} structures with gamma > {args.gamma_select:g} -> {args.out}")
    return 0


def register(mtp_sub) -> None:
    def common(p, train: bool = True) -> None:
        p.add_argument("--species", nargs="+", default=None,
                       help="element symbols in type order (default: recorded in the .mtp by alkit)")
        if train:
            p.add_argument("--mode", default="nbh", choices=["nbh", "cfg", "neighborhood", "configuration"],
                           help="grade per atomic neighbourhood (nbh, default) or per configuration (cfg)")
            p.add_argument("--als", default=None,
                           help="where to write the active set (default: POT.als next to the potential)")
            p.add_argument("--parameters", default="linear", choices=["linear", "all"],
                           help="linearise in the linear coefficients (default) or in all, radial ones included "
                                "(MLIP-2)")

    p = mtp_sub.add_parser("grade", help="extrapolation grade (MaxVol gamma) of structures, like MLIP-2 calc-grade",
                           description="Build the MaxVol active set of POT.mtp from TRAIN, save it (--als), and "
                                       "write the structures in IN with info 'gamma'/'MV_grade' (and per-atom "
                                       "'gamma' in neighbourhood mode) to OUT.")
    p.add_argument("potential", help="trained .mtp")
    p.add_argument("train", help="training set of the potential (.cfg or extxyz)")
    p.add_argument("structures", help="structures to grade (.cfg or any ASE format)")
    p.add_argument("--out", required=True, help="output (.cfg or extxyz)")
    common(p)
    p.set_defaults(func=_grade)

    p = mtp_sub.add_parser("select-add", help="choose the candidates that most enlarge the active set (MLIP-2 select-add)",
                           description="Greedy MaxVol over the candidates against the active set of TRAIN; writes at "
                                       "most --max selected candidates to OUT.")
    p.add_argument("potential", help="trained .mtp")
    p.add_argument("train", help="training set of the potential (.cfg or extxyz)")
    p.add_argument("candidates", help="candidate structures (.cfg or any ASE format)")
    p.add_argument("--out", required=True, help="selected structures (.cfg or extxyz)")
    p.add_argument("--max", type=int, required=True, help="select at most this many")
    p.add_argument("--threshold", type=float, default=1.0, help="swap only rows with |c| above this (default 1)")
    common(p)
    p.set_defaults(func=_select_add)

    p = mtp_sub.add_parser("md", help="MTP MD with gamma monitoring (ASE or LAMMPS engine)",
                           description="Run MD with POT.mtp from STRUCTURE, grading against the active set; "
                                       "collects structures with gamma > --gamma-select and stops at gamma > "
                                       "--gamma-break. Writes the collected structures to OUT.")
    p.add_argument("potential", help="trained .mtp")
    p.add_argument("structure", help="starting structure (any ASE format or .cfg)")
    p.add_argument("--als", default=None, help="active set from `alkit mtp grade` (default: POT.als)")
    p.add_argument("--temperature", type=float, required=True, help="temperature in K")
    p.add_argument("--steps", type=int, required=True, help="number of MD steps")
    p.add_argument("--ensemble", default="nvt", choices=["nvt", "npt"], help="nvt (Langevin) or npt (MTK / fix npt)")
    p.add_argument("--pressure", type=float, default=0.0, help="NpT pressure in GPa (default 0)")
    p.add_argument("--timestep", type=float, default=0.5, help="time step in fs (default 0.5)")
    p.add_argument("--engine", default="ase", choices=["ase", "lammps"], help="MD engine (default ase)")
    p.add_argument("--gamma-select", type=float, default=3.0, help="collect structures above this gamma (default 3)")
    p.add_argument("--gamma-break", type=float, default=3.0, help="stop the run above this gamma (default 3)")
    p.add_argument("--grade-every", type=int, default=1, help="grade every N steps (default 1)")
    p.add_argument("--max-collect", type=int, default=50, help="keep at most this many collected structures")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and thermostat")
    p.add_argument("--index", type=int, default=0, help="which structure of STRUCTURE to start from (default 0)")
    p.add_argument("--out", required=True, help="collected extrapolative structures (extxyz or .cfg)")
    p.set_defaults(func=_md)
