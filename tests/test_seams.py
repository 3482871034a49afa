"""The driver talks only to the protocols of :mod:`alkit.backend`: a whole campaign runs with a second potential
backend and selector defined here, and no MTP code at all (every ``alkit.mtp`` module is made unimportable).

The worked example of README's "How to add a potential type / selector / labeller":

- :class:`ToyBackend`: a Morse pair potential (ASE's ``MorsePotential``) whose equilibrium distance and well depth
  are fitted to the labels' energies, with an uncertainty on a simple descriptor (each atom's nearest-neighbour
  distance against the range seen in training: 1 inside, growing by 1 per 0.05 Å outside);
- :class:`HighestGammaSelector`: the candidates with the highest grade first;
- the labeller: ASE's EMT by import path (no registration needed for an ASE calculator).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from alkit.backend import ExploreOutcome, FitOutcome, register_backend, register_selector
from alkit.campaign import ALConfig
from alkit.errors import ConfigError
from alkit.scenarios import Scenario

RANGE_FILE = "toy.json"


def _nn_distances(atoms, cutoff: float = 4.0) -> np.ndarray:
    i, d = neighbor_list("id", atoms, cutoff)
    out = np.full(len(atoms), cutoff)
    np.minimum.at(out, i, d)
    return out


@dataclass
class ToyBackend:
    """A two-parameter Morse potential with a nearest-neighbour-distance uncertainty (see the module docstring)."""

    rho0: float = 6.0
    name: str = "toy"

    @classmethod
    def from_config(cls, config) -> "ToyBackend":
        kw = dict(config.potential_kwargs)
        rho0 = kw.pop("rho0", 6.0)
        if kw:
            raise ConfigError(f"ALConfig.potential_kwargs: unknown option(s) {sorted(kw)} for the toy backend")
        if not (isinstance(rho0, (int, float)) and rho0 > 0):
            raise ConfigError(f"ALConfig.potential_kwargs['rho0'] = {rho0!r}: must be > 0")
        return cls(rho0=float(rho0))

    def check(self) -> None:
        pass

    def is_fitted(self, model_dir: Path) -> bool:
        return (Path(model_dir) / RANGE_FILE).exists()

    def fit(self, train, valid, model_dir: Path, previous, seed: int) -> FitOutcome:
        from ase.calculators.morse import MorsePotential

        e = np.array([a.get_potential_energy() / len(a) for a in train])
        best = None
        for r0 in np.linspace(2.3, 2.8, 51):  # grid over r0, epsilon and an offset by least squares
            per = []
            for a in train:
                m = a.copy()
                m.calc = MorsePotential(epsilon=1.0, r0=r0, rho0=self.rho0)
                per.append(m.get_potential_energy() / len(a))
            A = np.column_stack([per, np.ones(len(per))])
            coef, *_ = np.linalg.lstsq(A, e, rcond=None)
            err = float(np.sqrt(np.mean((A @ coef - e) ** 2)))
            if coef[0] > 0 and (best is None or err < best[0]):
                best = (err, float(r0), float(coef[0]), float(coef[1]))
        err, r0, eps, offset = best
        nn = np.concatenate([_nn_distances(a) for a in train])
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        (Path(model_dir) / RANGE_FILE).write_text(json.dumps(
            {"r0": r0, "epsilon": eps, "offset": offset, "nn_min": float(nn.min()), "nn_max": float(nn.max())}))
        return FitOutcome(train={"energy_rmse": err * 1000.0}, seconds=0.0)

    def _params(self, model_dir: Path) -> dict:
        return json.loads((Path(model_dir) / RANGE_FILE).read_text())

    def calculator(self, model_dir: Path):
        from ase.calculators.morse import MorsePotential

        p = self._params(model_dir)
        return MorsePotential(epsilon=p["epsilon"], r0=p["r0"], rho0=self.rho0)

    def grade(self, model_dir: Path, atoms) -> tuple[float, np.ndarray]:
        p = self._params(model_dir)
        d = _nn_distances(atoms)
        out = np.maximum(p["nn_min"] - d, d - p["nn_max"]).clip(min=0.0)
        g = 1.0 + out / 0.05
        return float(g.max()), g

    def explore(self, model_dir: Path, scenario, settings) -> ExploreOutcome:
        from alkit.explore import explore_with_ase

        return explore_with_ase(scenario, self.calculator(model_dir), lambda a: self.grade(model_dir, a), settings,
                                min_distance=1.5)


class HighestGammaSelector:
    """The most extrapolative candidates first (a selector that needs neither an encoder nor an active set)."""

    name = "highest-gamma"

    def check(self, backend, has_sampler: bool) -> None:
        pass

    def select(self, candidates, budget: int, context) -> list[int]:
        g = np.array([float(a.info.get("gamma", 0.0)) for a in candidates])
        return [int(i) for i in np.argsort(-g, kind="stable")[:budget]]


@pytest.fixture
def toy_registered():
    register_backend("toy", ToyBackend)
    register_selector("highest-gamma", HighestGammaSelector)
    yield


def _cu_config(**kw) -> ALConfig:
    base = bulk("Cu", "fcc", a=3.61, cubic=True)
    scenarios = [
        Scenario(id="cu-300", atoms=base.repeat((2, 1, 1)), temperature=300.0, ensemble="nvt", steps=60),
        Scenario(id="cu-1200", atoms=base.repeat((2, 1, 1)), temperature=1200.0, ensemble="nvt", steps=60),
    ]
    cfg = dict(species=["Cu"], scenarios=scenarios, mode="scratch", name="toy", potential="toy",
               labeller="ase.calculators.emt:EMT", reselect="highest-gamma", al_budget=4, max_iterations=6,
               max_collect_per_scenario=4, executor="serial", n_workers=1, gamma_select=2.0, gamma_break=3.0)
    cfg.update(kw)
    return ALConfig(**cfg)


def test_campaign_with_a_second_backend_and_no_mtp_code(toy_registered, tmp_path, monkeypatch):
    from alkit.driver import ActiveLearningDriver
    from alkit.events import read_events

    for name in [m for m in sys.modules if m == "alkit.mtp" or m.startswith("alkit.mtp.")] + ["alkit.mtp"]:
        monkeypatch.setitem(sys.modules, name, None)  # any import of MTP code now raises ImportError
    with pytest.raises(ImportError):
        import alkit.mtp.engine  # noqa: F401

    summary = ActiveLearningDriver(_cu_config(), tmp_path / "run").run()
    assert summary["finished"]
    fits = read_events(tmp_path / "run", "fit")
    explores = read_events(tmp_path / "run", "explore")
    assert len(fits) == len(explores) == summary["iterations_done"] >= 2
    # iteration 0 (trained on the two starting cells only) extrapolates at 1200 K; later labels come from AL
    first = {s["id"]: s for s in explores[0]["scenarios"]}
    assert not first["cu-1200"]["stable"] and first["cu-1200"]["stop_reason"] == "gamma"
    assert first["cu-1200"]["max_gamma"] > 3.0
    assert summary["labelled"] > 2
    # measured: all stable at iteration 2 with 9 labels (both scenarios start from the same cell: 1 seed label)
    assert summary["converged"] and summary["iterations"][-1]["n_stable"] == 2
    assert (tmp_path / "run" / "iterations" / "iter_000" / RANGE_FILE).exists()
    assert not list((tmp_path / "run").rglob("*.mtp")) and not list((tmp_path / "run").rglob("*.als"))
    assert all(s["stable"] for s in explores[-1]["scenarios"])
    # every AL label was chosen by the toy selector
    from alkit.store import RunStore

    with RunStore(tmp_path / "run" / "store.sqlite") as st:
        reasons = {r for (r,) in st._query("SELECT DISTINCT selected_reason FROM structures WHERE status='labelled'")}
    assert reasons == {"scenario-start", "al-highest-gamma"}


def test_backend_settings_are_checked_before_any_work(toy_registered, tmp_path):
    from alkit.driver import ActiveLearningDriver

    with pytest.raises(ConfigError, match=r"potential_kwargs\['rho0'\] = -1"):
        ActiveLearningDriver(_cu_config(potential_kwargs={"rho0": -1}), tmp_path / "a").run()
    with pytest.raises(ConfigError, match="ALConfig.potential = 'nope'"):
        ActiveLearningDriver(_cu_config(potential="nope"), tmp_path / "b").run()
    # MaxVol needs the MTP's active set
    with pytest.raises(ConfigError, match="reselect = 'maxvol' needs the MTP backend"):
        ActiveLearningDriver(_cu_config(reselect="maxvol"), tmp_path / "c").run()
    assert not (tmp_path / "a" / "store.sqlite").exists()


def test_event_schema_is_enforced_by_the_emitter_and_used_by_readers(tmp_path):
    """One schema (alkit.events.SCHEMA): emit refuses unknown events and wrong fields before writing; parse gives
    typed records, with defaults for fields an older log lacks."""
    from alkit.events import SCHEMA, EventLog, IterationDone, parse, read_events

    log = EventLog(tmp_path)
    with pytest.raises(ValueError, match="unknown event 'iteration_finished'"):
        log.emit("iteration_finished", iteration=0)
    with pytest.raises(ValueError, match=r"missing fields \['n_scenarios'"):
        log.emit("iteration_done", iteration=0, n_stable=1, stable_by_temperature={}, labels_cumulative=3)
    with pytest.raises(ValueError, match=r"unexpected fields \['n_stabel'\]"):
        log.emit("run_finished", converged=True, iterations=1, reason="x", n_stabel=3)
    assert not (tmp_path / "events.jsonl").exists()
    log.emit("iteration_done", iteration=0, n_stable=1, n_scenarios=2, stable_by_temperature={"300": 0.5},
             labels_cumulative=3)
    rec = parse(read_events(tmp_path)[0])
    assert isinstance(rec, IterationDone) and rec.n_scenarios == 2 and rec.max_gamma is None and rec.wall == {}
    assert parse({"event": "something_else"}) is None
    assert set(SCHEMA) >= {"run_started", "fit", "explore", "iteration_done", "run_finished", "run_reopened"}
