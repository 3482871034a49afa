"""Small helpers shared by several stages (no state)."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from alkit.errors import ConfigError


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
