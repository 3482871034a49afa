"""``alkit lammps plugin-path``: where alkit's LAMMPS plugin (pair_style mtp, compute mtp/grade) is, for
``plugin load`` in any LAMMPS input."""
from __future__ import annotations


def _plugin_path(args) -> int:
    from alkit.lammps import plugin_path

    print(plugin_path())
    return 0


def register(sub) -> None:
    p = sub.add_parser("lammps", help="alkit's LAMMPS plugin (pair_style mtp with the extrapolation grade)")
    lsub = p.add_subparsers(dest="lammps_command", metavar="COMMAND")
    q = lsub.add_parser("plugin-path", help="print the path of the plugin library (for `plugin load` in LAMMPS)")
    q.set_defaults(func=_plugin_path)
