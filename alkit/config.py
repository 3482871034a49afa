"""Locating pretrained models and other run-time configuration (no global state: functions of the environment)."""
from __future__ import annotations

import os
from pathlib import Path

from alkit.errors import ModelNotFoundError

ENV_MODEL_DIR = "ALKIT_MODEL_DIR"

PES_MODEL = "M3GNet-MP-2021.2.8-PES"
EFORM_MODEL = "M3GNet-MP-2018.6.1-Eform"
MEGNET_EFORM_MODEL = "MEGNet-MP-2018.6.1-Eform"


def model_root(model_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding pretrained models: ``model_dir``, else ``$ALKIT_MODEL_DIR``.

    Raises ModelNotFoundError naming what was tried when it does not exist.
    """
    candidate = model_dir if model_dir is not None else os.environ.get(ENV_MODEL_DIR)
    if candidate is None:
        raise ModelNotFoundError(
            f"no model directory: pass model_dir or set ${ENV_MODEL_DIR} "
            "(e.g. export ALKIT_MODEL_DIR=../shared/models)"
        )
    path = Path(candidate).expanduser().resolve()
    if not path.is_dir():
        raise ModelNotFoundError(f"model directory {path} does not exist (from {'argument' if model_dir else '$' + ENV_MODEL_DIR})")
    return path


def model_path(name: str, model_dir: str | os.PathLike | None = None) -> Path:
    """Path of one pretrained model directory (e.g. ``M3GNet-MP-2021.2.8-PES``), checked to hold a model."""
    path = model_root(model_dir) / name
    if not (path / "model.pt").is_file():
        raise ModelNotFoundError(f"pretrained model {name!r} not found: {path}/model.pt is missing")
    return path
