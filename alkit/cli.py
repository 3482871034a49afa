"""The ``alkit`` command. Each sub-command group lives in ``alkit/commands/<name>.py`` and exposes
``register(subparsers)``; heavy imports happen inside the handlers so ``alkit --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from alkit.errors import AlkitError

# Sub-command modules, in the order of the method.
COMMAND_MODULES = ("encode", "select", "pool", "mtp", "label", "run", "report", "validate", "lammps")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alkit")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alkit",
        description="Build robust moment tensor potentials with few DFT calls (pool -> encode -> DIRECT -> label -> MTP -> explore).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"alkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(f"alkit.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"alkit.commands.{name}":
                continue  # command group not installed in this build
            raise
        mod.register(sub)
    return parser


def _configure_logging(verbose: bool) -> None:
    """alkit's own loggers at INFO (DEBUG with ``-v``); other libraries' only from WARNING (INFO with ``-v``).

    Why: at INFO, pymatgen's grain-boundary builder wrote about 130 lines into every campaign log, and torch logs
    its FakeTensor cache statistics from an atexit hook, after alkit's last line ("interrupted; re-run ...").
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("alkit").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AlkitError as exc:
        print(f"alkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alkit: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a file that cannot be read or written: one line, not a traceback
        if args.verbose:
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"alkit: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
