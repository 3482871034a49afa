"""Small helpers shared by several stages (no state)."""
from __future__ import annotations

import importlib
import numbers
from pathlib import Path
from typing import Any, Callable, Iterable

from alkit.errors import ConfigError

#: What every species list must be (the tail of each species error message, so they read alike everywhere).
SPECIES_RULE = "need a list of distinct element symbols, at least one"


def import_object(spec: str, what: str = "object") -> Callable[..., Any]:
    """Resolve ``"package.module:Name"`` (or ``"package.module.Name"``) to a callable (a class or a factory).

    ``what`` names the thing in error messages, e.g. ``"potential 'x:Y'"``; every failure is a ConfigError.
    """
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    else:
        module_name, _, attr = spec.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"{what}: an import path must look like 'package.module:Name', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ConfigError(f"{what}: {attr!r} is not a class or factory function")
    return obj


def species_numbers(species: Iterable[str | int], error: type[Exception] = ConfigError,
                    what: str = "species") -> list[int]:
    """Atomic numbers of a species list given as element symbols or atomic numbers, in the given order (an MTP's
    type order). The one species check of alkit (potentials, active sets, .cfg files, level files, encoders), so a
    bad list reads the same everywhere: it must be non-empty, name real elements ('X'/0 is not one) and repeat none.
    ``error`` is the caller's error class (ConfigError for settings, InputError for data)."""
    from ase.data import atomic_numbers, chemical_symbols

    if isinstance(species, (str, bytes)) or not isinstance(species, Iterable):
        raise error(f"{what} {species!r}: {SPECIES_RULE}")
    given = list(species)
    if not given:
        raise error(f"{what} is empty: {SPECIES_RULE}")
    out: list[int] = []
    for s in given:
        if isinstance(s, str):
            z = atomic_numbers.get(s, 0)
        elif isinstance(s, numbers.Integral) and not isinstance(s, bool):
            z = int(s) if 0 < int(s) < len(chemical_symbols) else 0
        else:
            z = 0
        if z == 0:
            raise error(f"{what} {given}: unknown element {s!r}; {SPECIES_RULE}")
        if z in out:
            raise error(f"{what} {given}: {chemical_symbols[z]} listed twice; {SPECIES_RULE}")
        out.append(z)
    return out


def species_symbols(species: Iterable[str | int], error: type[Exception] = ConfigError,
                    what: str = "species") -> list[str]:
    """:func:`species_numbers` as element symbols (the same checks and messages)."""
    from ase.data import chemical_symbols

    return [chemical_symbols[z] for z in species_numbers(species, error, what)]


def voigt_stress(stress: Any) -> Any:
    """A stress as ASE's Voigt 6-vector (xx yy zz yz xz xy: ``ase.stress.voigt_notation``, also the order of MLIP-2's
    ``PlusStress``) from a 6-vector, a 3x3 tensor or its 9 values; the one 3x3 -> 6 conversion of alkit.

    A tensor gives its entries at ASE's ``voigt_notation`` indices (the upper triangle), as alkit always took them;
    ``ase.stress.full_3x3_to_voigt_6_stress`` averages the two triangles instead, which is the same for the
    symmetric stresses calculators return. Any other shape is returned as an array for the caller to reject.
    (The inverse is ``ase.stress.voigt_6_to_full_3x3_stress``.)"""
    import numpy as np
    from ase.stress import voigt_notation

    s = np.asarray(stress, dtype=float)
    if s.shape in ((9,), (3, 3)):
        rows, cols = zip(*voigt_notation)
        return s.reshape(3, 3)[list(rows), list(cols)]
    return s


def json_default(obj: Any):
    """``json.dumps(default=...)`` for numpy scalars/arrays and paths."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write(path: str | Path, content: "str | bytes | Callable[[str], Any]", mode: int = 0o644) -> Path:
    """Write ``content`` (text, bytes, or a ``writer(tmp_path)`` callable) to ``path`` through a temporary file in
    the same folder and a rename, so a reader (or a rerun after a kill) never sees a half-written file."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else content
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_copy(source: str | Path, path: str | Path) -> Path:
    """Copy a file to ``path`` through :func:`atomic_write`: a kill mid-copy never leaves a truncated file there."""
    import shutil

    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def check_writable(path: str | Path, what: str = "output file") -> Path:
    """Fail now (InputError naming the path) if ``path`` cannot be written, rather than after the work that
    produces it: creates the parent folder and a probe file next to it."""
    import os
    import tempfile

    from alkit.errors import InputError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"cannot write the {what} {path}: {exc.strerror or exc}") from None
    if path.is_dir():
        raise InputError(f"the {what} {path} is a directory")
    return path
