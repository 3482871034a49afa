"""Import shim for matgl 2.2.1 + dgl 2.1.0 on torch 2.13 (the only combination that reproduces the published
M3GNet numbers offline).

``import dgl`` fails on ``dgl.graphbolt``, whose loader needs torchdata APIs that no longer exist. Inference never
touches graphbolt, so we register an empty module under that name before dgl is imported, and select matgl's DGL
backend. This is the only place in alkit that knows about it: import matgl through :func:`import_matgl`.
"""
from __future__ import annotations

import os
import sys
import types


def _stub_graphbolt() -> None:
    if "dgl.graphbolt" not in sys.modules:
        mod = types.ModuleType("dgl.graphbolt")
        mod.__doc__ = "Empty stand-in registered by alkit._compat: graphbolt is never used for inference."
        sys.modules["dgl.graphbolt"] = mod


def import_matgl():
    """Return the ``matgl`` module, importing it with the DGL backend and the graphbolt stub in place."""
    os.environ.setdefault("MATGL_BACKEND", "DGL")
    os.environ.setdefault("DGLBACKEND", "pytorch")
    _stub_graphbolt()
    import dgl  # noqa: F401  (must come after the stub)
    import matgl

    return matgl


def set_torch_threads(n: int = 1) -> None:
    """Limit torch intra-op threads (one thread is ~8x faster than two for single-structure MD here)."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
