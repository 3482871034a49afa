"""alkit's LAMMPS plugin: ``pair_style mtp`` (alkit's and MLIP-2's moment tensor potentials) and ``compute
mtp/grade`` (the MaxVol extrapolation grade inside LAMMPS). The shared library is built by the package build next
to this file; ``plugin load`` it from any LAMMPS input (``alkit lammps plugin-path`` prints the path)."""
from __future__ import annotations

from pathlib import Path

from alkit.errors import ConfigError

PLUGIN_NAME = "alkit_mtp_plugin.so"


def plugin_path() -> Path:
    """Path of the built plugin library; ConfigError if this installation has none."""
    path = Path(__file__).resolve().parent / PLUGIN_NAME
    if not path.is_file():
        raise ConfigError(f"alkit's LAMMPS plugin is not built ({path} is missing): reinstall alkit "
                          "(`bash scripts/install.sh` or `pip install -e .`)")
    return path
