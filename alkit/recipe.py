"""Recipes: Python scripts that configure the driver for one chemical system.

The recipes shipped with alkit are package data (``alkit/recipes/*.py``, found through :mod:`importlib.resources`,
so a wheel install has them); a user's own recipe is any script path, or ``recipes/<name>.py`` in the working
directory.

A recipe module defines ``PRESETS`` (a dict of preset name -> description or parameters) and
``build(preset: str, mode: str) -> alkit.driver.ALConfig``.
"""
from __future__ import annotations

import importlib.resources
import importlib.util
import os
from pathlib import Path
from types import ModuleType

from alkit.errors import ConfigError

#: The shipped recipes (a real directory: the package is installed unzipped, as pip always does).
RECIPES_DIR = Path(str(importlib.resources.files("alkit") / "recipes"))


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """Resolve a path to a recipe script, ``./recipes/<name>.py`` or a shipped recipe name (``ti_h``), in that order."""
    p = Path(name_or_path)
    candidates = [p, Path.cwd() / "recipes" / f"{p}.py", RECIPES_DIR / p, RECIPES_DIR / f"{p}.py"]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ConfigError(f"recipe {str(name_or_path)!r} not found (looked in {', '.join(str(c) for c in candidates)})")


def load_recipe(name_or_path: str | os.PathLike) -> ModuleType:
    path = find_recipe(name_or_path)
    spec = importlib.util.spec_from_file_location(f"alkit_recipe_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as exc:
        raise ConfigError(f"recipe {path} failed to load: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(mod, "build", None)) or not isinstance(getattr(mod, "PRESETS", None), dict):
        raise ConfigError(f"recipe {path} must define PRESETS (dict) and build(preset, mode)")
    return mod


def build_config(name_or_path: str | os.PathLike, preset: str | None = None, mode: str = "direct"):
    mod = load_recipe(name_or_path)
    preset = preset or next(iter(mod.PRESETS))
    if preset not in mod.PRESETS:
        raise ConfigError(f"recipe {mod.__file__}: unknown preset {preset!r}; known: {sorted(mod.PRESETS)}")
    cfg = mod.build(preset, mode)
    if getattr(cfg, "recipe", None) is None:
        cfg.recipe = Path(mod.__file__).stem
    if getattr(cfg, "preset", None) is None:
        cfg.preset = preset
    return cfg


def list_recipes() -> dict[str, dict[str, str]]:
    """``{recipe: {preset: description}}`` of the shipped recipes, read without importing them (so that
    ``alkit run --help`` stays fast): the ``PRESETS`` dict literal of each script."""
    import ast

    out: dict[str, dict[str, str]] = {}
    for path in sorted(RECIPES_DIR.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        try:
            tree = ast.parse(path.read_text())
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PRESETS" for t in node.targets):
                try:
                    presets = ast.literal_eval(node.value)
                except ValueError:
                    continue
                if isinstance(presets, dict):
                    out[path.stem] = {str(k): v if isinstance(v, str) else "" for k, v in presets.items()}
    return out
