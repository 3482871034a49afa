"""Post-AL validation (`alkit validate`): the pure MSD / diffusivity / Arrhenius functions on trajectories whose
answer is known, and the whole validation of a real tiny Ti-H campaign (CHGNet labeller MD test set, every
iteration's errors, LAMMPS diffusion with the final MTP, iteration 0's stability)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from test_report import assert_all_rendered, browser, open_page  # noqa: F401 (browser: the fixture)

from alkit.cli import main
from alkit.driver import ActiveLearningDriver, run_status
from alkit.errors import ConfigError, InputError
from alkit.recipe import build_config
from alkit.validate import (
    KB_EV,
    MDSystem,
    ValidationSpec,
    arrhenius_fit,
    diffusion_coefficient,
    mean_squared_displacement,
    unwrap_positions,
    validate_run,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# MSD, D and Ea on known trajectories
# ---------------------------------------------------------------------------------------------------------------
def test_msd_of_constant_velocity_drift_is_v2_t2():
    v = np.array([0.3, -0.1, 0.2])  # Å per frame
    x0 = np.random.default_rng(0).uniform(0, 5, (4, 3))
    t = np.arange(21)
    pos = x0[None] + t[:, None, None] * v[None, None]
    msd = mean_squared_displacement(pos, max_lag=20)
    np.testing.assert_allclose(msd, (v @ v) * t**2, rtol=1e-12, atol=1e-12)
    # the same drift of every atom is centre-of-mass motion: removed with the masses
    np.testing.assert_allclose(mean_squared_displacement(pos, masses=np.ones(4), max_lag=20), 0.0, atol=1e-20)


def _random_walk(n_frames: int, n_atoms: int, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, sigma, (n_frames - 1, n_atoms, 3))
    return np.concatenate([np.zeros((1, n_atoms, 3)), np.cumsum(steps, axis=0)]) + 2.0


def test_random_walk_gives_6_d_t_also_across_periodic_wrapping():
    sigma, dt_ps = 0.05, 0.01  # per-component step (Å) and time per frame (ps): D = sigma^2 / (2 dt)
    pos = _random_walk(1001, 100, sigma)
    d_true = sigma**2 / (2 * dt_ps)  # Å^2/ps
    msd = mean_squared_displacement(pos, max_lag=100)
    lags = np.arange(len(msd)) * dt_ps
    np.testing.assert_allclose(msd[1:], 6 * d_true * lags[1:], rtol=0.05)
    d, err = diffusion_coefficient(lags, msd)
    assert d == pytest.approx(d_true * 1e-4, rel=0.05)  # cm^2/s
    assert err is not None and 0 < err < 0.05 * d

    # wrapped into a small triclinic cell (atoms cross its faces many times): the same MSD once unwrapped
    cell = np.array([[2.0, 0.0, 0.0], [0.5, 2.2, 0.0], [0.3, 0.2, 2.5]])
    frac = np.linalg.solve(cell.T, pos.reshape(-1, 3).T).T
    wrapped = ((frac % 1.0) @ cell).reshape(pos.shape)
    assert np.ptp(pos[..., 0]) > 3 * 2.0 and np.abs(pos - wrapped).max() > 2.0  # really wrapped, many times
    np.testing.assert_allclose(unwrap_positions(wrapped, cell), pos, atol=1e-9)
    np.testing.assert_allclose(mean_squared_displacement(wrapped, cell=cell, max_lag=100), msd, rtol=1e-9)
    # only the selected atoms count
    sel = mean_squared_displacement(pos, select=np.arange(100) < 10, max_lag=5)
    np.testing.assert_allclose(sel, mean_squared_displacement(pos[:, :10], max_lag=5))


def test_diffusion_coefficient_fits_only_the_later_lags():
    t = np.linspace(0, 10, 101)
    msd = np.where(t < 2, 5 * t**2, 6 * 0.7 * t + 20 - 8.4)  # ballistic start, then slope 6 x 0.7 Å^2/ps
    d, _ = diffusion_coefficient(t, msd, fit_start=0.3)
    assert d == pytest.approx(0.7e-4, rel=1e-9)
    assert diffusion_coefficient(t[:2], msd[:2]) == (None, None)


def test_long_msd_curves_are_thinned_for_the_report_only():
    from alkit.validate import MSD_POINTS, _thin_curve

    rec = {"lag_ps": [0.01 * i for i in range(5001)], "msd_A2": [0.5 * i for i in range(5001)], "D_cm2_s": 1e-4}
    thin = _thin_curve(rec)
    assert len(thin["lag_ps"]) == len(thin["msd_A2"]) == MSD_POINTS
    assert thin["lag_ps"][0] == 0 and thin["lag_ps"][-1] == rec["lag_ps"][-1] and thin["D_cm2_s"] == 1e-4
    assert all(m == pytest.approx(50 * t) for t, m in zip(thin["lag_ps"], thin["msd_A2"]))  # pairs kept together
    assert len(rec["lag_ps"]) == 5001  # the cached record is not touched
    short = {"lag_ps": [0.0, 1.0], "msd_A2": [0.0, 2.0]}
    assert _thin_curve(short) is short


def test_arrhenius_fit_recovers_the_activation_energy():
    temps = np.array([600.0, 800.0, 1000.0, 1200.0, 1400.0])
    ea, d0 = 0.42, 2e-3
    exact = d0 * np.exp(-ea / (KB_EV * temps))
    fit = arrhenius_fit(temps, exact)
    assert fit["Ea"] == pytest.approx(ea, rel=1e-10) and fit["D0"] == pytest.approx(d0, rel=1e-8)
    assert fit["Ea_err"] == pytest.approx(0.0, abs=1e-8)
    noisy = exact * np.exp(np.random.default_rng(3).normal(0, 0.1, len(temps)))
    fit = arrhenius_fit(temps, noisy)
    assert 0 < fit["Ea_err"] < 0.1
    assert abs(fit["Ea"] - ea) < 4 * fit["Ea_err"]
    # unusable values are excluded (and named); two temperatures give Ea without an error; one gives nothing
    fit = arrhenius_fit([600, 800, 1000], [exact[0], None, -1.0])
    assert fit["Ea"] is None and fit["excluded"] == [800.0, 1000.0] and fit["n"] == 1
    fit = arrhenius_fit(temps[:2], exact[:2])
    assert fit["Ea"] == pytest.approx(ea) and fit["Ea_err"] is None


def test_spec_is_checked_before_any_md():
    cell = Atoms("Ti2H", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0.25]], cell=[3, 3, 3], pbc=True)
    ok = ValidationSpec(test_systems=[MDSystem("a", cell, (300.0,))], test_steps=10, test_snapshot_interval=2,
                        test_snapshots=3, diffusion_systems=[MDSystem("b", cell, (600.0, 900.0), (900.0,))])
    ok.validate()
    with pytest.raises(ConfigError, match="test_snapshots.*need more than test_steps"):
        ValidationSpec(test_systems=ok.test_systems, test_steps=4, test_snapshot_interval=2,
                       test_snapshots=3).validate()
    with pytest.raises(ConfigError, match=r"labeller_temperatures \[1200.0\] are not among"):
        ValidationSpec(diffusion_systems=[MDSystem("b", cell, (600.0,), (1200.0,))]).validate()
    with pytest.raises(ConfigError, match="has no H to diffuse"):
        ValidationSpec(diffusion_systems=[MDSystem("b", Atoms("Ti2", cell=[3, 3, 3], pbc=True,
                                                              positions=[[0, 0, 0], [1.5, 1.5, 1.5]]),
                                                   (600.0,))]).validate()
    with pytest.raises(ConfigError, match=r"diffusion_systems\['b'\]: diffusion_steps = 0 must be None or an integer"):
        ValidationSpec(diffusion_systems=[MDSystem("b", cell, (600.0,), diffusion_steps=0)]).validate()
    moved = ok.with_temperatures([700, 900])
    assert moved.diffusion_systems[0].temperatures == (700.0, 900.0)
    assert moved.diffusion_systems[0].labeller_temperatures == (900.0,)


def test_ti_h_workstation_validation_spec_is_the_papers_at_this_scale():
    from alkit.recipes.ti_h import validation

    spec = validation("workstation")
    spec.validate()
    diff = {s.name.split("-")[0]: s for s in spec.diffusion_systems}
    assert {p: s.atoms.get_chemical_formula() for p, s in diff.items()} == {
        "hcp": "H2Ti36", "bcc": "H16Ti16", "fcc": "H32Ti16"}
    # the dilute hcp cell runs 100 ps, the others the spec's 20 ps; CHGNet at three bcc temperatures (an E_a error)
    assert diff["hcp"].diffusion_steps * spec.timestep_fs / 1000 == 100.0 and spec.diffusion_steps == 40000
    assert diff["bcc"].diffusion_steps is None and diff["bcc"].labeller_temperatures == (800.0, 1000.0, 1200.0)
    assert sum(len(s.temperatures) for s in spec.test_systems) * spec.test_snapshots == 400


# ---------------------------------------------------------------------------------------------------------------
# the real tiny campaign
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny from-scratch Ti-H campaign with two iterations (serial executor, CHGNet labels)."""
    cfg = build_config("ti_h", "tiny", "scratch")
    cfg.max_iterations = 2
    run = tmp_path_factory.mktemp("validate") / "run"
    ActiveLearningDriver(cfg, run).run()
    assert (run / "iterations" / "iter_001" / "pot.mtp").is_file()
    return run


