"""alkit's MTP trainer, on the compiled core's reverse-mode loss gradient.

The loss is motep's/MLIP-2's (energy per atom, forces per atom, stress times volume per atom, averaged over
configurations; weights ``(energy, forces, stress)``, default 1 / 0.01 / 0):

    L = 1/Nc sum_c [ wE ((E - E0)/N)^2 + wF/N |F - F0|^2 + wS (V/N)^2 |S - S0|^2 ].

Optimisers (both L-BFGS from scipy on the compiled core's reverse-mode gradient; both start from the exact
least-squares solution of the linear coefficients and end with one):

* ``method="varpro"`` (default; variable projection): optimise only the radial coefficients, with the linear ones
  (moment and species coefficients) solved exactly by regularised least squares at every evaluation. The loss is
  quadratic in the linear coefficients, and by the envelope theorem the gradient w.r.t. the radial coefficients at
  the solved linear ones is the partial gradient, so each evaluation is one least-squares assembly plus one
  loss+gradient pass. Measured on 400 CHGNet-labelled Ti36H0-8 cells at level 16 (``bench/_tih_data.py``), it
  reached a loss of 1.2e-4 in 25 iterations, where L-BFGS over all coefficients (below) needed 1,409 iterations to
  stop at 3.9e-4 and a K-preconditioned variant reached 1.8e-4 after 300: the radial coefficients and the linear
  ones are scaled very differently, and eliminating the linear ones removes that ill-conditioning.
* ``method="bfgs"`` (MLIP-2's scheme): L-BFGS over *all* coefficients, the linear ones re-solved by least squares
  at a few fixed iterations (``lls_at``), where L-BFGS restarts.

Both stop as MLIP-2 does: when the loss has dropped by less than ``tol`` (relative; MLIP-2's ``--bfgs-conv-tol``,
default 1e-3) over the last ``WINDOW`` (50) iterations, or at ``max_iter`` iterations (MLIP-2's ``--max-iter``,
default 1000).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from alkit.errors import ConfigError, InputError
from alkit.mtp.engine import SpeciesMap, core_cell
from alkit.mtp.potential import MTPPotential

log = logging.getLogger(__name__)

METHODS = ("varpro", "bfgs")
#: Tikhonov term of the least-squares solves, relative to the largest diagonal entry of the normal matrix.
LLS_RIDGE = 1e-12
#: MLIP-2's convergence window: iterations over which the relative loss decrease is measured.
WINDOW = 50


@dataclass
class TrainReport:
    """What a fit did: iterations, loss history (one entry per iteration), why it stopped, timings."""

    method: str
    iterations: int
    evaluations: int
    loss_start: float
    loss_final: float
    reason: str
    seconds: float
    cpu_seconds: float
    history: list = field(default_factory=list)
    parts: dict = field(default_factory=dict)


class TrainingData:
    """Labelled structures prepared for the compiled core: neighbourhoods built once (positions do not change
    during a fit), targets, and the loss/gradient/least-squares entry points."""

    def __init__(self, potential: MTPPotential, structures: Sequence[Atoms], species: Sequence[str]):
        from alkit.mtp import _core

        smap = SpeciesMap(species)
        items = []
        for k, atoms in enumerate(structures):
            res = atoms.calc.results if atoms.calc is not None else {}
            energy = res.get("energy", res.get("free_energy"))
            if energy is None:
                raise InputError(f"structure {k} ({atoms.get_chemical_formula()}) has no energy label")
            forces = res.get("forces")
            stress = None
            if "stress" in res and np.all(atoms.pbc) and atoms.cell.rank == 3:
                stress = np.asarray(res["stress"], dtype=float)
                stress = stress if stress.shape == (3, 3) else voigt_6_to_full_3x3_stress(stress)
            items.append((np.ascontiguousarray(atoms.positions, dtype=float), core_cell(atoms),
                          np.asarray(atoms.pbc, dtype=bool), smap.types(atoms, f"structure {k}"), float(energy),
                          None if forces is None else np.ascontiguousarray(forces, dtype=float), stress))
        if not items:
            raise InputError("the training set is empty")
        self.potential = potential
        self.data = _core.TrainingSet(potential.basis, items)
        self.n_configs = len(items)
        self.n_atoms = int(self.data.n_atoms)

    def loss_grad(self, theta: np.ndarray, weights, n_threads: int = 1, gradient: bool = True):
        return self.data.loss_grad(np.ascontiguousarray(theta, dtype=float), list(weights), n_threads, gradient)

    def predict(self, theta: np.ndarray, n_threads: int = 1):
        """(energies, forces (concatenated), stress (3x3 per configuration, eV/Å^3))."""
        return self.data.predict(np.ascontiguousarray(theta, dtype=float), n_threads)

    def solve_linear(self, theta: np.ndarray, weights, n_threads: int = 1) -> tuple[np.ndarray, float]:
        """theta with the linear coefficients replaced by their least-squares optimum; and the loss there."""
        K, h, c0 = self.data.lls(np.ascontiguousarray(theta, dtype=float), list(weights), n_threads)
        nl = len(h)
        out = np.array(theta, dtype=float)
        out[:nl] = solve_normal(K, h)
        phi = out[:nl]
        return out, float(phi @ K @ phi - 2.0 * h @ phi + c0)


def solve_normal(K: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Minimiser of phi'K phi - 2 h'phi with a tiny ridge (K is singular when a species or basis function never
    occurs, or basis functions are linearly dependent): Jacobi-scaled Cholesky, falling back to lstsq."""
    import scipy.linalg

    d = np.sqrt(np.maximum(np.diag(K), 0.0))
    d[d == 0] = 1.0
    Ks = K / d[:, None] / d[None, :]
    Ks[np.diag_indices_from(Ks)] += LLS_RIDGE * max(1.0, float(np.max(np.diag(Ks))))
    try:
        x = scipy.linalg.solve(Ks, h / d, assume_a="pos")
    except (np.linalg.LinAlgError, ValueError):
        x = np.linalg.lstsq(Ks, h / d, rcond=None)[0]
    return x / d


