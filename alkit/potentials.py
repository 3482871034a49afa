"""Universal potentials as ASE calculators, chosen by name.

Names:

- ``"m3gnet"``: M3GNet-MP-2021.2.8-PES through matgl's ASE calculator; weights from the model directory
  (:func:`alkit.config.model_path`), never downloaded.
- ``"chgnet"``: CHGNet 0.4.2 with the weights shipped in its wheel, on the CPU.
- ``"package.module:Name"``: any ASE ``Calculator`` subclass or a factory returning one, called with ``**kwargs``.

:func:`check_potential` validates a name cheaply (no model is loaded), so a campaign can reject a bad configuration
before any MD starts; :func:`make_calculator` builds the calculator (call it once per scenario, inside the worker).
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any, Callable

from alkit.config import PES_MODEL, model_path
from alkit._util import import_object
from alkit.errors import ConfigError

log = logging.getLogger(__name__)

BUILTIN = ("m3gnet", "chgnet")


def _resolve_import_path(name: str) -> Callable[..., Any]:
    return import_object(name, what=f"potential {name!r}")


def check_potential(name: str, model_dir: str | os.PathLike | None = None) -> None:
    """Raise ConfigError / ModelNotFoundError if ``name`` cannot give a calculator (no model is loaded)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"potential name must be a non-empty string, got {name!r}")
    key = name.lower()
    if key == "m3gnet":
        model_path(PES_MODEL, model_dir)
    elif key == "chgnet":
        if importlib.util.find_spec("chgnet") is None:
            raise ConfigError("potential 'chgnet' needs the chgnet package (pip install chgnet==0.4.2)")
    elif ":" in name:
        _resolve_import_path(name)
    else:
        raise ConfigError(
            f"unknown potential {name!r}: use 'm3gnet', 'chgnet' or an import path 'package.module:Name'"
        )


def make_calculator(name: str, model_dir: str | os.PathLike | None = None, **kwargs: Any):
    """Build the ASE calculator called ``name`` (see the module docstring). ``kwargs`` go to its constructor.

    Stress is always returned in ASE units (eV/Å^3, Voigt order), as the barostats expect.
    """
    from ase.calculators.calculator import Calculator

    check_potential(name, model_dir)
    key = name.lower()
    if key == "m3gnet":
        from alkit._compat import import_matgl

        matgl = import_matgl()
        from matgl.ext.ase import PESCalculator

        path = model_path(PES_MODEL, model_dir)
        potential = matgl.load_model(str(path))
        kwargs.setdefault("stress_unit", "eV/A3")
        kwargs.setdefault("use_voigt", True)
        calc = PESCalculator(potential, **kwargs)
    elif key == "chgnet":
        from chgnet.model.dynamics import CHGNetCalculator

        kwargs.setdefault("use_device", "cpu")
        calc = CHGNetCalculator(**kwargs)
    else:
        factory = _resolve_import_path(name)
        try:
            calc = factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"potential {name!r}: cannot build it with {sorted(kwargs)}: {exc}") from exc
    if not isinstance(calc, Calculator):
        # Duck-typed calculators (ase.calculators.calculator.BaseCalculator) are fine too.
        if not (hasattr(calc, "get_potential_energy") and hasattr(calc, "get_forces")):
            raise ConfigError(f"potential {name!r} did not give an ASE calculator (got {type(calc).__name__})")
    return calc