def _png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200 and float(np.std(img[..., :3])) > 0.01, path


def test_validate_tiny_campaign(tiny_run, browser, capsys, tmp_path):
    assert main(["validate", str(tiny_run)]) == 0
    printed = capsys.readouterr().out
    out = tiny_run / "validation"
    res = json.loads((out / "validation.json").read_text())
    assert "## Errors on the test set" in printed and str((out / "validation.html").resolve()) in printed

    # (a) test set: labeller MD of the recipe's cells, cached in the run directory, never trained on
    ts = res["test_set"]  # the recipe's tiny spec: 2 cells x 1 temperature x 3 snapshots
    assert ts["n_structures"] == 6 and ts["labeller"] == "chgnet"
    assert {t["system"] for t in ts["trajectories"]} == {"hcp-Ti8H2", "bcc-Ti8H2"}
    assert all(t["status"] == "completed" and t["n_structures"] == 3 for t in ts["trajectories"])
    from alkit.io import read_structures, structure_hash
    from alkit.store import RunStore

    test_set = read_structures(out / "test_set.extxyz")
    assert len(test_set) == 6 and all("forces" in a.calc.results for a in test_set)
    with RunStore(tiny_run, readonly=True) as st:
        trained = {structure_hash(a) for a in st.atoms(status="labelled")}
    assert not trained & {structure_hash(a) for a in test_set}
    errors = {r["iteration"]: r for r in ts["errors"]}
    assert sorted(errors) == [0, 1]
    for r in errors.values():
        for k in ("energy_rmse", "energy_mae", "force_rmse", "force_mae"):
            assert math.isfinite(r[k]) and r[k] > 0, (k, r)
        assert r["energy_mae"] <= r["energy_rmse"] and r["n_structures"] == 6 and r["n_train"] >= 1

    # (b) diffusion with the final MTP (LAMMPS pair_style mtp here) and one labeller run; the rest said as not run
    diff = res["diffusion"]
    assert diff["engine"] == "lammps" and diff["iteration"] == 1
    runs = {(r["system"], r["temperature"], r["source"]): r for r in diff["runs"]}
    assert set(runs) == {(s, t, "mtp") for s in ("hcp-Ti8H2", "bcc-Ti8H2") for t in (600.0, 900.0)} | {
        ("bcc-Ti8H2", 900.0, "labeller")}
    for r in runs.values():
        assert r["status"] == "completed" or r["status"].startswith("blowup"), r["status"]
        if r["status"] == "completed":
            assert r["D_cm2_s"] is not None and math.isfinite(r["D_cm2_s"]) and len(r["msd_A2"]) == len(r["lag_ps"])
            assert r["msd_A2"][0] == 0 and max(r["msd_A2"]) > 0
    # the recipe runs the hcp cell longer (its own MDSystem.diffusion_steps) than the spec's 200 steps
    assert {k: r["steps"] for k, r in runs.items() if k[2] == "mtp"} == {
        ("hcp-Ti8H2", 600.0, "mtp"): 300, ("hcp-Ti8H2", 900.0, "mtp"): 300,
        ("bcc-Ti8H2", 600.0, "mtp"): 200, ("bcc-Ti8H2", 900.0, "mtp"): 200}
    assert len(diff["not_run"]) == 3 and all("not affordable" in n["reason"] for n in diff["not_run"])
    assert set(diff["arrhenius"]) == {"hcp-Ti8H2", "bcc-Ti8H2"}
    assert diff["arrhenius"]["hcp-Ti8H2"]["references"]["experiment"] == 0.45

    # (c) iteration 0's stability per temperature, as the driver logged it
    st0 = res["iteration0_stability"]["by_temperature"]
    logged = run_status(tiny_run)["iterations"][0]["stable_by_temperature"]
    assert {k: v["fraction"] for k, v in st0.items()} == pytest.approx({k: float(v) for k, v in logged.items()})

    for png in res["figures"]:
        _png(out / png)
    assert {"test_errors.png", "parity.png", "stability0.png"} <= set(res["figures"])
    plots = open_page(browser, out / "validation.html")  # offline, no console errors, every figure drawn
    assert [p["id"] for p in plots] == [f"plot-{Path(f).stem}" for f in res["figures"]]
    assert_all_rendered(plots)
    assert "Labeller MD not run" in browser.find_element("tag name", "body").text
    md = (out / "validation.md").read_text()
    assert "| 0 |" in md and "| 1 |" in md and "not affordable here" in md

    # a rerun redoes no MD: every trajectory and diffusion run comes from the cache, with the same numbers
    again = validate_run(tiny_run, out_dir=tiny_run / "again")
    assert all(t["cached"] for t in again["test_set"]["trajectories"])
    assert all(r["cached"] for r in again["diffusion"]["runs"])
    assert [r["energy_rmse"] for r in again["test_set"]["errors"]] == [errors[0]["energy_rmse"],
                                                                       errors[1]["energy_rmse"]]
    assert (tiny_run / "again" / "validation.json").is_file()

    # another run of the same labeller and spec re-uses this labeller MD (one test set for a comparison); its own
    # potential's MD is run anew
    twin = tmp_path / "twin"
    shutil.copytree(tiny_run, twin, ignore=shutil.ignore_patterns("validation", "again", "lock"))
    third = validate_run(twin, cache_from=tiny_run)
    assert all(t["cached"] for t in third["test_set"]["trajectories"])
    assert {(r["source"], r["cached"]) for r in third["diffusion"]["runs"]} == {("mtp", False), ("labeller", True)}
    assert [r["energy_rmse"] for r in third["test_set"]["errors"]] == [errors[0]["energy_rmse"],
                                                                       errors[1]["energy_rmse"]]