def _lbfgs(fun, x0: np.ndarray, max_iter: int, on_iteration: Callable[[float], bool]) -> np.ndarray:
    """scipy's L-BFGS on ``fun`` (value, gradient) for at most ``max_iter`` iterations; ``on_iteration(loss)``
    returns True to stop. No gradient/ftol stopping of its own: the caller's convergence rule decides."""
    from scipy.optimize import minimize

    def cb(intermediate_result):
        if on_iteration(float(intermediate_result.fun)):
            raise StopIteration

    res = minimize(fun, x0, jac=True, method="L-BFGS-B", callback=cb,
                   options={"maxiter": int(max_iter), "maxcor": 20, "ftol": 0.0, "gtol": 0.0, "maxls": 40})
    return res.x


def fit(
    potential: MTPPotential,
    data: TrainingData,
    weights: Sequence[float] = (1.0, 0.01, 0.0),
    max_iter: int = 1000,
    tol: float = 1e-3,
    method: str = "varpro",
    lls_at: Sequence[int] = (50, 200),
    n_threads: int = 1,
    progress: bool | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Fit ``potential``'s coefficients in place (it must have starting coefficients: warm start or
    :meth:`MTPPotential.initialize`). ``max_iter=0``: only the least-squares solve of the linear coefficients.

    The best point seen is kept (an L-BFGS line search may end on a worse one). Stops when the loss has dropped by
    less than ``tol`` (relative) over the last ``WINDOW`` iterations, or after ``max_iter`` iterations."""
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ConfigError(f"training method must be one of {METHODS}, not {method!r}")
    if int(max_iter) < 0:
        raise ConfigError(f"max_iter must be >= 0, got {max_iter}")
    if not (tol >= 0):
        raise ConfigError(f"tol must be >= 0, got {tol}")
    w = [float(x) for x in weights]
    max_iter = int(max_iter)
    t0, c0 = time.perf_counter(), time.process_time()
    nl = potential.n_linear
    theta, loss0 = data.solve_linear(potential.theta, w, n_threads)
    history = [loss0]
    best = {"loss": loss0, "theta": theta.copy()}
    counts = {"evals": 0, "reason": "max_iter"}
    bar = tqdm(total=max_iter, desc=f"MTP fit ({method})", unit="it", leave=False,
               disable=(not progress) if progress is not None else None) if max_iter else None

    def evaluated(loss: float, full: np.ndarray) -> None:
        counts["evals"] += 1
        if loss < best["loss"]:
            best.update(loss=loss, theta=full.copy())

    def on_iteration(loss: float) -> bool:
        history.append(loss)
        it = len(history) - 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.5g}", refresh=False)
        if callback is not None:
            callback(it, loss)
        if it >= WINDOW:
            old = history[-WINDOW - 1]
            if old <= 0 or (old - loss) / old < tol:
                counts["reason"] = "converged"
                return True
        return it >= max_iter

    def done() -> bool:
        return counts["reason"] == "converged" or len(history) - 1 >= max_iter

    try:
        if max_iter and method == "varpro":
            # radial coefficients only; the linear ones are solved exactly at every evaluation
            current = {"theta": theta.copy()}

            def fun(radial):
                full = current["theta"].copy()
                full[nl:] = radial
                full, _ = data.solve_linear(full, w, n_threads)
                loss, grad, _ = data.loss_grad(full, w, n_threads)
                if not math.isfinite(loss):
                    return float("inf"), np.zeros_like(radial)
                current["theta"] = full
                evaluated(loss, full)
                return loss, grad[nl:]

            _lbfgs(fun, theta[nl:].copy(), max_iter, on_iteration)
        elif max_iter:
            # all coefficients; the linear ones re-solved at the iterations in lls_at (L-BFGS restarts there)
            def fun(full):
                loss, grad, _ = data.loss_grad(full, w, n_threads)
                if not math.isfinite(loss):
                    return float("inf"), np.zeros_like(full)
                evaluated(loss, full)
                return loss, grad

            schedule = sorted({int(k) for k in lls_at if 0 < int(k) < max_iter}) + [max_iter]
            x = theta
            for stop_at in schedule:
                if done():
                    break
                _lbfgs(fun, x, stop_at - (len(history) - 1), on_iteration)
                x, loss = data.solve_linear(best["theta"], w, n_threads)
                evaluated(loss, x)
    finally:
        if bar is not None:
            bar.close()
    theta = best["theta"]
    if max_iter:
        solved, loss = data.solve_linear(theta, w, n_threads)
        if loss <= best["loss"]:
            theta = solved
    if not np.all(np.isfinite(theta)):
        raise InputError("MTP training produced non-finite coefficients (is the training set degenerate?)")
    potential.theta = theta
    final, _, parts = data.loss_grad(theta, w, n_threads, gradient=False)
    reason = counts["reason"] if max_iter else "lls only"
    if reason == "max_iter" and len(history) - 1 < max_iter:
        reason = "no further progress"  # the line search could not improve the loss any more
    return TrainReport(method=method, iterations=len(history) - 1, evaluations=counts["evals"],
                       loss_start=float(history[0]), loss_final=float(final), reason=reason,
                       seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                       history=[float(x) for x in history], parts=dict(parts))
