"""One evaluation (and optionally a short NVE run) of a structure with alkit's LAMMPS plugin; run directly or under
``mpirun -np N`` by the plugin tests. Writes JSON: energy, per-atom energies, forces, per-atom virial, global virial
(the pair's, eV), per-atom grades, the compute's global values, and the NVE total energies.

    python _lammps_eval.py STRUCTURE.traj POT.mtp [--als FILE] [--newton on|off] [--nve STEPS] --out OUT.json
"""
import argparse
import json

import numpy as np
from ase.io import read

from alkit.lammps import plugin_path
from alkit.mtp.lammps_engine import _System, import_lammps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("structure")
    ap.add_argument("potential")
    ap.add_argument("--als", default=None)
    ap.add_argument("--newton", default="on")
    ap.add_argument("--nve", type=int, default=0)
    ap.add_argument("--elements", nargs="+", default=None, help="pair_coeff elements (default: of the types)")
    ap.add_argument("--species", nargs="+", default=None, help="pair_style ... species (the .mtp's type order)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import_lammps()
    atoms = read(args.structure)
    with _System(atoms, None, timestep_fs=0.5, velocities=False) as sysm:
        lmp = sysm.lmp
        me = lmp.extract_setting("world_rank")
        als = f" als {args.als}" if args.als else ""
        if args.species:
            als += " species " + " ".join(args.species)
        elements = " ".join(args.elements or sysm.elements)
        lmp.commands_list([
            f"newton {args.newton} on",  # pair setting; the bond one cannot change once the box exists
            f"plugin load {plugin_path()}",
            f"pair_style mtp {args.potential}{als}",
            f"pair_coeff * * {elements}",
            "compute alkit_pe all pe/atom",
            "compute alkit_sa all stress/atom NULL virial",
            "compute alkit_pv all pressure NULL virial",
            "thermo_style custom step pe etotal c_alkit_pv[*]",
            "thermo_modify format float %.17g",
        ])
        if args.als:
            lmp.command("compute alkit_g all mtp/grade")
        lmp.command("run 0")
        n = len(atoms)
        nlocal = lmp.extract_setting("nlocal")
        # gather per-atom data from all ranks through LAMMPS's gather (works under MPI)
        f = np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3)
        pe = np.array(lmp.gather("c_alkit_pe", 1, 1)).reshape(n)
        sa = np.array(lmp.gather("c_alkit_sa", 1, 6)).reshape(n, 6)
        out = {"energy": lmp.get_thermo("pe"), "forces": (f @ sysm.rot.T).tolist(), "energies": pe.tolist(),
               "nprocs": lmp.extract_setting("world_size"),
               "pv": [lmp.extract_compute("alkit_pv", 0, 1)[k] for k in range(6)],
               "volume": float(abs(np.linalg.det(sysm.box()))), "nktv2p": lmp.extract_global("nktv2p"),
               "stress_atom": sa.tolist(), "rot": sysm.rot.tolist()}
        if args.als:
            g = np.array(lmp.gather("c_alkit_g", 1, 1)).reshape(n)
            out["gammas"] = g.tolist()
            out["grade_vector"] = [lmp.extract_compute("alkit_g", 0, 1)[k] for k in range(5)]
        if args.nve:
            lmp.commands_list(["velocity all create 600 4928459 mom yes rot yes dist gaussian", "fix nve all nve",
                               "run 0"])
            e0 = lmp.get_thermo("etotal")
            etot = []
            for _ in range(args.nve // 10):
                lmp.command("run 10 pre no post no")
                etot.append(lmp.get_thermo("etotal"))
            out["etotal"] = [e0] + etot
            out["pe_after"] = lmp.get_thermo("pe")
        del nlocal
        if me == 0:
            with open(args.out, "w") as fh:
                json.dump(out, fh)


if __name__ == "__main__":
    main()