def test_bad_input_is_one_line_before_any_work(tiny_run, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no config.json"):
        validate_run(empty)
    with pytest.raises(InputError, match="does not exist"):
        validate_run(tmp_path / "missing")
    with pytest.raises(InputError, match="--cache-from .* no validation/ folder"):
        validate_run(tiny_run, out_dir=tmp_path / "o", cache_from=empty)
    no_pot = tmp_path / "no_pot"
    no_pot.mkdir()
    shutil.copy(tiny_run / "config.json", no_pot / "config.json")
    with pytest.raises(InputError, match="no fitted potential"):
        validate_run(no_pot)
    assert not (no_pot / "validation").exists()
    # a recipe without validation(preset)
    other = tmp_path / "other"
    shutil.copytree(tiny_run / "iterations", other / "iterations")
    cfg = json.loads((tiny_run / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(cfg | {"recipe": "al"}))
    with pytest.raises(InputError, match="'al' defines no validation"):
        validate_run(other)
    # a corrupt potential
    (other / "iterations" / "iter_001" / "pot.mtp").write_text("garbage")
    (other / "config.json").write_text(json.dumps(cfg))
    assert main(["validate", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "iteration 1" in err
    assert not (other / "validation").exists()


def test_validation_as_a_driver_stage(tiny_run):
    """post_validation switched on for a finished campaign (a safe change): the re-run validates it as a stage,
    from the cached MD of the CLI run, logs a ``validated`` record, and a second re-run does not validate again."""
    from alkit.events import read_events

    assert (tiny_run / "validation" / "validation.json").is_file()  # the CLI test ran first (module order)
    cfg = build_config("ti_h", "tiny", "scratch")
    cfg.max_iterations = 2
    cfg.post_validation = True
    before = read_events(tiny_run, "labels")
    ActiveLearningDriver(cfg, tiny_run).run()
    done = read_events(tiny_run, "validated")
    assert len(done) == 1 and done[0]["path"] == str(tiny_run / "validation")
    assert any(e["stage"] == "validate" for e in read_events(tiny_run, "stage"))
    assert read_events(tiny_run, "labels") == before  # nothing relabelled
    changed = read_events(tiny_run, "config_changed")[-1]["changes"]
    assert [c[0] for c in changed] == ["post_validation"]
    ActiveLearningDriver(cfg, tiny_run).run()
    assert len(read_events(tiny_run, "validated")) == 1
