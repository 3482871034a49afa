"""Every shipped recipe (alkit/recipes/) builds valid configurations for every preset, and the recipe pattern generalises:
the aluminium recipe runs a complete (tiny) campaign."""
from __future__ import annotations

import dataclasses

import pytest

from alkit.driver import ActiveLearningDriver
from alkit.errors import ConfigError
from alkit.recipe import RECIPES_DIR, build_config, load_recipe

RECIPES = sorted(p.stem for p in RECIPES_DIR.glob("*.py") if not p.stem.startswith("_"))


def test_there_are_two_recipes():
    assert {"ti_h", "al"} <= set(RECIPES)


_BUILT: dict = {}


def built(name: str, preset: str):
    """Build each (recipe, preset) once per test session: the paper presets hold hundreds of structures."""
    if (name, preset) not in _BUILT:
        _BUILT[name, preset] = build_config(name, preset, "direct")
    return _BUILT[name, preset]


@pytest.mark.parametrize("name", RECIPES)
def test_every_preset_builds_a_valid_config(name):
    mod = load_recipe(name)
    for preset in mod.PRESETS:
        cfg = built(name, preset)
        cfg.validate()
        assert cfg.scenarios
        scratch = dataclasses.replace(cfg, mode="scratch")
        scratch.validate()
        assert scratch.reselection == "maxvol" and not scratch.needs_sampler


def test_ti_h_paper_preset_is_the_papers_274_scenarios():
    cfg = built("ti_h", "paper")
    assert len(cfg.scenarios) == 274
    assert {s.temperature for s in cfg.scenarios} == {300.0, 1000.0, 3000.0}
    assert cfg.loss_weights == (1.0, 0.01, 0.0) and cfg.gamma_select == cfg.gamma_break == 3.0


def test_unknown_recipe_and_preset():
    with pytest.raises(ConfigError, match="not found"):
        build_config("no_such_recipe")
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("ti_h", "huge")


def test_broken_recipe_names_itself(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("PRESETS = {}\n")
    with pytest.raises(ConfigError, match="must define PRESETS"):
        load_recipe(bad)


@pytest.mark.slow
def test_aluminium_tiny_campaign_from_scratch(tmp_path):
    summary = ActiveLearningDriver(build_config("al", "tiny", "scratch"), tmp_path / "al").run()
    assert summary["finished"]
    assert summary["labelled"] >= 2
    assert summary["iterations_done"] >= 1
