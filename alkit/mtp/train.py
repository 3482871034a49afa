"""alkit's MTP trainer, on the compiled core's reverse-mode loss gradient.

The loss is motep's/MLIP-2's (energy per atom, forces per atom, stress times volume per atom, averaged over
configurations; weights ``(energy, forces, stress)``, default 1 / 0.01 / 0):

    L = 1/Nc sum_c [ wE ((E - E0)/N)^2 + wF/N |F - F0|^2 + wS (V/N)^2 |S - S0|^2 ].

Optimiser (``method="bfgs"``, MLIP-2's scheme): the linear coefficients (moment and species) are solved exactly
by regularised least squares for the current radial coefficients, then L-BFGS (scipy) runs over *all*
coefficients, with the linear ones re-solved at a few fixed iterations (``lls_at``) and at the end. It stops as
MLIP-2 does: when the loss has dropped by less than ``tol`` (relative) over the last ``window`` (50) iterations, or
at ``max_iter`` iterations.

``method="varpro"`` (variable projection) instead optimises only the radial coefficients, with the linear ones
solved exactly at every evaluation (the loss is quadratic in them, and by the envelope theorem the gradient
w.r.t. the radial coefficients at the solved linear ones is the partial gradient). Each evaluation costs one
least-squares assembly more; see bench/bench_mtp_engine.py for which converges faster in CPU time.
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

METHODS = ("bfgs", "varpro")
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


class _Stop(Exception):
    pass


def fit(
    potential: MTPPotential,
    data: TrainingData,
    weights: Sequence[float] = (1.0, 0.01, 0.0),
    max_iter: int = 1000,
    tol: float = 1e-3,
    method: str = "bfgs",
    lls_at: Sequence[int] = (50, 200),
    n_threads: int = 1,
    progress: bool | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Fit ``potential``'s coefficients in place (it must have starting coefficients: warm start or
    :meth:`MTPPotential.initialize`). ``max_iter=0``: only the least-squares solve of the linear coefficients."""
    from scipy.optimize import minimize
    from tqdm.auto import tqdm

    if method not in METHODS:
        raise ConfigError(f"training method must be one of {METHODS}, not {method!r}")
    if int(max_iter) < 0:
        raise ConfigError(f"max_iter must be >= 0, got {max_iter}")
    if not (tol >= 0):
        raise ConfigError(f"tol must be >= 0, got {tol}")
    w = [float(x) for x in weights]
    t0, c0 = time.perf_counter(), time.process_time()
    theta = potential.theta
    nl = potential.n_linear
    theta, loss0 = data.solve_linear(theta, w, n_threads)
    history = [loss0]
    state = {"evals": 0, "it": 0, "best": (loss0, theta.copy()), "reason": "max_iter"}
    bar = tqdm(total=int(max_iter), desc=f"MTP fit ({method})", unit="it", leave=False,
               disable=(not progress) if progress is not None else None) if max_iter else None

    def record(loss: float, x: np.ndarray) -> None:
        if loss < state["best"][0]:
            state["best"] = (loss, x.copy())

    def converged() -> bool:
        it = len(history) - 1
        if it < WINDOW:
            return False
        old, new = history[-WINDOW - 1], history[-1]
        return old <= 0 or (old - new) / old < tol

    try:
        if method == "bfgs" and max_iter:
            schedule = sorted({int(k) for k in lls_at if 0 < int(k) < max_iter})
            segments = [b - a for a, b in zip([0] + schedule, schedule + [int(max_iter)])]
            x = theta
            for seg_no, seg in enumerate(segments):
                def fun(v):
                    state["evals"] += 1
                    loss, grad, _ = data.loss_grad(v, w, n_threads)
                    if not math.isfinite(loss):
                        return float("inf"), np.zeros_like(v)
                    record(loss, v)
                    return loss, grad

                def cb(intermediate_result):
                    v = intermediate_result.x
                    loss = float(intermediate_result.fun)
                    history.append(loss)
                    state["it"] += 1
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.5g}", refresh=False)
                    if callback is not None:
                        callback(state["it"], loss)
                    if converged():
                        state["reason"] = "converged"
                        raise StopIteration
                res = minimize(fun, x, jac=True, method="L-BFGS-B", callback=cb,
                               options={"maxiter": seg, "maxcor": 20, "ftol": 0.0, "gtol": 0.0, "maxls": 40})
                x = state["best"][1]
                if state["reason"] == "converged" or state["it"] >= max_iter:
                    break
                if res.status not in (0, 1, 99) and "ABNORMAL" in str(res.message):
                    # the line search failed: restart from the best point after a linear re-solve
                    log.debug("L-BFGS: %s", res.message)
                x, loss = data.solve_linear(x, w, n_threads)
                record(loss, x)
            theta = state["best"][1]
        elif method == "varpro" and max_iter:
            rad0 = theta[nl:].copy()
            lin = {"theta": theta.copy()}

            def fun(r):
                state["evals"] += 1
                full = lin["theta"].copy()
                full[nl:] = r
                full, _ = data.solve_linear(full, w, n_threads)
                loss, grad, _ = data.loss_grad(full, w, n_threads)
                if not math.isfinite(loss):
                    return float("inf"), np.zeros_like(r)
                lin["theta"] = full
                record(loss, full)
                return loss, grad[nl:]

            def cb(intermediate_result):
                loss = float(intermediate_result.fun)
                history.append(loss)
                state["it"] += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.5g}", refresh=False)
                if callback is not None:
                    callback(state["it"], loss)
                if converged():
                    state["reason"] = "converged"
                    raise StopIteration
            minimize(fun, rad0, jac=True, method="L-BFGS-B", callback=cb,
                     options={"maxiter": int(max_iter), "maxcor": 20, "ftol": 0.0, "gtol": 0.0, "maxls": 40})
            theta = state["best"][1]
    finally:
        if bar is not None:
            bar.close()
    if max_iter:
        theta, loss = data.solve_linear(theta, w, n_threads)
        if loss > state["best"][0]:  # cannot happen for exact arithmetic; guard against a bad solve
            theta, loss = state["best"][1], state["best"][0]
    else:
        loss = loss0
    if not np.all(np.isfinite(theta)):
        raise InputError("MTP training produced non-finite coefficients (is the training set degenerate?)")
    potential.theta = theta
    final, _, parts = data.loss_grad(theta, w, n_threads, gradient=False)
    if state["reason"] == "max_iter" and state["it"] < max_iter:
        state["reason"] = "no further progress"
    return TrainReport(method=method, iterations=state["it"], evaluations=state["evals"], loss_start=float(history[0]),
                       loss_final=float(final), reason=state["reason"] if max_iter else "lls only",
                       seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0,
                       history=[float(x) for x in history], parts=dict(parts))
