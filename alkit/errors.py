"""Exceptions alkit raises for bad input. Each message names the problem."""
from __future__ import annotations


class AlkitError(Exception):
    """Base class of alkit's user-facing errors."""


class ConfigError(AlkitError, ValueError):
    """A configuration value, recipe or file is invalid."""


class InputError(AlkitError, ValueError):
    """Input data (structures, features, training sets) is invalid."""


class ModelNotFoundError(AlkitError, FileNotFoundError):
    """A pretrained model directory could not be found."""
