"""``alkit label STRUCTURES... --labeller NAME --out FILE``: label structures with CHGNet, GPAW, VASP or any ASE
calculator; prints each structure's status and a summary, failed ones with their reasons."""
from __future__ import annotations

import json


def _parse_option(text: str) -> tuple[str, object]:
    from alkit.errors import ConfigError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"labeller option {text!r} must look like key=value (e.g. ecut=300)")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def register(sub) -> None:
    p = sub.add_parser(
        "label",
        help="label structures (energy, forces, stress) with a reference calculator",
        description="Label structures with chgnet, gpaw, gpaw-cheap, vasp or an ASE calculator 'module:Name'. "
        "Labelled structures are written to --out; failed ones are listed with their reasons.",
    )
    p.add_argument("structures", nargs="+", metavar="STRUCTURES", help="structure files ASE can read")
    p.add_argument("--labeller", "-l", default="chgnet",
                   help="chgnet | gpaw | gpaw-cheap | vasp | module:Name (default: chgnet)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="labeller option, repeatable (values parsed as JSON), e.g. --set ecut=300 --set kpt_density=2")
    p.add_argument("--out", "-o", required=True, help="output file for the labelled structures (e.g. labelled.extxyz)")
    p.add_argument("--workers", "-j", type=int, default=1, help="parallel workers (default 1: in this process)")
    p.add_argument("--executor", choices=("process", "dask"), default="process",
                   help="executor when --workers > 1 (default: process)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per structure before it is marked failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from alkit.errors import ConfigError
    from alkit.io import read_structures, write_structures
    from alkit.label import label_many, make_labeller

    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    options = dict(_parse_option(o) for o in args.options)
    labeller = make_labeller(args.labeller, **options)
    labeller.check()
    structures = read_structures(args.structures)
    print(f"labelling {len(structures)} structure(s) with {labeller.name}", flush=True)

    def report(i, result) -> None:
        atoms = structures[i]
        if result.ok:
            print(f"[{i}] {atoms.get_chemical_formula()}: ok  E={result.energy:.6f} eV  "
                  f"({result.seconds:.1f} s)", flush=True)
        else:
            print(f"[{i}] {atoms.get_chemical_formula()}: FAILED  {result.reason}", flush=True)

    if args.workers == 1:
        results = label_many(labeller, structures, timeout=args.timeout, on_result=report,
                             progress=not args.no_progress)
    else:
        from alkit.executors import make_executor

        with make_executor(args.executor, n_workers=args.workers) as ex:
            results = label_many(labeller, structures, executor=ex, timeout=args.timeout, on_result=report,
                                 progress=not args.no_progress)
    labelled = []
    for atoms, result in zip(structures, results):
        if result.ok:
            out = result.apply(atoms)
            out.info["labeller"] = labeller.name
            labelled.append(out)
    if labelled:
        write_structures(args.out, labelled)
    failed = [(i, r) for i, r in enumerate(results) if not r.ok]
    print(f"{len(labelled)} labelled, {len(failed)} failed of {len(results)}; "
          + (f"written to {args.out}" if labelled else "nothing written"))
    for i, r in failed:
        print(f"  failed [{i}] {structures[i].get_chemical_formula()}: {r.reason}")
    return 0 if not failed else 1
