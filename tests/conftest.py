"""Shared test fixtures. Tests use real things: the model directory comes from $ALKIT_MODEL_DIR
(CI: ../shared/models); if unset we fall back to the checkout's sibling ``shared/models``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _default_model_dir() -> Path:
    env = os.environ.get("ALKIT_MODEL_DIR")
    return Path(env) if env else REPO.parent / "shared" / "models"


os.environ.setdefault("ALKIT_MODEL_DIR", str(_default_model_dir()))
# One torch thread per process (see DEVELOPERS.md) and no oversubscription from BLAS in tests.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = Path(os.environ["ALKIT_MODEL_DIR"])
    if not path.is_dir():
        pytest.fail(f"model directory {path} missing: set ALKIT_MODEL_DIR")
    return path
