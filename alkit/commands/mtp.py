"""``alkit mtp ...``: MLIP-2-like verbs. Fitting verbs (init, train, calc-efs) live in ``mtp_fit``; grading and
MD verbs (grade, select-add, md) in ``mtp_explore``."""
from __future__ import annotations

import importlib


def register(sub) -> None:
    parser = sub.add_parser("mtp", help="moment tensor potentials: init, train, calc-efs, grade, select-add, md")
    mtp_sub = parser.add_subparsers(dest="mtp_command", metavar="VERB")
    for name in ("mtp_fit", "mtp_explore"):
        try:
            mod = importlib.import_module(f"alkit.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"alkit.commands.{name}":
                continue
            raise
        mod.register(mtp_sub)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
