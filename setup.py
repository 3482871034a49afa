"""Build of alkit's compiled MTP core (``alkit.mtp._core``, C++17 + pybind11). Metadata lives in pyproject.toml.

The extension is compiled by the package build (``pip install .`` / ``pip install -e .`` / ``pip wheel .``), never
at import. Portable flags only (no -march=native), so a wheel runs on any x86-64/aarch64 machine.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

CSRC = "alkit/mtp/csrc"

ext_modules = [
    Pybind11Extension(
        "alkit.mtp._core",
        [f"{CSRC}/bindings.cpp"],
        depends=[f"{CSRC}/mtp_core.hpp", f"{CSRC}/mtp_engine.hpp"],
        cxx_std=17,
        extra_compile_args=["-O3", "-fno-math-errno", "-fopenmp-simd"],
        extra_link_args=["-pthread"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
